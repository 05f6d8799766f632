//! Who a session is (`--auth jwt`): its current token, the first-frame
//! sign-in and its deadline, refresh, and expiry. In none mode every frame
//! passes and the metadata carries no token.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use tokio::sync::watch;
use tokio::time::Instant;
use tonic::Code;
use tonic::metadata::MetadataMap;

use super::Config;
use super::credentials::{Presented, with_token};
use super::metrics::GatewayMetrics;
use super::outbound::close_code;
use super::rate;
use super::transcode::error_json;
use crate::auth::{Claims, Verifier};

/// The frame key of sign-in and refresh frames; reserved in jwt mode.
pub const AUTH: &str = "auth";

/// What the session does with a frame.
pub enum Gate {
    /// Not an auth frame, and the session may send it: dispatch it.
    Pass,
    /// Answer the browser with this frame; forward nothing.
    Answer(String),
    /// Close the connection with this code and reason.
    Close(u16, String),
}

/// A session's identity. Holds the token, so it has no `Debug`.
pub struct Identity {
    verifier: Option<Arc<Verifier>>,
    metrics: Arc<GatewayMetrics>,
    base: MetadataMap,
    claims: Option<Claims>,
    /// The sign-in deadline while unauthenticated, the expiry after.
    deadline: Option<Instant>,
    metadata: watch::Sender<Arc<MetadataMap>>,
}

impl Identity {
    /// `base` is the forwarded metadata without the token; `presented` the
    /// token verified at the upgrade, if any.
    pub fn new(
        config: &Config,
        metrics: Arc<GatewayMetrics>,
        base: MetadataMap,
        presented: Option<Presented>,
    ) -> Identity {
        let (metadata, _) = watch::channel(Arc::new(base.clone()));
        let mut identity = Identity {
            verifier: config.auth.clone(),
            metrics,
            base,
            claims: None,
            deadline: config
                .auth
                .as_ref()
                .map(|_| Instant::now() + config.auth_timeout),
            metadata,
        };
        if let Some(presented) = presented {
            identity.accept(&presented.token, presented.claims);
        }
        identity
    }

    /// The user, once authenticated.
    pub fn sub(&self) -> Option<&str> {
        self.claims.as_ref().map(|c| c.sub.as_str())
    }

    /// The metadata of the upstream calls; changes on refresh.
    pub fn metadata(&self) -> watch::Receiver<Arc<MetadataMap>> {
        self.metadata.subscribe()
    }

    /// When the session must end unless something happens first: the
    /// sign-in deadline, or the token's expiry (its `exp` plus the
    /// verifier's leeway, the last second the verifier would accept it).
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// The close code and reason when [`Identity::deadline`] passes.
    pub fn on_deadline(&self) -> (u16, String) {
        match &self.claims {
            Some(_) => (close_code::POLICY, "token expired".to_owned()),
            None => (
                close_code::POLICY,
                "authentication timeout: no auth frame in time".to_owned(),
            ),
        }
    }

    /// The frame telling the browser who it is, once authenticated.
    pub fn welcome(&self) -> Option<String> {
        let claims = self.claims.as_ref()?;
        Some(serde_json::json!({ AUTH: { "sub": claims.sub, "exp": claims.exp } }).to_string())
    }

    /// Sign-in, refresh, or a frame that must wait for sign-in.
    pub fn on_text(&mut self, text: &str) -> Gate {
        let Some(verifier) = self.verifier.clone() else {
            return Gate::Pass;
        };
        let auth = if text.contains("\"auth\"") {
            auth_frame(text)
        } else {
            None
        };
        let Some(auth) = auth else {
            if self.claims.is_none() {
                // With the frame's request_id, so a client waiting on an
                // answer learns at once that it must sign in.
                return Gate::Answer(error_json(
                    Code::Unauthenticated,
                    "authenticate first: send {\"auth\": {\"token\": \"...\"}}",
                    rate::request_id(text).as_deref(),
                ));
            }
            return Gate::Pass;
        };
        let Some(token) = auth.get("token").and_then(Value::as_str) else {
            return Gate::Answer(error_json(
                Code::InvalidArgument,
                "an auth frame is {\"auth\": {\"token\": \"...\"}}",
                rate::request_id(text).as_deref(),
            ));
        };
        match (verifier.verify(token), &self.claims) {
            (Err(e), None) => {
                self.metrics.auth_failure(e.reason());
                tracing::debug!(reason = e.reason(), "token refused in the first frame");
                Gate::Close(close_code::POLICY, format!("unauthorized: {e}"))
            }
            (Err(e), Some(_)) => {
                self.metrics.auth_failure(e.reason());
                tracing::debug!(reason = e.reason(), "refresh token refused");
                Gate::Answer(error_json(
                    Code::Unauthenticated,
                    &format!("refresh refused: {e}; the current token holds until it expires"),
                    None,
                ))
            }
            (Ok(claims), Some(current)) if claims.sub != current.sub => Gate::Close(
                close_code::POLICY,
                "the refresh token is for another user".to_owned(),
            ),
            (Ok(claims), _) => {
                self.accept(token, claims);
                self.welcome().map_or(Gate::Pass, Gate::Answer)
            }
        }
    }

    fn accept(&mut self, token: &str, claims: Claims) {
        let leeway = self
            .verifier
            .as_ref()
            .map_or(Duration::ZERO, |v| v.leeway());
        self.deadline = Some(expiry(claims.exp, leeway));
        self.claims = Some(claims);
        self.metadata
            .send_replace(Arc::new(with_token(&self.base, Some(token))));
    }
}

/// The body of an `{"auth": {...}}` frame, if `text` is one.
fn auth_frame(text: &str) -> Option<serde_json::Map<String, Value>> {
    let Ok(Value::Object(mut frame)) = serde_json::from_str::<Value>(text) else {
        return None;
    };
    match frame.remove(AUTH)? {
        Value::Object(body) => Some(body),
        _ => Some(serde_json::Map::new()),
    }
}

/// The instant past which a token with this `exp` is no longer accepted.
fn expiry(exp: u64, leeway: Duration) -> Instant {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let end = Duration::from_secs(exp).saturating_add(leeway);
    Instant::now() + end.saturating_sub(now)
}
