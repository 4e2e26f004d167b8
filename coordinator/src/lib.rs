//! The fleetgate coordinator and the `fleetgate` CLI that CI calls.
//!
//! [`harness`] validates a run, runs its jobs and builds the gated v0.4 report; [`output`]
//! renders the console summary, Markdown and JUnit files. Jobs run in this process today; the
//! gRPC coordinator and its agents put the network between [`harness::plan`] and
//! [`harness::build_report`].

pub mod harness;
pub mod output;
