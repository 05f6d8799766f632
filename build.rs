//! Compiles `proto/chat.proto` with protox (pure Rust, no `protoc` to install),
//! writes the descriptor set the gateway and server reflection read, and
//! generates the tonic client and server.

use std::{env, fs, path::PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let fds = protox::Compiler::new(["proto"])?
        .include_imports(true)
        .include_source_info(true)
        .open_files(["chat.proto"])?
        .file_descriptor_set();
    let out = PathBuf::from(env::var("OUT_DIR")?);
    fs::write(
        out.join("chat_descriptor.bin"),
        prost::Message::encode_to_vec(&fds),
    )?;
    tonic_prost_build::configure()
        .codec_path("crate::proto::LeanCodec")
        .compile_fds(fds)?;
    Ok(())
}
