//! What the fleetgate agent and coordinator share: the documented exit codes and the
//! process-wide tracing set-up. Report model and gates join here as the harness grows.

pub mod exit;
pub mod telemetry;
