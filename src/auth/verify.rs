//! Token verification: pinned algorithms, checked times, issuer and audience.
//!
//! Each key is pinned to one algorithm when it is loaded (an HMAC secret to
//! HS256, an RSA public key to RS256, a P-256 key to ES256, a JWK to its own
//! `alg` or its key type's), and a token is only ever checked with a key of
//! the algorithm its header names. So `alg: none` never verifies (it is not
//! an algorithm jsonwebtoken knows), and a token signed HS256 with an RSA
//! public key as the "secret" finds no HS256 key to be checked with:
//! algorithm confusion is refused by construction.

use std::time::Duration;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet, KeyAlgorithm};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};

use super::Claims;

/// Default clock skew allowed on `exp` and `nbf`.
pub const DEFAULT_LEEWAY: Duration = Duration::from_secs(30);
/// Shortest HS256 secret accepted: RFC 7518 §3.2 wants at least the hash's
/// 256 bits; a shorter one can be guessed offline from any token.
pub const MIN_SECRET_BYTES: usize = 32;
/// Longest `sub` accepted: a user id (the chat server's id limit).
pub const MAX_SUB_BYTES: usize = 128;

/// A key tokens may be signed with, as configured.
#[derive(Clone)]
pub enum VerifyKey {
    /// An HS256 shared secret.
    Secret(Vec<u8>),
    /// A PEM public key: RSA (RS256) or P-256 (ES256).
    PublicPem(Vec<u8>),
    /// A JSON Web Key Set, as JSON text; tokens pick a key by `kid`.
    Jwks(String),
}

impl std::fmt::Debug for VerifyKey {
    /// Never prints a secret.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            VerifyKey::Secret(_) => f.write_str("Secret(..)"),
            VerifyKey::PublicPem(_) => f.write_str("PublicPem(..)"),
            VerifyKey::Jwks(_) => f.write_str("Jwks(..)"),
        }
    }
}

/// What a verifier checks.
#[derive(Debug, Clone)]
pub struct VerifierConfig {
    pub keys: Vec<VerifyKey>,
    /// Required `iss`, when set.
    pub issuer: Option<String>,
    /// Required `aud`, when set. When unset, a token naming an audience is
    /// refused: it was meant for some other service.
    pub audience: Option<String>,
    pub leeway: Duration,
}

/// Why a key could not be loaded (a configuration error, found at start).
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("no key to verify tokens with: give a secret, a public key or a JWKS")]
    NoKey,
    #[error(
        "the HS256 secret is {0} bytes; at least {MIN_SECRET_BYTES} are needed (e.g. `openssl rand -hex 32`)"
    )]
    ShortSecret(usize),
    #[error("not a PEM RSA or EC (P-256) public key: {0}")]
    PublicKey(String),
    #[error("not a JSON Web Key Set: {0}")]
    Jwks(String),
    #[error("JWK {kid:?}: {reason}")]
    Jwk { kid: Option<String>, reason: String },
}

/// Why a token was refused. The message is safe to show the client: it
/// names what failed, never the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("a token is required")]
    Missing,
    #[error("the token is not a well-formed JWT")]
    Malformed,
    #[error("the token's algorithm is not accepted")]
    Algorithm,
    #[error("the token names no key this service knows")]
    UnknownKey,
    #[error("the token's signature is not valid")]
    Signature,
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid yet")]
    NotYetValid,
    #[error("the token is for another issuer")]
    Issuer,
    #[error("the token is for another audience")]
    Audience,
    #[error("the token's claims are not acceptable: {0}")]
    Claims(String),
}

impl AuthError {
    /// A short stable name, for metrics and logs.
    pub fn reason(&self) -> &'static str {
        match self {
            AuthError::Missing => "missing",
            AuthError::Malformed => "malformed",
            AuthError::Algorithm => "algorithm",
            AuthError::UnknownKey => "unknown_key",
            AuthError::Signature => "signature",
            AuthError::Expired => "expired",
            AuthError::NotYetValid => "not_yet_valid",
            AuthError::Issuer => "issuer",
            AuthError::Audience => "audience",
            AuthError::Claims(_) => "claims",
        }
    }
}

/// One loaded key, pinned to its algorithm.
struct Key {
    kid: Option<String>,
    algorithm: Algorithm,
    key: DecodingKey,
}

/// Verifies tokens. Cheap to share (`Arc`); verification takes no lock.
pub struct Verifier {
    keys: Vec<Key>,
    issuer: Option<String>,
    audience: Option<String>,
    leeway: Duration,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("keys", &self.keys.len())
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("leeway", &self.leeway)
            .finish()
    }
}

impl Verifier {
    pub fn new(config: &VerifierConfig) -> Result<Verifier, KeyError> {
        let mut keys = Vec::new();
        for key in &config.keys {
            match key {
                VerifyKey::Secret(secret) => {
                    if secret.len() < MIN_SECRET_BYTES {
                        return Err(KeyError::ShortSecret(secret.len()));
                    }
                    let key = DecodingKey::from_secret(secret)
                        .map_err(|e| KeyError::PublicKey(e.to_string()))?;
                    keys.push(Key {
                        kid: None,
                        algorithm: Algorithm::HS256,
                        key,
                    });
                }
                VerifyKey::PublicPem(pem) => keys.push(public_pem(pem)?),
                VerifyKey::Jwks(json) => {
                    let set: JwkSet =
                        serde_json::from_str(json).map_err(|e| KeyError::Jwks(e.to_string()))?;
                    for jwk in &set.keys {
                        keys.push(from_jwk(jwk)?);
                    }
                }
            }
        }
        if keys.is_empty() {
            return Err(KeyError::NoKey);
        }
        Ok(Verifier {
            keys,
            issuer: config.issuer.clone(),
            audience: config.audience.clone(),
            leeway: config.leeway,
        })
    }

    /// The clock skew allowed on `exp` and `nbf`: a stream opened with a
    /// token ends when this verifier would start refusing it.
    pub fn leeway(&self) -> Duration {
        self.leeway
    }

    /// The claims of `token` if it is signed by one of our keys, with the
    /// algorithm pinned to that key, and valid now.
    pub fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        if token.is_empty() {
            return Err(AuthError::Missing);
        }
        let header = jsonwebtoken::decode_header(token).map_err(|e| match e.kind() {
            ErrorKind::InvalidAlgorithmName | ErrorKind::UnsupportedAlgorithm => {
                AuthError::Algorithm
            }
            // A header that is JSON naming an `alg` jsonwebtoken has no
            // variant for (`none`, `HS1`...) is a refused algorithm; anything
            // else that does not parse is not a JWT.
            ErrorKind::Json(_) if names_an_algorithm(token) => AuthError::Algorithm,
            _ => AuthError::Malformed,
        })?;
        let mut candidates = self
            .keys
            .iter()
            .filter(|k| k.algorithm == header.alg)
            .filter(|k| match (&header.kid, &k.kid) {
                (Some(wanted), Some(kid)) => wanted == kid,
                _ => true,
            })
            .peekable();
        if candidates.peek().is_none() {
            return Err(if self.keys.iter().any(|k| k.algorithm == header.alg) {
                AuthError::UnknownKey
            } else {
                AuthError::Algorithm
            });
        }
        let mut failure = AuthError::Signature;
        for key in candidates {
            match jsonwebtoken::decode::<Claims>(token, &key.key, &self.validation(key.algorithm)) {
                Ok(data) => return check_claims(data.claims),
                // Another key of the same algorithm may still match (rotation).
                Err(e) if matches!(e.kind(), ErrorKind::InvalidSignature) => {}
                Err(e) => {
                    failure = classify(&e);
                    break;
                }
            }
        }
        Err(failure)
    }

    fn validation(&self, algorithm: Algorithm) -> Validation {
        let mut validation = Validation::new(algorithm);
        validation.leeway = self.leeway.as_secs();
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp", "sub"]);
        // Without a configured audience, a token naming one is still refused
        // (RFC 7519 §4.1.3: it was meant for some other service).
        if let Some(audience) = &self.audience {
            validation.set_audience(&[audience]);
        }
        if let Some(issuer) = &self.issuer {
            validation.set_issuer(&[issuer]);
        }
        validation
    }
}

/// Whether the token's header is a JSON object with a string `alg`.
fn names_an_algorithm(token: &str) -> bool {
    use base64::Engine as _;
    let Some((header, _)) = token.split_once('.') else {
        return false;
    };
    let Ok(bytes) = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(header) else {
        return false;
    };
    serde_json::from_slice::<serde_json::Value>(&bytes)
        .is_ok_and(|header| header.get("alg").is_some_and(serde_json::Value::is_string))
}

fn check_claims(claims: Claims) -> Result<Claims, AuthError> {
    if claims.sub.is_empty() {
        return Err(AuthError::Claims("sub is empty".into()));
    }
    if claims.sub.len() > MAX_SUB_BYTES {
        return Err(AuthError::Claims(format!(
            "sub is over {MAX_SUB_BYTES} bytes"
        )));
    }
    Ok(claims)
}

fn classify(e: &jsonwebtoken::errors::Error) -> AuthError {
    match e.kind() {
        ErrorKind::ExpiredSignature => AuthError::Expired,
        ErrorKind::ImmatureSignature => AuthError::NotYetValid,
        ErrorKind::InvalidIssuer => AuthError::Issuer,
        ErrorKind::InvalidAudience => AuthError::Audience,
        ErrorKind::InvalidSignature => AuthError::Signature,
        ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => AuthError::Algorithm,
        ErrorKind::MissingRequiredClaim(claim) => AuthError::Claims(format!("{claim} is missing")),
        ErrorKind::InvalidClaimFormat(claim) => {
            AuthError::Claims(format!("{claim} has the wrong type"))
        }
        ErrorKind::Json(_) => AuthError::Claims("the claims do not have the expected types".into()),
        _ => AuthError::Malformed,
    }
}

fn public_pem(pem: &[u8]) -> Result<Key, KeyError> {
    if let Ok(key) = DecodingKey::from_rsa_pem(pem) {
        return Ok(Key {
            kid: None,
            algorithm: Algorithm::RS256,
            key,
        });
    }
    match DecodingKey::from_ec_pem(pem) {
        Ok(key) => Ok(Key {
            kid: None,
            algorithm: Algorithm::ES256,
            key,
        }),
        Err(e) => Err(KeyError::PublicKey(e.to_string())),
    }
}

fn from_jwk(jwk: &jsonwebtoken::jwk::Jwk) -> Result<Key, KeyError> {
    let kid = jwk.common.key_id.clone();
    let fail = |reason: String| KeyError::Jwk {
        kid: kid.clone(),
        reason,
    };
    let by_type = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => Algorithm::RS256,
        AlgorithmParameters::EllipticCurve(ec) if ec.curve == EllipticCurve::P256 => {
            Algorithm::ES256
        }
        AlgorithmParameters::OctetKey(_) => Algorithm::HS256,
        _ => return Err(fail("only RSA, P-256 and octet keys are supported".into())),
    };
    let algorithm = match jwk.common.key_algorithm {
        None => by_type,
        Some(KeyAlgorithm::RS256) if by_type == Algorithm::RS256 => Algorithm::RS256,
        Some(KeyAlgorithm::ES256) if by_type == Algorithm::ES256 => Algorithm::ES256,
        Some(KeyAlgorithm::HS256) if by_type == Algorithm::HS256 => Algorithm::HS256,
        Some(other) => return Err(fail(format!("algorithm {other:?} is not supported"))),
    };
    let key = DecodingKey::from_jwk(jwk).map_err(|e| fail(e.to_string()))?;
    if algorithm == Algorithm::HS256
        && key.try_get_as_bytes().map_or(0, <[u8]>::len) < MIN_SECRET_BYTES
    {
        return Err(fail(format!(
            "an octet key needs at least {MIN_SECRET_BYTES} bytes"
        )));
    }
    Ok(Key {
        kid,
        algorithm,
        key,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::{SignKey, TokenRequest, mint};

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";
    const RSA_PRIVATE: &[u8] = include_bytes!("testdata/rsa_private.pem");
    const RSA_PUBLIC: &[u8] = include_bytes!("testdata/rsa_public.pem");
    const EC_PRIVATE: &[u8] = include_bytes!("testdata/ec_private.pem");
    const EC_PUBLIC: &[u8] = include_bytes!("testdata/ec_public.pem");
    const JWKS: &str = include_str!("testdata/jwks.json");

    fn verifier(keys: Vec<VerifyKey>) -> Verifier {
        Verifier::new(&VerifierConfig {
            keys,
            issuer: None,
            audience: None,
            leeway: Duration::ZERO,
        })
        .unwrap()
    }

    fn request(user: &str) -> TokenRequest {
        TokenRequest {
            user: user.into(),
            ttl: Duration::from_secs(60),
            ..TokenRequest::default()
        }
    }

    fn hs256(request: &TokenRequest) -> String {
        mint(&SignKey::Secret(SECRET.to_vec()), request).unwrap()
    }

    /// A token with hand-written header and claims, signed HS256 with `secret`.
    fn handmade(header: &str, claims: &str, secret: &[u8]) -> String {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let message = format!("{}.{}", b64.encode(header), b64.encode(claims));
        let key = jsonwebtoken::EncodingKey::from_secret(secret).unwrap();
        let signature =
            jsonwebtoken::crypto::sign(message.as_bytes(), &key, Algorithm::HS256).unwrap();
        format!("{message}.{signature}")
    }

    fn now() -> u64 {
        jsonwebtoken::get_current_timestamp()
    }

    #[test]
    fn an_hs256_token_gives_its_claims() {
        let v = verifier(vec![VerifyKey::Secret(SECRET.to_vec())]);
        let token = hs256(&TokenRequest {
            name: Some("Ada".into()),
            rooms: Some(vec!["team-*".into()]),
            ..request("alice")
        });
        let claims = v.verify(&token).unwrap();
        assert_eq!(claims.sub, "alice");
        assert_eq!(claims.name.as_deref(), Some("Ada"));
        assert_eq!(claims.rooms, Some(vec!["team-*".to_string()]));
        assert!(claims.exp >= now() + 59);
    }

    #[test]
    fn rs256_es256_and_jwks_tokens_verify() {
        let rsa = mint(&SignKey::PrivatePem(RSA_PRIVATE.to_vec()), &request("bob")).unwrap();
        let ec = mint(&SignKey::PrivatePem(EC_PRIVATE.to_vec()), &request("carol")).unwrap();
        let pems = verifier(vec![
            VerifyKey::PublicPem(RSA_PUBLIC.to_vec()),
            VerifyKey::PublicPem(EC_PUBLIC.to_vec()),
        ]);
        assert_eq!(pems.verify(&rsa).unwrap().sub, "bob");
        assert_eq!(pems.verify(&ec).unwrap().sub, "carol");

        let jwks = verifier(vec![VerifyKey::Jwks(JWKS.into())]);
        let with_kid = TokenRequest {
            kid: Some("rsa-1".into()),
            ..request("dave")
        };
        let token = mint(&SignKey::PrivatePem(RSA_PRIVATE.to_vec()), &with_kid).unwrap();
        assert_eq!(jwks.verify(&token).unwrap().sub, "dave");
        let other_kid = TokenRequest {
            kid: Some("rsa-2".into()),
            ..request("dave")
        };
        let token = mint(&SignKey::PrivatePem(RSA_PRIVATE.to_vec()), &other_kid).unwrap();
        assert_eq!(jwks.verify(&token), Err(AuthError::UnknownKey));
    }

    #[test]
    fn a_wrong_signature_is_refused() {
        let v = verifier(vec![VerifyKey::Secret(SECRET.to_vec())]);
        let forged = mint(
            &SignKey::Secret(b"another secret, 32 bytes or more!".to_vec()),
            &request("alice"),
        )
        .unwrap();
        assert_eq!(v.verify(&forged), Err(AuthError::Signature));
        // One character of the signature changed: its first, whose six bits
        // all count (the last one's low bits are padding, and swapping it
        // for itself changed nothing, now and then).
        let token = hs256(&request("alice"));
        let at = token.rfind('.').unwrap() + 1;
        let swap = if token[at..].starts_with('A') {
            "B"
        } else {
            "A"
        };
        let tampered = format!("{}{swap}{}", &token[..at], &token[at + 1..]);
        assert_ne!(tampered, token);
        assert_eq!(v.verify(&tampered), Err(AuthError::Signature));
    }

    #[test]
    fn times_are_checked() {
        let v = verifier(vec![VerifyKey::Secret(SECRET.to_vec())]);
        let header = r#"{"alg":"HS256","typ":"JWT"}"#;
        let expired = handmade(
            header,
            &format!(r#"{{"sub":"a","exp":{}}}"#, now() - 5),
            SECRET,
        );
        assert_eq!(v.verify(&expired), Err(AuthError::Expired));
        let early = format!(r#"{{"sub":"a","exp":{},"nbf":{}}}"#, now() + 60, now() + 30);
        assert_eq!(
            v.verify(&handmade(header, &early, SECRET)),
            Err(AuthError::NotYetValid)
        );
        let no_exp = handmade(header, r#"{"sub":"a"}"#, SECRET);
        assert!(matches!(v.verify(&no_exp), Err(AuthError::Claims(_))));

        let lenient = Verifier::new(&VerifierConfig {
            keys: vec![VerifyKey::Secret(SECRET.to_vec())],
            issuer: None,
            audience: None,
            leeway: Duration::from_secs(30),
        })
        .unwrap();
        assert_eq!(lenient.verify(&expired).unwrap().sub, "a");
    }

    #[test]
    fn issuer_and_audience_are_checked() {
        let v = Verifier::new(&VerifierConfig {
            keys: vec![VerifyKey::Secret(SECRET.to_vec())],
            issuer: Some("https://app.example".into()),
            audience: Some("chat".into()),
            leeway: Duration::ZERO,
        })
        .unwrap();
        let good = TokenRequest {
            issuer: Some("https://app.example".into()),
            audience: Some("chat".into()),
            ..request("alice")
        };
        assert_eq!(v.verify(&hs256(&good)).unwrap().sub, "alice");
        let wrong_aud = TokenRequest {
            audience: Some("billing".into()),
            ..good.clone()
        };
        assert_eq!(v.verify(&hs256(&wrong_aud)), Err(AuthError::Audience));
        let wrong_iss = TokenRequest {
            issuer: Some("https://evil.example".into()),
            ..good.clone()
        };
        assert_eq!(v.verify(&hs256(&wrong_iss)), Err(AuthError::Issuer));

        // A token for a named audience is refused where none is configured.
        let open = verifier(vec![VerifyKey::Secret(SECRET.to_vec())]);
        assert_eq!(open.verify(&hs256(&good)), Err(AuthError::Audience));
    }

    #[test]
    fn alg_none_is_refused() {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let v = verifier(vec![VerifyKey::Secret(SECRET.to_vec())]);
        let claims = format!(r#"{{"sub":"alice","exp":{}}}"#, now() + 60);
        for alg in ["none", "None", "NONE"] {
            let header = format!(r#"{{"alg":"{alg}","typ":"JWT"}}"#);
            let token = format!("{}.{}.", b64.encode(header), b64.encode(&claims));
            assert_eq!(v.verify(&token), Err(AuthError::Algorithm), "{alg}");
        }
    }

    #[test]
    fn an_hs256_token_signed_with_the_rsa_public_key_is_refused() {
        // The classic confusion: the public key, known to all, used as an
        // HMAC secret. No HS256 key is configured, so it is never tried.
        let v = verifier(vec![VerifyKey::PublicPem(RSA_PUBLIC.to_vec())]);
        let claims = format!(r#"{{"sub":"alice","exp":{}}}"#, now() + 60);
        let token = handmade(r#"{"alg":"HS256","typ":"JWT"}"#, &claims, RSA_PUBLIC);
        assert_eq!(v.verify(&token), Err(AuthError::Algorithm));
        // And an RS256 token is not checked against an HS256 secret.
        let secret_only = verifier(vec![VerifyKey::Secret(SECRET.to_vec())]);
        let rsa = mint(&SignKey::PrivatePem(RSA_PRIVATE.to_vec()), &request("bob")).unwrap();
        assert_eq!(secret_only.verify(&rsa), Err(AuthError::Algorithm));
    }

    #[test]
    fn garbage_is_malformed_and_nothing_is_missing() {
        let v = verifier(vec![VerifyKey::Secret(SECRET.to_vec())]);
        assert_eq!(v.verify(""), Err(AuthError::Missing));
        for junk in [
            "x",
            "a.b",
            "a.b.c",
            "abc.def.ghi",
            "....",
            "\u{0}.\u{0}.\u{0}",
        ] {
            assert_eq!(v.verify(junk), Err(AuthError::Malformed), "{junk}");
        }
        let empty_sub = handmade(
            r#"{"alg":"HS256"}"#,
            &format!(r#"{{"sub":"","exp":{}}}"#, now() + 60),
            SECRET,
        );
        assert!(matches!(v.verify(&empty_sub), Err(AuthError::Claims(_))));
    }

    #[test]
    fn weak_or_missing_keys_are_configuration_errors() {
        let config = |keys| VerifierConfig {
            keys,
            issuer: None,
            audience: None,
            leeway: DEFAULT_LEEWAY,
        };
        assert!(matches!(
            Verifier::new(&config(vec![])),
            Err(KeyError::NoKey)
        ));
        assert!(matches!(
            Verifier::new(&config(vec![VerifyKey::Secret(b"short".to_vec())])),
            Err(KeyError::ShortSecret(5))
        ));
        assert!(matches!(
            Verifier::new(&config(vec![VerifyKey::PublicPem(b"not a key".to_vec())])),
            Err(KeyError::PublicKey(_))
        ));
        assert!(matches!(
            Verifier::new(&config(vec![VerifyKey::Jwks("{".into())])),
            Err(KeyError::Jwks(_))
        ));
        assert_eq!(
            format!("{:?}", VerifyKey::Secret(SECRET.to_vec())),
            "Secret(..)"
        );
    }
}
