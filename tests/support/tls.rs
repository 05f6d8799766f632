//! A certificate authority made at test time (rcgen), its server
//! certificate for `localhost`, and TLS clients trusting it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

/// A test CA and, written to files, a certificate it issued for
/// `localhost` and `127.0.0.1` with its key.
pub struct TestCa {
    ca: CertificateDer<'static>,
    pub cert: PathBuf,
    pub key: PathBuf,
    _dir: tempfile::TempDir,
}

impl TestCa {
    pub fn new() -> TestCa {
        let ca_key = rcgen::KeyPair::generate().expect("CA key");
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA");
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "wsgate test CA");
        let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).expect("CA cert");
        let key = rcgen::KeyPair::generate().expect("server key");
        let params =
            rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
                .expect("server params");
        let cert = params.signed_by(&key, &ca).expect("server cert");
        let dir = tempfile::tempdir().expect("temp dir");
        let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        std::fs::write(&cert_path, cert.pem()).expect("write cert");
        std::fs::write(&key_path, key.serialize_pem()).expect("write key");
        TestCa {
            ca: ca.der().clone(),
            cert: cert_path,
            key: key_path,
            _dir: dir,
        }
    }

    /// The gateway's TLS settings from these files.
    pub fn server_config(&self) -> Arc<rustls::ServerConfig> {
        wsgate::proxy::tls::server_config(&self.cert, &self.key).expect("TLS config")
    }

    /// A TLS client trusting only this CA.
    pub fn client(&self) -> tokio_rustls::TlsConnector {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca.clone()).expect("CA into root store");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        tokio_rustls::TlsConnector::from(Arc::new(config))
    }

    /// A TLS connection to `addr` as `localhost`, trusting this CA.
    pub async fn connect(
        &self,
        addr: std::net::SocketAddr,
    ) -> std::io::Result<TlsStream<TcpStream>> {
        let tcp = TcpStream::connect(addr).await?;
        let name = ServerName::try_from("localhost").expect("name");
        self.client().connect(name, tcp).await
    }
}

/// Another file in the directory of `path`.
pub fn sibling(path: &Path, name: &str) -> PathBuf {
    path.with_file_name(name)
}
