//! Compiles `proto/fleetgate/v1/*.proto` with protox (pure Rust, no `protoc`).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let fds = protox::compile(
        [
            "fleetgate/v1/types.proto",
            "fleetgate/v1/agent.proto",
            "fleetgate/v1/run.proto",
        ],
        ["proto"],
    )?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .codec_path("crate::Codec")
        .compile_fds(fds)?;
    Ok(())
}
