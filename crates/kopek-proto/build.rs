//! Compiles the .proto files with protox (pure Rust, no protoc) and keeps the encoded file
//! descriptor set for gRPC reflection.

use prost::Message;
use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    let files = ["kopek/v1/ledger.proto", "contracts/transaction.proto", "contracts/payment.proto"];
    for file in &files {
        println!("cargo:rerun-if-changed={}", root.join(file).display());
    }
    let descriptors = protox::compile(files, [&root])?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out_dir.join("kopek_descriptor.bin"), descriptors.encode_to_vec())?;
    tonic_prost_build::configure()
        // Undecodable messages are INVALID_ARGUMENT, not prost's INTERNAL (src/codec.rs).
        .codec_path("crate::codec::Codec")
        .build_client(true)
        .build_server(true)
        .compile_fds(descriptors)?;
    Ok(())
}
