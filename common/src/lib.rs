//! What the fleetgate agent and coordinator share: the run configuration and tuning knobs,
//! agent, run and job ids, the agent session's and run stream's messages,
//! the v0.4 report model with its metrics and failure diagnostics, the gate assets and gates,
//! the documented exit codes, shutdown signals, the process-wide tracing set-up, and atomic
//! file writes.

pub mod atomic_file;
pub mod auth;
pub mod config;
pub mod convert;
pub mod exit;
pub mod fleet;
pub mod gate;
pub mod ids;
pub mod input;
pub mod messages;
pub mod report;
pub mod shutdown;
pub mod stats;
pub mod telemetry;
pub mod tls;
