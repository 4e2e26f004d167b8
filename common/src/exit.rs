//! Process exit codes, shared by every fleetgate binary (the reference harness's contract plus
//! the fleet's own).

/// Gates passed, or no `--check`.
pub const OK: i32 = 0;
/// Internal error (an I/O failure, an unwritable artifact root or output).
pub const ERROR: i32 = 1;
/// Command-line usage error.
pub const USAGE: i32 = 2;
/// A gate failed and `--check` was given.
pub const GATE_FAILED: i32 = 4;
/// Invalid input: a budget, baseline, tolerance or config file is unusable (detected before
/// any job runs).
pub const INVALID_INPUT: i32 = 5;
/// The fleet's verdict is inconclusive (an agent lost, timed out, or a required runtime
/// unavailable).
pub const INCONCLUSIVE: i32 = 6;
/// The coordinator could not be reached.
pub const COORDINATOR_UNREACHABLE: i32 = 7;
/// Interrupted (Ctrl+C).
pub const INTERRUPTED: i32 = 130;
