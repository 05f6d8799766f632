//! Compiles `proto/chat.proto` with protox (pure Rust, no `protoc` to install),
//! writes the descriptor set the gateway and server reflection read, and
//! generates the tonic client and server; and lists the web client's files
//! (`web/`) for the gateway to embed, so a new module needs no Rust edit.

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
    embed_web(&out)
}

/// Writes `web_files.rs`: `&[(url path, bytes)]`, one entry per file of
/// `web/` (flat: the client is a handful of ES modules, no folders), sorted
/// so the build is reproducible.
fn embed_web(out: &std::path::Path) -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=web");
    let dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?).join("web");
    let mut files: Vec<String> = Vec::new();
    for entry in fs::read_dir(&dir)? {
        let entry = entry?;
        let name = entry
            .file_name()
            .into_string()
            .map_err(|n| format!("web/{n:?}: not UTF-8"))?;
        // Editor droppings and hidden files are not part of the client.
        if entry.file_type()?.is_file() && !name.starts_with('.') && !name.ends_with('~') {
            files.push(name);
        }
    }
    files.sort();
    let mut code = String::from("&[\n");
    for name in &files {
        let path = dir.join(name);
        code.push_str(&format!(
            "    (\"/{name}\", include_bytes!({:?}).as_slice()),\n",
            path.display().to_string()
        ));
    }
    code.push_str("]\n");
    fs::write(out.join("web_files.rs"), code)?;
    Ok(())
}
