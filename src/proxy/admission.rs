//! Whether a WebSocket upgrade may go on, decided before the upgrade and
//! before anything reaches the upstream: the Origin check (403), then the
//! connection limits (503). Refusals are logged without letting a client
//! flood the log: its headers are its own to choose.

use std::net::{IpAddr, SocketAddr};

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::Context;
use super::limits::{self, ConnectionLimit, Permit};
use super::origin;
use super::quiet_log::QuietLog;

/// The longest Origin logged, in bytes.
const MAX_LOGGED_ORIGIN: usize = 100;

/// The places a session holds while it is open.
pub(super) struct Admitted {
    _per_ip: Permit<IpAddr>,
    _total: Permit<()>,
    /// jwt mode: the place of the signed-in user, once known.
    pub(super) user: Option<Permit<String>>,
}

/// The connection counts and refusal logs every upgrade goes through.
pub(super) struct Admission {
    per_ip: ConnectionLimit<IpAddr>,
    per_user: ConnectionLimit<String>,
    total: ConnectionLimit<()>,
    origins_log: QuietLog,
    limits_log: QuietLog,
}

impl Admission {
    pub(super) fn new(max_total: usize, max_per_ip: usize, max_per_user: usize) -> Admission {
        Admission {
            per_ip: ConnectionLimit::new(max_per_ip),
            per_user: ConnectionLimit::new(max_per_user),
            total: ConnectionLimit::new(max_total),
            origins_log: QuietLog::new(),
            limits_log: QuietLog::new(),
        }
    }
}

/// Admits the upgrade request, or the HTTP answer that refuses it.
pub(super) fn admit(
    ctx: &Context,
    peer: SocketAddr,
    headers: &HeaderMap,
) -> Result<Admitted, Refusal> {
    let config = &ctx.config;
    let admission = &ctx.admission;
    let origin = headers.get(header::ORIGIN);
    let host = headers.get(header::HOST).map(HeaderValue::as_bytes);
    if !origin::allowed(
        origin.map(HeaderValue::as_bytes),
        host,
        config.tls.is_some(),
        &config.allowed_origins,
    ) {
        let shown = origin.map(|o| logged(o.as_bytes())).unwrap_or_default();
        admission.origins_log.log(|suppressed| {
            tracing::info!(%peer, origin = ?shown, suppressed, "refused a WebSocket from a foreign origin (add it to --allowed-origins if it is yours)");
        }, || tracing::debug!(%peer, origin = ?shown, "refused a WebSocket from a foreign origin"));
        ctx.metrics.refused("origin");
        return Err(refusal(
            StatusCode::FORBIDDEN,
            "this page's origin may not open a WebSocket here\n",
        ));
    }
    let per_ip = admission
        .per_ip
        .try_acquire(limits::client_key(peer.ip()))
        .map_err(|full| {
            admission.limits_log.log(
                |suppressed| tracing::info!(%peer, max = full.max, suppressed, "refused a WebSocket: too many from one address (--max-connections-per-ip)"),
                || tracing::debug!(%peer, "refused a WebSocket: too many from one address"),
            );
            ctx.metrics.refused("connections_per_ip");
            refusal(
                StatusCode::SERVICE_UNAVAILABLE,
                "too many connections from your address\n",
            )
        })?;
    let total = admission.total.try_acquire(()).map_err(|full| {
        admission.limits_log.log(
            |suppressed| tracing::warn!(%peer, max = full.max, suppressed, "refused a WebSocket: the gateway is full (--max-connections)"),
            || tracing::debug!(%peer, "refused a WebSocket: the gateway is full"),
        );
        ctx.metrics.refused("connections");
        refusal(
            StatusCode::SERVICE_UNAVAILABLE,
            "the server is at its connection limit; try again later\n",
        )
    })?;
    Ok(Admitted {
        _per_ip: per_ip,
        _total: total,
        user: None,
    })
}

/// A place for one more session of `user` (jwt mode), or the reason there
/// is none: `--max-connections-per-user` are open.
pub(super) fn admit_user(ctx: &Context, user: &str) -> Result<Permit<String>, Refusal> {
    ctx.admission
        .per_user
        .try_acquire(user.to_owned())
        .map_err(|full| {
            ctx.admission.limits_log.log(
                |suppressed| {
                    tracing::info!(
                        user,
                        max = full.max,
                        suppressed,
                        "refused a WebSocket: too many for one user (--max-connections-per-user)"
                    )
                },
                || tracing::debug!(user, "refused a WebSocket: too many for one user"),
            );
            ctx.metrics.refused("connections_per_user");
            refusal(
                StatusCode::SERVICE_UNAVAILABLE,
                "too many connections for this user\n",
            )
        })
}

/// An upgrade turned down, answered with a short plain-text body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Refusal {
    pub status: StatusCode,
    pub body: &'static str,
}

fn refusal(status: StatusCode, body: &'static str) -> Refusal {
    Refusal { status, body }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        (
            self.status,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            self.body,
        )
            .into_response()
    }
}

/// At most [`MAX_LOGGED_ORIGIN`] bytes of a header, as text (the `?` in the
/// log line escapes what is not printable).
fn logged(value: &[u8]) -> String {
    let cut = &value[..value.len().min(MAX_LOGGED_ORIGIN)];
    String::from_utf8_lossy(cut).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logged_origins_are_cut_short() {
        assert_eq!(logged(b"https://a.example"), "https://a.example");
        assert_eq!(logged(&[b'x'; 5000]).len(), MAX_LOGGED_ORIGIN);
        assert_eq!(logged(b"\xff"), "\u{fffd}");
    }
}
