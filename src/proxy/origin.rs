//! The Origin check before a WebSocket upgrade (Cross-Site WebSocket
//! Hijacking, CWE-1385): a browser sends the page's origin with every
//! upgrade, and a page of another site must not act with the user's
//! cookies. Pure functions; [`super::admission`] applies them.

use std::fmt;
use std::str::FromStr;

use axum::http::uri::{Authority, Uri};

/// An origin as a browser sends it: scheme, host and port (`https://chat.example`,
/// `http://localhost:8080`), normalised so that equal origins compare equal
/// (lower case, the default port made explicit).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    scheme: Scheme,
    host: String,
    port: u16,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scheme {
    Http,
    Https,
}

impl Scheme {
    fn default_port(self) -> u16 {
        match self {
            Scheme::Http => 80,
            Scheme::Https => 443,
        }
    }
}

const EXPECTED: &str = "expected an origin: scheme://host[:port], e.g. https://chat.example.com or http://localhost:8080";

impl FromStr for Origin {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, String> {
        let value = value.trim();
        let uri: Uri = value
            .parse()
            .map_err(|_| format!("{value:?} is not an origin: {EXPECTED}"))?;
        let scheme = match uri.scheme_str().map(str::to_ascii_lowercase).as_deref() {
            Some("http") => Scheme::Http,
            Some("https") => Scheme::Https,
            Some(other) => {
                return Err(format!(
                    "{value:?}: scheme {other:?} is not http or https: {EXPECTED}"
                ));
            }
            None => return Err(format!("{value:?} has no scheme: {EXPECTED}")),
        };
        // An origin has no path, query or user: "https://a.example/x" is a
        // URL, and a list entry that names one is a mistake worth showing.
        let path_and_query = uri.path_and_query().map(|p| p.as_str()).unwrap_or("");
        if !path_and_query.is_empty() && path_and_query != "/" {
            return Err(format!(
                "{value:?} has a path or query; an origin is only {EXPECTED}"
            ));
        }
        let authority = uri
            .authority()
            .ok_or_else(|| format!("{value:?} has no host: {EXPECTED}"))?;
        Origin::from_authority(scheme, authority)
            .ok_or_else(|| format!("{value:?} has no host, or a user name: {EXPECTED}"))
    }
}

impl Origin {
    fn from_authority(scheme: Scheme, authority: &Authority) -> Option<Origin> {
        if authority.as_str().contains('@') || authority.host().is_empty() {
            return None;
        }
        // What follows the host: nothing, or `:PORT`. (`Authority::port`
        // is None for a port that is not one, such as 99999.)
        let rest = authority.as_str().get(authority.host().len()..)?;
        let port = match rest.strip_prefix(':') {
            Some(port) => port.parse::<u16>().ok()?,
            None if rest.is_empty() => scheme.default_port(),
            None => return None,
        };
        Some(Origin {
            scheme,
            host: authority.host().to_ascii_lowercase(),
            port,
        })
    }

    /// The gateway's own origin as the browser sees it: the scheme it is
    /// served with and the request's `Host`, or None for a missing or
    /// malformed Host.
    fn own(host: &str, tls: bool) -> Option<Origin> {
        let authority: Authority = host.trim().parse().ok()?;
        let scheme = if tls { Scheme::Https } else { Scheme::Http };
        Origin::from_authority(scheme, &authority)
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = match self.scheme {
            Scheme::Http => "http",
            Scheme::Https => "https",
        };
        if self.port == self.scheme.default_port() {
            write!(f, "{scheme}://{}", self.host)
        } else {
            write!(f, "{scheme}://{}:{}", self.host, self.port)
        }
    }
}

/// Whether an upgrade request may go on, by its `Origin` and `Host`
/// headers: no `Origin` (not a browser page: websocat, Postman, a script),
/// the page's own origin, or one of `allowed`. Anything else, `null`
/// included (a sandboxed frame, a `file:` page, a redirect chain), is
/// foreign.
pub fn allowed(origin: Option<&[u8]>, host: Option<&[u8]>, tls: bool, allowed: &[Origin]) -> bool {
    let Some(origin) = origin else {
        return true;
    };
    let Some(origin) = std::str::from_utf8(origin)
        .ok()
        .and_then(|o| o.parse::<Origin>().ok())
    else {
        return false;
    };
    let own = host
        .and_then(|h| std::str::from_utf8(h).ok())
        .and_then(|h| Origin::own(h, tls));
    own.as_ref() == Some(&origin) || allowed.contains(&origin)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(origin: &str, host: &str, tls: bool, list: &[&str]) -> bool {
        let list: Vec<Origin> = list.iter().map(|o| o.parse().unwrap()).collect();
        allowed(Some(origin.as_bytes()), Some(host.as_bytes()), tls, &list)
    }

    #[test]
    fn the_pages_own_origin_is_allowed_with_the_scheme_it_is_served_with() {
        assert!(ok("http://localhost:8080", "localhost:8080", false, &[]));
        assert!(ok("HTTP://LocalHost:8080", "localhost:8080", false, &[]));
        assert!(ok("https://chat.example", "chat.example", true, &[]));
        assert!(ok("https://chat.example", "chat.example:443", true, &[]));
        assert!(ok("http://[::1]:8080", "[::1]:8080", false, &[]));
        // Served over TLS, a plain-text page of the same host is another origin.
        assert!(!ok("http://chat.example", "chat.example", true, &[]));
        assert!(!ok("https://chat.example", "chat.example", false, &[]));
        assert!(!ok("http://localhost:8081", "localhost:8080", false, &[]));
    }

    #[test]
    fn foreign_null_and_malformed_origins_are_refused_unless_listed() {
        assert!(!ok("https://evil.example", "chat.example", true, &[]));
        assert!(!ok("null", "chat.example", true, &[]));
        assert!(!ok("chrome-extension://abc", "chat.example", true, &[]));
        assert!(!ok("", "chat.example", true, &[]));
        assert!(!ok(
            "https://chat.example.evil.example",
            "chat.example",
            true,
            &[]
        ));
        let list = ["https://app.example", "http://localhost:3000"];
        assert!(ok("https://app.example", "chat.example", true, &list));
        assert!(ok("https://app.example:443", "chat.example", true, &list));
        assert!(ok("http://localhost:3000", "chat.example", true, &list));
        assert!(!ok("http://app.example", "chat.example", true, &list));
        assert!(!ok("https://sub.app.example", "chat.example", true, &list));
    }

    #[test]
    fn no_origin_is_not_a_browser_page_and_is_allowed() {
        assert!(allowed(None, Some(b"chat.example"), true, &[]));
        assert!(allowed(None, None, false, &[]));
        // Without a Host there is no own origin to match.
        assert!(!allowed(Some(b"http://a.example"), None, false, &[]));
        assert!(!allowed(
            Some(b"http://a.example\xff"),
            Some(b"a.example"),
            false,
            &[]
        ));
    }

    #[test]
    fn listed_origins_are_validated() {
        for good in [
            "https://a.example",
            "http://localhost:3000",
            "https://a.example/",
            "http://[::1]:8080",
        ] {
            assert!(good.parse::<Origin>().is_ok(), "{good}");
        }
        for bad in [
            "a.example",
            "ftp://a.example",
            "https://",
            "https://a.example/app",
            "https://a.example?x",
            "https://user@a.example",
            "*",
            "null",
            "https://a.example:99999",
        ] {
            assert!(bad.parse::<Origin>().is_err(), "{bad}");
        }
        let o: Origin = "HTTPS://A.example:443".parse().unwrap();
        assert_eq!(o.to_string(), "https://a.example");
        let o: Origin = "http://a.example:8080".parse().unwrap();
        assert_eq!(o.to_string(), "http://a.example:8080");
    }
}
