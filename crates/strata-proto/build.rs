//! Compiles `proto/strata/v1/*.proto` with `protox` (a pure-Rust protobuf
//! compiler: no system `protoc`) and generates prost messages and tonic
//! clients and servers into `OUT_DIR`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let files = [
        "strata/v1/replication.proto",
        "strata/v1/kv.proto",
        "strata/v1/backup.proto",
        "strata/v1/moves.proto",
    ];
    for file in files {
        println!("cargo:rerun-if-changed={}", root.join(file).display());
    }
    let descriptors = protox::compile(files, [&root])?;
    // The encoded descriptors, for gRPC server reflection.
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out.join("strata_descriptor.bin"),
        prost::Message::encode_to_vec(&descriptors),
    )?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(descriptors)?;
    Ok(())
}
