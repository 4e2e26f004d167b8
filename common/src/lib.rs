//! What the fleetgate agent and coordinator share: the run configuration and tuning knobs,
//! host facts and hardware classes, agent, run and job ids, a job's spec and updates, the
//! agent session's and run stream's messages, the v0.4 report model with its metrics, failure
//! diagnostics and the fleet report's verdict, the gate assets and gates, the documented exit
//! codes, shutdown signals, the process-wide tracing set-up, and atomic file writes.

pub mod atomic_file;
pub mod auth;
pub mod config;
pub mod convert;
pub mod exit;
pub mod gate;
pub mod host;
pub mod ids;
pub mod input;
pub mod job;
pub mod knobs;
pub mod messages;
pub mod report;
pub mod run;
pub mod runtime;
pub mod shutdown;
pub mod stats;
pub mod telemetry;
pub mod tls;
