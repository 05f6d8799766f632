//! Token minting, for `wsgate token`: trying things out and tests. A real
//! application's backend issues tokens itself (docs/security.md).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Serialize;

use super::Claims;
use super::verify::MIN_SECRET_BYTES;

/// A key to sign tokens with.
pub enum SignKey {
    /// HS256 with a shared secret.
    Secret(Vec<u8>),
    /// A PEM private key: RSA (RS256) or P-256 (ES256).
    PrivatePem(Vec<u8>),
}

/// Why a token could not be signed.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    #[error("the HS256 secret is {0} bytes; at least {MIN_SECRET_BYTES} are needed")]
    ShortSecret(usize),
    #[error("not a PEM RSA or EC (P-256) private key (PKCS#8 or PKCS#1)")]
    PrivateKey,
    #[error("cannot sign: {0}")]
    Sign(String),
}

/// What goes in a minted token besides the user.
#[derive(Debug, Clone, Default)]
pub struct TokenRequest {
    pub user: String,
    pub ttl: Duration,
    pub name: Option<String>,
    pub rooms: Option<Vec<String>>,
    pub issuer: Option<String>,
    pub audience: Option<String>,
    /// Key id for the header, so a verifier with a JWKS picks the key.
    pub kid: Option<String>,
}

#[derive(Serialize)]
struct Minted<'a> {
    #[serde(flatten)]
    claims: &'a Claims,
    #[serde(skip_serializing_if = "Option::is_none")]
    iss: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    aud: Option<&'a str>,
}

/// A signed JWT for `request`, valid from now for its `ttl`.
pub fn mint(key: &SignKey, request: &TokenRequest) -> Result<String, SignError> {
    let (algorithm, key) = match key {
        SignKey::Secret(secret) if secret.len() < MIN_SECRET_BYTES => {
            return Err(SignError::ShortSecret(secret.len()));
        }
        SignKey::Secret(secret) => (
            Algorithm::HS256,
            EncodingKey::from_secret(secret).map_err(|e| SignError::Sign(e.to_string()))?,
        ),
        SignKey::PrivatePem(pem) => match EncodingKey::from_rsa_pem(pem) {
            Ok(key) => (Algorithm::RS256, key),
            Err(_) => (
                Algorithm::ES256,
                EncodingKey::from_ec_pem(pem).map_err(|_| SignError::PrivateKey)?,
            ),
        },
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let claims = Claims {
        sub: request.user.clone(),
        exp: now.saturating_add(request.ttl.as_secs()),
        nbf: None,
        iat: Some(now),
        name: request.name.clone(),
        rooms: request.rooms.clone(),
    };
    let minted = Minted {
        claims: &claims,
        iss: request.issuer.as_deref(),
        aud: request.audience.as_deref(),
    };
    let mut header = Header::new(algorithm);
    header.kid = request.kid.clone();
    jsonwebtoken::encode(&header, &minted, &key).map_err(|e| SignError::Sign(e.to_string()))
}
