//! Records the commit the binary is built from (see common/build_identity.rs).

#![allow(
    clippy::print_stdout,
    reason = "a build script talks to Cargo on stdout"
)]

include!("../common/build_identity.rs");

fn main() {
    emit_build_identity(&["proto/proto", "common/src", "agent/src"]);
}
