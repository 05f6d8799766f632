//! A throwaway public key infrastructure for the TLS tests: a CA made at
//! test time (rcgen), and the server and client certificates it signs, for
//! `127.0.0.1` and `localhost`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use tonic::transport::{Certificate, ClientTlsConfig, Identity};
use wsgate::tls::{ClientTls, ServerTls, Trust};

/// The names of most test certificates.
const LOOPBACK: &[&str] = &["localhost", "127.0.0.1"];

/// A certificate authority.
pub struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
    /// Its certificate, PEM: what a peer trusting this CA is given.
    pub pem: String,
}

/// A certificate chain and its private key, PEM.
#[derive(Clone)]
pub struct Pair {
    pub cert: String,
    pub key: String,
}

impl Ca {
    pub fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().expect("key"))
            .expect("CA certificate");
        let pem = issuer.pem();
        Ca { issuer, pem }
    }

    /// A server certificate for `127.0.0.1` and `localhost`.
    pub fn server(&self) -> Pair {
        self.issue("chat server", ExtendedKeyUsagePurpose::ServerAuth, LOOPBACK)
    }

    /// A server certificate for these names only (no IP address).
    pub fn server_named(&self, names: &[&str]) -> Pair {
        self.issue("chat server", ExtendedKeyUsagePurpose::ServerAuth, names)
    }

    /// A client certificate, for mutual TLS.
    pub fn client(&self, name: &str) -> Pair {
        self.issue(name, ExtendedKeyUsagePurpose::ClientAuth, LOOPBACK)
    }

    fn issue(&self, name: &str, usage: ExtendedKeyUsagePurpose, names: &[&str]) -> Pair {
        let names = names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>();
        let mut params = CertificateParams::new(names).expect("params");
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![usage];
        let key = KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &self.issuer).expect("certificate");
        Pair {
            cert: cert.pem(),
            key: key.serialize_pem(),
        }
    }

    /// The chat server's TLS settings with this CA's server certificate.
    pub fn server_tls(&self) -> ServerTls {
        let pair = self.server();
        ServerTls::from_pem(pair.cert.as_bytes(), pair.key.as_bytes(), None).expect("server TLS")
    }

    /// The server's TLS settings, requiring client certificates from `clients`.
    pub fn server_tls_requiring(&self, clients: &Ca) -> ServerTls {
        let pair = self.server();
        ServerTls::from_pem(
            pair.cert.as_bytes(),
            pair.key.as_bytes(),
            Some(clients.pem.as_bytes()),
        )
        .expect("server TLS")
    }

    /// The gateway's TLS to an upstream, trusting this CA, presenting `identity`.
    pub fn gateway_trusting(&self, identity: Option<&Pair>) -> ClientTls {
        ClientTls::new(
            Trust::Roots(self.pem.as_bytes()),
            identity.map(|p| (p.cert.as_bytes(), p.key.as_bytes())),
            None,
        )
        .expect("client TLS")
    }

    /// tonic's own client TLS, trusting this CA, presenting `identity`.
    pub fn tonic_trusting(&self, identity: Option<&Pair>) -> ClientTlsConfig {
        let mut config = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&self.pem));
        if let Some(pair) = identity {
            config = config.identity(Identity::from_pem(&pair.cert, &pair.key));
        }
        config
    }
}

impl Ca {
    /// A TLS client trusting only this CA, speaking HTTP/1.1 (as a browser
    /// does to the gateway).
    pub fn https_client(&self) -> tokio_rustls::TlsConnector {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(self.issuer.der().clone())
            .expect("CA into root store");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        tokio_rustls::TlsConnector::from(Arc::new(config))
    }
}

impl Pair {
    /// Writes `NAME.crt` and `NAME.key` into `dir`; returns their paths.
    pub fn write(&self, dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        let cert = dir.join(format!("{name}.crt"));
        let key = dir.join(format!("{name}.key"));
        std::fs::write(&cert, &self.cert).expect("write cert");
        std::fs::write(&key, &self.key).expect("write key");
        (cert, key)
    }
}
