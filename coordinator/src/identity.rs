//! Which fleetgate this is: its name, version and the commit it was built from (set by
//! `build.rs`; see common/build_identity.rs), for `--version` and the report's `generator`.

use fleetgate_common::report::Generator;

/// The program's name.
pub const NAME: &str = "fleetgate";

/// The crate's version.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The git commit the binary was built from: 12 hex digits with `-dirty` when the tree had
/// changes, else the `FLEETGATE_BUILD_COMMIT` it was built with, else `unknown`.
pub const COMMIT: &str = env!("FLEETGATE_COMMIT");

/// What `fleetgate --version` prints after the name: the version and the commit.
pub const VERSION_LINE: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("FLEETGATE_COMMIT"),
    ")"
);

/// This fleetgate, as a report records it.
pub fn generator() -> Generator {
    Generator {
        name: NAME.to_owned(),
        version: VERSION.to_owned(),
        commit: COMMIT.to_owned(),
    }
}
