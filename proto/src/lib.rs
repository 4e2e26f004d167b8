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

/// The gRPC codec of every `fleetgate.v1` call: prost's, with a 1 KiB first buffer per call
/// direction instead of tonic's 8 KiB. A coordinator holds one agent session per connected
/// agent, each with an encode and a decode buffer; most messages are a few hundred bytes, and
/// a buffer grows to fit a larger one (see the load figures in `docs/benchmarks.md`).
#[derive(Debug, Clone, Copy)]
pub struct Codec<T, U>(std::marker::PhantomData<(T, U)>);

impl<T, U> Default for Codec<T, U> {
    fn default() -> Self {
        Codec(std::marker::PhantomData)
    }
}

/// First buffer of a call direction; the yield threshold stays tonic's default.
fn codec_buffers() -> tonic::codec::BufferSettings {
    tonic::codec::BufferSettings::new(1024, 32 * 1024)
}

impl<T, U> tonic::codec::Codec for Codec<T, U>
where
    T: prost::Message + Send + 'static,
    U: prost::Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = <tonic_prost::ProstCodec<T, U> as tonic::codec::Codec>::Encoder;
    type Decoder = <tonic_prost::ProstCodec<T, U> as tonic::codec::Codec>::Decoder;

    fn encoder(&mut self) -> Self::Encoder {
        tonic_prost::ProstCodec::<T, U>::raw_encoder(codec_buffers())
    }

    fn decoder(&mut self) -> Self::Decoder {
        tonic_prost::ProstCodec::<T, U>::raw_decoder(codec_buffers())
    }
}

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
