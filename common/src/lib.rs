//! What the fleetgate agent and coordinator share: the run configuration and tuning knobs,
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
pub mod input;
pub mod job;
pub mod knobs;
pub mod report;
pub mod run;
pub mod runtime;
pub mod shutdown;
pub mod stats;
pub mod telemetry;
pub mod tls;
