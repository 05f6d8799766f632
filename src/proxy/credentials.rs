//! Where a browser's token travels, and what of the browser's request
//! becomes gRPC metadata upstream.
//!
//! The WebSocket API cannot set headers, so a token comes, in this order:
//! in the cookie named by `Config::auth_cookie`; as the subprotocol
//! `bearer.<jwt>` offered beside `wsgate.v1`; or in a first frame
//! `{"auth": {"token": "..."}}` (see `identity`). Tokens in the URL are
//! refused: URLs end up in logs.

use std::net::SocketAddr;

use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use tonic::metadata::{MetadataKey, MetadataMap, MetadataValue};

use super::Config;
use super::metrics::GatewayMetrics;
use crate::auth::{AUTHORIZATION, AuthError, Claims, Verifier};

/// The subprotocol the gateway speaks, answered when offered.
pub const SUBPROTOCOL: &str = "wsgate.v1";
/// The prefix of the subprotocol entry carrying a token.
const BEARER_PROTOCOL: &str = "bearer.";
/// Query parameters that look like tokens, refused on the WebSocket endpoint.
const URL_TOKEN_PARAMS: [&str; 3] = ["token", "access_token", "jwt"];
/// The metadata key carrying the client's address.
pub const X_FORWARDED_FOR: &str = "x-forwarded-for";

/// Names no `--forward-header` or `--forward-cookie` may take: hop-by-hop
/// and transport headers, the ones the gateway sets itself, and those that
/// carry credentials.
const UNFORWARDABLE: [&str; 16] = [
    "authorization",
    "connection",
    "content-length",
    "content-type",
    "cookie",
    "host",
    "keep-alive",
    "proxy-authorization",
    "proxy-connection",
    "sec-websocket-key",
    "sec-websocket-protocol",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    X_FORWARDED_FOR,
];

/// A token verified at the upgrade, with where it came from.
pub struct Presented {
    pub token: String,
    pub claims: Claims,
}

/// Checks a handshake before the upgrade: a token in the URL is a 400; in
/// jwt mode, a token in the cookie or the subprotocol must verify (401
/// otherwise). `Ok(None)`: no token at the upgrade (none mode, or a
/// first-frame token to come).
#[allow(clippy::result_large_err)]
pub(crate) fn admit(
    config: &Config,
    metrics: &GatewayMetrics,
    uri: &Uri,
    headers: &HeaderMap,
) -> Result<Option<Presented>, Response> {
    let Some(verifier) = &config.auth else {
        return Ok(None);
    };
    if has_url_token(uri) {
        metrics.refused("url_token");
        return Err((
            StatusCode::BAD_REQUEST,
            "tokens in the URL are not accepted (URLs end up in logs): send it in a cookie, \
             the Sec-WebSocket-Protocol header or a first auth frame\n",
        )
            .into_response());
    }
    let (offers_ours, bearer) = subprotocols(headers);
    let token = match cookie(headers, &config.auth_cookie) {
        Some(token) => Some(token),
        None if bearer.is_some() && !offers_ours => {
            metrics.refused("subprotocol");
            return Err((
                StatusCode::BAD_REQUEST,
                format!("offer the subprotocol {SUBPROTOCOL} beside the bearer token\n"),
            )
                .into_response());
        }
        None => bearer,
    };
    match token {
        None => Ok(None),
        Some(token) => verify(verifier, token).map(Some).map_err(|e| {
            metrics.refused("unauthenticated");
            metrics.auth_failure(e.reason());
            unauthorized(&e)
        }),
    }
}

fn verify(verifier: &Verifier, token: &str) -> Result<Presented, AuthError> {
    let claims = verifier.verify(token)?;
    Ok(Presented {
        token: token.to_owned(),
        claims,
    })
}

/// The HTTP answer to a token refused at the upgrade.
fn unauthorized(e: &AuthError) -> Response {
    // Counted; logged at debug only: a flood of bad tokens must not flood
    // the log.
    tracing::debug!(reason = e.reason(), "token refused at the upgrade");
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer")],
        format!("unauthorized: {e}\n"),
    )
        .into_response()
}

fn has_url_token(uri: &Uri) -> bool {
    uri.query().is_some_and(|query| {
        query.split('&').any(|pair| {
            let name = pair.split_once('=').map_or(pair, |(name, _)| name);
            URL_TOKEN_PARAMS
                .iter()
                .any(|p| name.eq_ignore_ascii_case(p))
        })
    })
}

/// Whether `wsgate.v1` is offered, and the token of a `bearer.` entry.
fn subprotocols(headers: &HeaderMap) -> (bool, Option<&str>) {
    let mut ours = false;
    let mut bearer = None;
    let entries = headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim);
    for entry in entries {
        if entry == SUBPROTOCOL {
            ours = true;
        } else if let Some(token) = entry.strip_prefix(BEARER_PROTOCOL) {
            bearer = Some(token);
        }
    }
    (ours, bearer)
}

/// The value of the cookie `name`, if the request has it.
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v.trim_matches('"'))
}

/// The metadata every upstream call of this connection carries, less the
/// token: the client's address, and the allow-listed headers and cookies.
/// The browser's own `X-Forwarded-For` is not trusted, so not passed.
pub fn forwarded(config: &Config, headers: &HeaderMap, peer: SocketAddr) -> MetadataMap {
    let mut metadata = MetadataMap::new();
    if let Ok(ip) = MetadataValue::try_from(peer.ip().to_string()) {
        metadata.insert(X_FORWARDED_FOR, ip);
    }
    for name in &config.forward_headers {
        let Ok(key) = MetadataKey::from_bytes(name.as_bytes()) else {
            continue;
        };
        for value in headers.get_all(name.as_str()) {
            if let Ok(Ok(value)) = value.to_str().map(MetadataValue::try_from) {
                metadata.append(key.clone(), value);
            }
        }
    }
    for name in &config.forward_cookies {
        let (Ok(key), Some(value)) = (
            MetadataKey::from_bytes(name.as_bytes()),
            cookie(headers, name),
        ) else {
            continue;
        };
        if let Ok(value) = MetadataValue::try_from(value) {
            metadata.insert(key, value);
        }
    }
    metadata
}

/// `base` with `authorization: Bearer <token>` added.
pub fn with_token(base: &MetadataMap, token: Option<&str>) -> MetadataMap {
    let mut metadata = base.clone();
    if let Some(Ok(value)) = token.map(|t| MetadataValue::try_from(format!("Bearer {t}"))) {
        metadata.insert(AUTHORIZATION, value);
    }
    metadata
}

/// A `--forward-header` / `--forward-cookie` name, checked: a valid
/// lowercase ASCII gRPC metadata key, not binary (`-bin`), not `grpc-`,
/// not a pseudo, hop-by-hop or credential header.
pub fn forward_name(name: &str) -> Result<String, String> {
    let name = name.trim().to_ascii_lowercase();
    if name.is_empty() {
        return Err("a name is empty".into());
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b))
    {
        return Err(format!(
            "{name:?} is not a gRPC metadata key (letters, digits, - _ . only)"
        ));
    }
    if name.ends_with("-bin") || name.starts_with("grpc-") {
        return Err(format!("{name:?} is reserved (binary or grpc- metadata)"));
    }
    if UNFORWARDABLE.contains(&name.as_str()) {
        return Err(format!(
            "{name:?} cannot be forwarded (set by the gateway, hop-by-hop, or a credential)"
        ));
    }
    Ok(name)
}

/// An `--auth-cookie` name: an RFC 6265 cookie name.
pub fn cookie_name(name: &str) -> Result<String, String> {
    let ok = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?={}".contains(&b));
    if ok {
        Ok(name.to_owned())
    } else {
        Err(format!("{name:?} is not a valid cookie name"))
    }
}

/// Settings that do not fit together, found at start.
pub fn check(config: &Config) -> Result<(), String> {
    cookie_name(&config.auth_cookie)?;
    for name in config.forward_headers.iter().chain(&config.forward_cookies) {
        forward_name(name)?;
    }
    if config.auth.is_some() && config.forward_cookies.contains(&config.auth_cookie) {
        return Err(format!(
            "--forward-cookie names the auth cookie {:?}: the token travels as authorization only",
            config.auth_cookie
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.append(*k, v.parse().expect("value"));
        }
        map
    }

    #[test]
    fn cookies_are_found_by_exact_name() {
        let h = headers(&[("cookie", "a=1; wsgate_token=abc.def; b=2")]);
        assert_eq!(cookie(&h, "wsgate_token"), Some("abc.def"));
        assert_eq!(cookie(&h, "wsgate"), None);
    }

    #[test]
    fn the_bearer_subprotocol_is_read_beside_ours() {
        let h = headers(&[("sec-websocket-protocol", "wsgate.v1, bearer.x.y.z")]);
        assert_eq!(subprotocols(&h), (true, Some("x.y.z")));
        let h = headers(&[("sec-websocket-protocol", "bearer.t")]);
        assert_eq!(subprotocols(&h), (false, Some("t")));
    }

    #[test]
    fn url_tokens_are_spotted() {
        for uri in ["/?token=x", "/?a=1&access_token=x", "/?TOKEN"] {
            assert!(has_url_token(&uri.parse().expect("uri")), "{uri}");
        }
        assert!(!has_url_token(&"/?tokens=1".parse().expect("uri")));
    }

    #[test]
    fn forward_names_are_metadata_keys_and_not_credentials() {
        assert_eq!(forward_name("X-Request-Id"), Ok("x-request-id".into()));
        for bad in [
            "authorization",
            ":path",
            "x-forwarded-for",
            "connection",
            "a-bin",
            "grpc-timeout",
            "a b",
            "",
        ] {
            assert!(forward_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_spoofed_forwarded_for_is_replaced_by_the_peer() {
        let mut config = Config::new("http://127.0.0.1:1");
        config.forward_headers = vec!["x-request-id".into()];
        config.forward_cookies = vec!["team".into()];
        let h = headers(&[
            ("x-forwarded-for", "6.6.6.6"),
            ("x-request-id", "r1"),
            ("x-other", "no"),
            ("cookie", "team=red; wsgate_token=secret"),
        ]);
        let md = forwarded(&config, &h, "127.0.0.9:5".parse().expect("addr"));
        assert_eq!(
            md.get(X_FORWARDED_FOR).map(|v| v.to_str().ok()),
            Some(Some("127.0.0.9"))
        );
        assert_eq!(
            md.get("x-request-id").map(|v| v.to_str().ok()),
            Some(Some("r1"))
        );
        assert_eq!(md.get("team").map(|v| v.to_str().ok()), Some(Some("red")));
        assert_eq!(md.len(), 3);
    }
}
