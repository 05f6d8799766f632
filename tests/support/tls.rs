//! The gateway's listener over TLS in tests: a test CA (`pki::Ca`), the
//! certificate it issued for `localhost` and `127.0.0.1` written to files
//! (as `--tls-cert`/`--tls-key` take them), and clients trusting it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use super::pki::Ca;

/// A test CA and, written to files, a server certificate it issued.
pub struct TestCa {
    ca: Ca,
    pub cert: PathBuf,
    pub key: PathBuf,
    _dir: tempfile::TempDir,
}

impl TestCa {
    pub fn new() -> TestCa {
        let ca = Ca::new("wsgate test CA");
        let dir = tempfile::tempdir().expect("temp dir");
        let (cert, key) = ca.server().write(dir.path(), "server");
        TestCa {
            ca,
            cert,
            key,
            _dir: dir,
        }
    }

    /// The gateway's TLS settings from these files.
    pub fn server_config(&self) -> Arc<rustls::ServerConfig> {
        wsgate::proxy::tls::server_config(&self.cert, &self.key).expect("TLS config")
    }

    /// A TLS connection to `addr` as `localhost`, trusting this CA.
    pub async fn connect(
        &self,
        addr: std::net::SocketAddr,
    ) -> std::io::Result<TlsStream<TcpStream>> {
        let tcp = TcpStream::connect(addr).await?;
        let name = ServerName::try_from("localhost").expect("name");
        self.ca.https_client().connect(name, tcp).await
    }
}

/// Another file in the directory of `path`.
pub fn sibling(path: &Path, name: &str) -> PathBuf {
    path.with_file_name(name)
}
