//! TLS on the gateway's listener: the page (`https://`) and the socket
//! (`wss://`) on the same port, with rustls (ring).

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context as _, bail};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// The server side of TLS, from a PEM certificate chain (the server's
/// certificate first) and its PEM private key (PKCS#8, PKCS#1 or SEC1).
/// Fails with a message naming the file for one that is missing, holds no
/// certificate or key, or whose key is not the certificate's.
pub fn server_config(cert: &Path, key: &Path) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let chain = read(cert, "--tls-cert")?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&chain)
        .collect::<Result<_, _>>()
        .with_context(|| format!("--tls-cert {}: not a PEM certificate chain", cert.display()))?;
    if chain.is_empty() {
        bail!(
            "--tls-cert {}: no certificate in it (expected PEM \"BEGIN CERTIFICATE\" blocks)",
            cert.display()
        );
    }
    let key_pem = read(key, "--tls-key")?;
    let key_der = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
        anyhow::anyhow!(
            "--tls-key {}: no PEM private key in it ({e})",
            key.display()
        )
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS: no protocol version")?
        .with_no_client_auth()
        .with_single_cert(chain, key_der)
        .with_context(|| {
            format!(
                "--tls-key {} does not go with --tls-cert {} (or is not a usable key)",
                key.display(),
                cert.display()
            )
        })?;
    // WebSocket upgrades are HTTP/1.1 (the listener speaks nothing else).
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

fn read(path: &Path, flag: &str) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("{flag}: cannot read {}", path.display()))
}
