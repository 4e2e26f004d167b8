//! The fleetgate coordinator and the `fleetgate` CLI that CI calls.
//!
//! Today the CLI runs the soak on this host in-process; the gRPC coordinator, its agents and
//! the gated fleet report are built on top of the same agent runtimes.

pub mod local_run;
