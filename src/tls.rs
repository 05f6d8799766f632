//! TLS on the gRPC leg (rustls, ring): the chat server's certificate and
//! optional client CA ([`ServerTls`]), and the gateway's connector to a TLS
//! upstream ([`ClientTls`]). Every file is parsed and checked when these are
//! built, at start, so a bad one stops the process with its reason instead
//! of failing each handshake later.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tonic::transport::{Certificate, Identity, ServerTlsConfig};

/// How long a peer may take over a TLS handshake: one that opens a
/// connection and never finishes must not hold it (and its task) forever.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A certificate file, key file or name that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("the {0} file holds no PEM certificate")]
    NoCertificate(&'static str),
    #[error("the {0} file is not valid PEM: {1}")]
    Pem(&'static str, rustls::pki_types::pem::Error),
    #[error("the key file holds no PEM private key (PKCS#8, PKCS#1 or SEC1)")]
    NoKey,
    #[error("the certificate and the key do not belong together, or rustls refuses them: {0}")]
    Identity(rustls::Error),
    #[error("the {0} file holds a certificate unusable as a CA: {1}")]
    Roots(&'static str, rustls::Error),
    #[error("{0:?} is not a DNS name or an IP address")]
    ServerName(String),
}

/// The chat server's TLS settings: its certificate chain and key, and the
/// CA client certificates must be signed by (mutual TLS) if any.
#[derive(Clone)]
pub struct ServerTls {
    config: ServerTlsConfig,
    mutual: bool,
}

impl ServerTls {
    /// From PEM: the certificate chain (leaf first), its private key, and
    /// optionally the CA bundle that signs client certificates; a client
    /// without a certificate from it is refused at the handshake.
    pub fn from_pem(cert: &[u8], key: &[u8], client_ca: Option<&[u8]>) -> Result<Self, TlsError> {
        check_identity(cert, key)?;
        let mut config = ServerTlsConfig::new()
            .identity(Identity::from_pem(cert, key))
            .timeout(HANDSHAKE_TIMEOUT);
        if let Some(ca) = client_ca {
            roots(ca, "client CA")?;
            config = config.client_ca_root(Certificate::from_pem(ca));
        }
        Ok(ServerTls {
            config,
            mutual: client_ca.is_some(),
        })
    }

    /// Another handshake deadline than [`HANDSHAKE_TIMEOUT`] (tests use a
    /// short one).
    pub fn with_handshake_timeout(mut self, timeout: Duration) -> Self {
        self.config = self.config.timeout(timeout);
        self
    }

    pub(crate) fn tonic(&self) -> ServerTlsConfig {
        self.config.clone()
    }

    /// Whether clients must present a certificate.
    pub fn mutual(&self) -> bool {
        self.mutual
    }
}

impl fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerTls")
            .field("mutual", &self.mutual)
            .finish_non_exhaustive()
    }
}

/// Which server certificates the gateway accepts from its upstream.
pub enum Trust<'a> {
    /// Any certificate for the server's name that chains to one of these
    /// CA certificates (PEM).
    Roots(&'a [u8]),
    /// Exactly the leaf certificate of this PEM chain, whatever names it
    /// holds: for `wsgate all`, whose gateway dials its own server over
    /// loopback and knows the very certificate it serves.
    Exactly(&'a [u8]),
}

/// The gateway's TLS to its upstream: a rustls client configuration, the
/// name to verify (and send as SNI) if not the address's host, and a flag
/// so a failing handshake is logged once per outage, not once per attempt.
#[derive(Clone)]
pub struct ClientTls {
    config: Arc<rustls::ClientConfig>,
    server_name: Option<ServerName<'static>>,
    failing: Arc<AtomicBool>,
}

impl fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientTls")
            .field("server_name", &self.server_name)
            .field(
                "client_cert",
                &self.config.client_auth_cert_resolver.has_certs(),
            )
            .finish_non_exhaustive()
    }
}

impl ClientTls {
    /// `identity` is a client certificate chain and key (PEM) for mutual
    /// TLS; `server_name` overrides the name taken from the address.
    pub fn new(
        trust: Trust<'_>,
        identity: Option<(&[u8], &[u8])>,
        server_name: Option<&str>,
    ) -> Result<Self, TlsError> {
        let provider = provider();
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(TlsError::Identity)?;
        let builder = match trust {
            Trust::Roots(pem) => builder.with_root_certificates(roots(pem, "CA")?),
            Trust::Exactly(pem) => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(Pinned {
                    leaf: certificates(pem, "certificate")?.swap_remove(0),
                    provider,
                })),
        };
        let mut config = match identity {
            Some((cert, key)) => {
                let (chain, key) = check_identity(cert, key)?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(TlsError::Identity)?
            }
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = vec![b"h2".to_vec()];
        let server_name = server_name
            .map(|name| {
                ServerName::try_from(name.to_owned()).map_err(|_| TlsError::ServerName(name.into()))
            })
            .transpose()?;
        Ok(ClientTls {
            config: Arc::new(config),
            server_name,
            failing: Arc::default(),
        })
    }

    /// Opens a TCP connection to `address` and completes a TLS handshake on
    /// it, as a connector for tonic's channel. The certificate must hold the
    /// server name given at [`ClientTls::new`], else `host`: the upstream
    /// URI's host, a name or an IP address, never the address a name was
    /// resolved to.
    pub(crate) async fn connect(
        &self,
        address: SocketAddr,
        host: &str,
    ) -> Result<TokioIo<tokio_rustls::client::TlsStream<TcpStream>>, std::io::Error> {
        use std::io::{Error, ErrorKind};
        let name = match &self.server_name {
            Some(name) => name.clone(),
            None => ServerName::try_from(host.to_owned())
                .map_err(|_| Error::new(ErrorKind::InvalidInput, "the host is not a valid name"))?,
        };
        let tcp = TcpStream::connect(address).await?;
        tcp.set_nodelay(true)?;
        let handshake = TlsConnector::from(self.config.clone()).connect(name, tcp);
        let result = match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake).await {
            Ok(result) => result,
            Err(_) => Err(Error::new(ErrorKind::TimedOut, "TLS handshake timed out")),
        };
        match result {
            Ok(tls) => {
                if self.failing.swap(false, Ordering::Relaxed) {
                    tracing::info!(host, %address, "TLS handshake with the upstream works again");
                }
                Ok(TokioIo::new(tls))
            }
            Err(e) => {
                if !self.failing.swap(true, Ordering::Relaxed) {
                    tracing::warn!(host, %address, error = %e,
                        "TLS handshake with the upstream failed (logged once until one succeeds)");
                }
                Err(e)
            }
        }
    }
}

/// ring, chosen explicitly: rustls's process-wide default would be
/// ambiguous if another crate ever enabled a second provider.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Every certificate in `pem`, at least one; `role` names the file in errors.
fn certificates(pem: &[u8], role: &'static str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem(role, e))?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate(role));
    }
    Ok(certs)
}

fn roots(pem: &[u8], role: &'static str) -> Result<RootCertStore, TlsError> {
    let mut store = RootCertStore::empty();
    for cert in certificates(pem, role)? {
        store.add(cert).map_err(|e| TlsError::Roots(role, e))?;
    }
    Ok(store)
}

/// Parses a chain and its key and has rustls check that they match.
fn check_identity(
    cert: &[u8],
    key: &[u8],
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsError> {
    let chain = certificates(cert, "certificate")?;
    let key = match PrivateKeyDer::from_pem_slice(key) {
        Ok(key) => key,
        Err(rustls::pki_types::pem::Error::NoItemsFound) => return Err(TlsError::NoKey),
        Err(e) => return Err(TlsError::Pem("key", e)),
    };
    rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Identity)?
        .with_no_client_auth()
        .with_single_cert(chain.clone(), key.clone_key())
        .map_err(TlsError::Identity)?;
    Ok((chain, key))
}

/// Accepts exactly one certificate ([`Trust::Exactly`]); the handshake's
/// signatures are still checked with rustls's own functions, so the peer
/// must hold that certificate's private key.
#[derive(Debug)]
struct Pinned {
    leaf: CertificateDer<'static>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if end_entity.as_ref() == self.leaf.as_ref() {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A self-signed certificate for localhost and its key, PEM.
    fn self_signed() -> (String, String) {
        let pair =
            rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("certificate");
        (pair.cert.pem(), pair.signing_key.serialize_pem())
    }

    #[test]
    fn a_matching_certificate_and_key_make_a_server_identity() {
        let (cert, key) = self_signed();
        let tls = ServerTls::from_pem(cert.as_bytes(), key.as_bytes(), None).expect("valid");
        assert!(!tls.mutual());
        let tls = ServerTls::from_pem(cert.as_bytes(), key.as_bytes(), Some(cert.as_bytes()))
            .expect("valid");
        assert!(tls.mutual());
    }

    #[test]
    fn a_key_of_another_certificate_is_refused() {
        let (cert, _) = self_signed();
        let (_, other_key) = self_signed();
        let err = ServerTls::from_pem(cert.as_bytes(), other_key.as_bytes(), None).unwrap_err();
        assert!(matches!(err, TlsError::Identity(_)), "{err}");
    }

    #[test]
    fn each_error_names_the_file_it_is_about() {
        let (cert, key) = self_signed();
        let cases = [
            (
                ServerTls::from_pem(b"", key.as_bytes(), None),
                "the certificate file holds no PEM certificate",
            ),
            (
                ServerTls::from_pem(cert.as_bytes(), cert.as_bytes(), None),
                "the key file holds no PEM private key",
            ),
            (
                ServerTls::from_pem(cert.as_bytes(), key.as_bytes(), Some(b"junk")),
                "the client CA file holds no PEM certificate",
            ),
        ];
        for (result, expected) in cases {
            let err = result.expect_err("refused");
            assert_eq!(err.to_string().split(" (").next(), Some(expected), "{err}");
        }
        let err = ClientTls::new(Trust::Roots(key.as_bytes()), None, None).unwrap_err();
        assert_eq!(err.to_string(), "the CA file holds no PEM certificate");
    }

    #[test]
    fn a_server_name_is_a_dns_name_or_an_ip_address() {
        let (cert, _) = self_signed();
        for ok in ["localhost", "chat.internal", "10.0.0.5", "::1"] {
            ClientTls::new(Trust::Roots(cert.as_bytes()), None, Some(ok)).expect(ok);
        }
        for bad in ["", "not a name", "a..b"] {
            let err = ClientTls::new(Trust::Roots(cert.as_bytes()), None, Some(bad)).unwrap_err();
            assert!(matches!(err, TlsError::ServerName(_)), "{bad}: {err}");
        }
    }

    #[test]
    fn a_pinned_certificate_is_the_only_one_accepted() {
        let (cert, _) = self_signed();
        let (other, _) = self_signed();
        let der = |pem: &str| CertificateDer::from_pem_slice(pem.as_bytes()).expect("PEM");
        let pinned = Pinned {
            leaf: der(&cert),
            provider: provider(),
        };
        let name = ServerName::try_from("localhost").expect("name");
        let verify =
            |c: &CertificateDer<'_>| pinned.verify_server_cert(c, &[], &name, &[], UnixTime::now());
        assert!(verify(&der(&cert)).is_ok());
        assert!(verify(&der(&other)).is_err());
    }
}
