//! The fleetgate wire protocol, package `fleetgate.v1`: the agent's bidirectional stream and
//! the run API used by the CLI. Generated code and the protocol version only; conversions into
//! domain types live with the crates that use them. Evolution rules: `docs/protocol.md`.

/// The protocol version this build speaks (`Hello.protocol_version`). Version 2 sends a job's
/// and a run's workload and knobs as typed messages instead of version 1's loose fields and
/// JSON text; a coordinator refuses an agent of another version.
pub const PROTOCOL_VERSION: u32 = 2;

/// Largest message a coordinator sends (a page of agents, a report chunk, an agent's job) and
/// the most its clients decode: one number for both sides, so whatever is sent is read. A
/// report of any size travels as chunks of at most [`REPORT_CHUNK_BYTES`].
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// Most bytes of report JSON in one `ReportChunk`.
pub const REPORT_CHUNK_BYTES: usize = 1024 * 1024;

/// Protocol package `fleetgate.v1`.
#[allow(
    missing_docs,
    unreachable_pub,
    missing_debug_implementations,
    clippy::all
)]
pub mod v1 {
    tonic::include_proto!("fleetgate.v1");
}
