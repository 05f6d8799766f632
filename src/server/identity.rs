//! Who is calling: the token the gateway forwards, verified again here (the
//! server must not trust the network), and the rules it sets on what a call
//! may do.
//!
//! The [`Authenticate`] interceptor sits in front of `chat.ChatService` only
//! (health and reflection stay open: load balancers probe them). It puts a
//! [`Caller`] into every request's extensions; the service and each session
//! read it from there, and refuse a request that has none (fail closed).

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tonic::{Request, Status};

use super::errors::ChatError;
use super::metrics::ServerMetrics;
use crate::auth::{AUTHORIZATION, AuthError, Claims, Verifier, bearer};

/// Who a request comes from.
#[derive(Debug, Clone)]
pub enum Caller {
    /// `--auth none`: nobody is verified, and any client may act as any user.
    Anyone,
    /// `--auth jwt`: the bearer of a verified token.
    User(Arc<Identity>),
}

/// A verified token's claims, and until when the token holds.
#[derive(Debug)]
pub struct Identity {
    pub claims: Claims,
    /// `exp` plus the verifier's leeway: the moment the verifier itself
    /// would start refusing the token (`None`: too far ahead to represent).
    pub valid_until: Option<SystemTime>,
}

impl Caller {
    /// The caller of `request`, as [`Authenticate`] left it.
    pub fn of<T>(request: &Request<T>) -> Result<Caller, ChatError> {
        request
            .extensions()
            .get::<Caller>()
            .cloned()
            .ok_or(ChatError::Unauthenticated(AuthError::Missing))
    }

    /// The user id a request acts as when it names `claimed` in `field`:
    /// with a token, an empty one is the token's `sub`, and any other than
    /// `sub` is refused; without, whatever the client says.
    pub fn bind(&self, field: &'static str, claimed: &str) -> Result<String, ChatError> {
        match self {
            Caller::Anyone => Ok(claimed.to_owned()),
            Caller::User(identity) => {
                let sub = &identity.claims.sub;
                if claimed.is_empty() || claimed == sub {
                    Ok(sub.clone())
                } else {
                    // The claimed id is not echoed: it may be anything.
                    Err(ChatError::NotYou {
                        field,
                        you: sub.clone(),
                    })
                }
            }
        }
    }

    /// Whether the token's `rooms` claim lets the caller join, read, send to
    /// and type in `room` (always, without a token).
    pub fn may_enter(&self, room: &str) -> Result<(), ChatError> {
        match self {
            Caller::User(identity) if !identity.claims.may_enter(room) => {
                Err(ChatError::RoomForbidden(room.to_owned()))
            }
            _ => Ok(()),
        }
    }

    /// The display name the token vouches for, if any.
    pub fn name(&self) -> Option<&str> {
        match self {
            Caller::Anyone => None,
            Caller::User(identity) => identity.claims.name.as_deref(),
        }
    }

    /// How long from now the token holds (`None`: no token, or an `exp`
    /// too far ahead to represent: forever).
    pub fn remaining(&self, now: SystemTime) -> Option<Duration> {
        match self {
            Caller::Anyone => None,
            Caller::User(identity) => identity
                .valid_until
                .map(|until| until.duration_since(now).unwrap_or(Duration::ZERO)),
        }
    }
}

/// The interceptor in front of `chat.ChatService`: without a verifier every
/// request is [`Caller::Anyone`]; with one, a request needs
/// `authorization: Bearer <jwt>` with a token the verifier accepts, and is
/// refused with `UNAUTHENTICATED` (the reason, never the token) otherwise.
#[derive(Clone)]
pub struct Authenticate {
    verifier: Option<Arc<Verifier>>,
    metrics: Arc<ServerMetrics>,
}

impl Authenticate {
    pub fn new(verifier: Option<Arc<Verifier>>, metrics: Arc<ServerMetrics>) -> Self {
        Authenticate { verifier, metrics }
    }

    fn caller<T>(&self, request: &Request<T>) -> Result<Caller, AuthError> {
        let Some(verifier) = &self.verifier else {
            return Ok(Caller::Anyone);
        };
        let token = match request.metadata().get(AUTHORIZATION) {
            None => return Err(AuthError::Missing),
            Some(value) => value
                .to_str()
                .ok()
                .and_then(bearer)
                .ok_or(AuthError::Malformed)?,
        };
        let claims = verifier.verify(token)?;
        // Checked: `exp` is the token's to choose, up to u64::MAX.
        let valid_until = UNIX_EPOCH
            .checked_add(Duration::from_secs(claims.exp))
            .and_then(|exp| exp.checked_add(verifier.leeway()));
        Ok(Caller::User(Arc::new(Identity {
            claims,
            valid_until,
        })))
    }
}

impl tonic::service::Interceptor for Authenticate {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        match self.caller(&request) {
            Ok(caller) => {
                request.extensions_mut().insert(caller);
                Ok(request)
            }
            Err(error) => {
                // Counted, and logged at debug only: a flood of bad tokens
                // must not flood the log.
                self.metrics.auth_failure(error.reason());
                tracing::debug!(reason = error.reason(), "call refused: not authenticated");
                Err(ChatError::Unauthenticated(error).into())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use tonic::Code;
    use tonic::service::Interceptor as _;

    use super::*;
    use crate::auth::{SignKey, TokenRequest, VerifierConfig, VerifyKey, mint};

    const SECRET: &[u8] = b"a test secret of at least 32 bytes, for unit tests";

    fn metrics() -> Arc<ServerMetrics> {
        Arc::new(ServerMetrics::new(&prometheus::Registry::new()))
    }

    fn user(sub: &str, rooms: Option<&[&str]>) -> Caller {
        Caller::User(Arc::new(Identity {
            claims: Claims {
                sub: sub.into(),
                exp: 0,
                nbf: None,
                iat: None,
                name: None,
                rooms: rooms.map(|r| r.iter().map(|s| s.to_string()).collect()),
            },
            valid_until: Some(UNIX_EPOCH),
        }))
    }

    #[test]
    fn a_token_fills_an_empty_id_and_refuses_another() {
        let alice = user("alice", None);
        assert_eq!(alice.bind("sender_id", "").unwrap(), "alice");
        assert_eq!(alice.bind("sender_id", "alice").unwrap(), "alice");
        let refused = alice.bind("sender_id", "bob").unwrap_err();
        assert_eq!(refused.code(), Code::PermissionDenied);
        assert!(refused.to_string().contains("sender_id"), "{refused}");
        assert!(!refused.to_string().contains("bob"), "{refused}");
    }

    #[test]
    fn without_a_token_anyone_is_whoever_they_say() {
        assert_eq!(Caller::Anyone.bind("user_id", "bob").unwrap(), "bob");
        assert_eq!(Caller::Anyone.bind("user_id", "").unwrap(), "");
        assert!(Caller::Anyone.may_enter("any").is_ok());
        assert_eq!(Caller::Anyone.remaining(SystemTime::now()), None);
    }

    #[test]
    fn the_rooms_claim_limits_the_rooms() {
        let caller = user("alice", Some(&["general", "team-*"]));
        assert!(caller.may_enter("general").is_ok());
        assert!(caller.may_enter("team-red").is_ok());
        let refused = caller.may_enter("secret").unwrap_err();
        assert_eq!(refused.code(), Code::PermissionDenied);
        assert!(user("alice", None).may_enter("secret").is_ok());
    }

    fn verifier(leeway: Duration) -> Arc<Verifier> {
        let config = VerifierConfig {
            keys: vec![VerifyKey::Secret(SECRET.to_vec())],
            issuer: None,
            audience: None,
            leeway,
        };
        Arc::new(Verifier::new(&config).unwrap())
    }

    fn call(auth: &mut Authenticate, authorization: Option<&str>) -> Result<Caller, Status> {
        let mut request = Request::new(());
        if let Some(value) = authorization {
            request
                .metadata_mut()
                .insert(AUTHORIZATION, value.parse().unwrap());
        }
        let request = auth.call(request)?;
        Ok(Caller::of(&request).unwrap())
    }

    #[test]
    fn the_interceptor_verifies_the_bearer_token() {
        let mut auth = Authenticate::new(Some(verifier(Duration::from_secs(30))), metrics());
        let token = mint(
            &SignKey::Secret(SECRET.to_vec()),
            &TokenRequest {
                user: "alice".into(),
                ttl: Duration::from_secs(60),
                ..TokenRequest::default()
            },
        )
        .unwrap();
        let caller = call(&mut auth, Some(&format!("Bearer {token}"))).unwrap();
        let remaining = caller.remaining(SystemTime::now()).unwrap();
        assert!(
            remaining > Duration::from_secs(80) && remaining <= Duration::from_secs(90),
            "exp plus the leeway: {remaining:?}"
        );
        assert_eq!(caller.bind("user_id", "").unwrap(), "alice");

        for (authorization, message) in [
            (None, "a token is required"),
            (Some(format!("Basic {token}")), "not a well-formed JWT"),
            (Some("Bearer x.y.z".to_string()), "not a well-formed JWT"),
            (Some(format!("Bearer {}", tampered(&token))), "signature"),
        ] {
            let status = call(&mut auth, authorization.as_deref()).unwrap_err();
            assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
            assert!(status.message().contains(message), "{status:?}");
            assert!(!status.message().contains(&token[..20]), "{status:?}");
        }
    }

    /// The token with one character of its signature changed.
    fn tampered(token: &str) -> String {
        let at = token.len() - 10;
        let swap = if &token[at..=at] == "A" { "B" } else { "A" };
        format!("{}{swap}{}", &token[..at], &token[at + 1..])
    }

    #[test]
    fn an_expiry_beyond_the_clock_is_no_panic() {
        let mut auth = Authenticate::new(Some(verifier(Duration::from_secs(30))), metrics());
        let token = mint(
            &SignKey::Secret(SECRET.to_vec()),
            &TokenRequest {
                user: "alice".into(),
                ttl: Duration::from_secs(u64::MAX),
                ..TokenRequest::default()
            },
        )
        .unwrap();
        let caller = call(&mut auth, Some(&format!("Bearer {token}"))).unwrap();
        let remaining = caller.remaining(SystemTime::now());
        assert!(
            remaining.is_none_or(|left| left > Duration::from_secs(100 * 365 * 86_400)),
            "{remaining:?}"
        );
    }

    #[test]
    fn without_a_verifier_every_request_is_anyone() {
        let mut auth = Authenticate::new(None, metrics());
        assert!(matches!(call(&mut auth, None), Ok(Caller::Anyone)));
        assert!(matches!(
            call(&mut auth, Some("Bearer junk")),
            Ok(Caller::Anyone)
        ));
    }

    #[test]
    fn a_request_the_interceptor_never_saw_is_refused() {
        let error = Caller::of(&Request::new(())).unwrap_err();
        assert_eq!(error.code(), Code::Unauthenticated);
    }
}
