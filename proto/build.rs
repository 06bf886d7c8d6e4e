//! Generates the Rust types and tonic services from `proto/` with protox
//! (pure Rust), so no `protoc` binary is needed on a fresh machine.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = ["proto/replicator/v1/replicator.proto"];
    let descriptors = protox::compile(files, ["proto"])?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(descriptors)?;
    for file in files {
        println!("cargo:rerun-if-changed={file}");
    }
    Ok(())
}
