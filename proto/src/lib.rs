//! The fleetgate wire protocol, package `fleetgate.v1`: the agent's bidirectional stream and
//! the run API used by the CLI. Generated code and the protocol version only; conversions into
//! domain types live with the crates that use them. Evolution rules: `docs/protocol.md`.

/// The protocol version the agent and the coordinator speak (an agent's `Hello` carries it).
pub const PROTOCOL_VERSION: u32 = 1;

/// Protocol version 1.
#[allow(
    missing_docs,
    unreachable_pub,
    missing_debug_implementations,
    clippy::all
)]
pub mod v1 {
    tonic::include_proto!("fleetgate.v1");
}
