//! Upstreams given by a name (`http://chat.internal:50051`): the name is
//! looked up, each address it gives is one server of the set, and it is
//! looked up again every `--upstream-resolve-interval`. This file holds the
//! lookups and what a new answer changes (pure); `upstream` applies it.

use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use tonic::transport::Uri;

/// Default time between two lookups of an upstream name. A server added to
/// the name gets sessions within this (plus the record's TTL in caches); a
/// server that died or drains is noticed by its health check within a
/// second whatever this is, and an early lookup follows it. One query per
/// name every 10 s costs the resolver nothing; waiting longer (grpc-go's
/// 30 s) leaves a scaled-out server idle for that long.
pub const DEFAULT_RESOLVE_INTERVAL: Duration = Duration::from_secs(10);

/// How long one lookup may take before it counts as failed.
pub(super) const LOOKUP_TIMEOUT: Duration = Duration::from_secs(10);

/// Looks a name up: the addresses of `host`, with `port` on each. By
/// default the system's resolver (`getaddrinfo`: `/etc/hosts`, search
/// domains and caches apply, A and AAAA records both); tests give their own.
#[derive(Clone)]
pub struct Resolver(Arc<Lookup>);

/// A name and port to their addresses.
type Lookup = dyn Fn(String, u16) -> BoxFuture<'static, io::Result<Vec<SocketAddr>>> + Send + Sync;

impl Resolver {
    /// The system's resolver.
    pub fn system() -> Resolver {
        Resolver::from_fn(|host, port| {
            Box::pin(async move { Ok(tokio::net::lookup_host((host, port)).await?.collect()) })
        })
    }

    /// Answers with `lookup`.
    pub fn from_fn(
        lookup: impl Fn(String, u16) -> BoxFuture<'static, io::Result<Vec<SocketAddr>>>
        + Send
        + Sync
        + 'static,
    ) -> Resolver {
        Resolver(Arc::new(lookup))
    }

    /// The addresses `host` gives, sorted, each once; an empty answer, or
    /// one that takes over [`LOOKUP_TIMEOUT`], is an error.
    pub(super) async fn lookup(&self, host: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
        let lookup = (self.0)(host.to_owned(), port);
        let mut addresses = match tokio::time::timeout(LOOKUP_TIMEOUT, lookup).await {
            Ok(answer) => answer?,
            Err(_) => return Err(io::Error::new(io::ErrorKind::TimedOut, "lookup timed out")),
        };
        addresses.sort_unstable();
        addresses.dedup();
        if addresses.is_empty() {
            return Err(io::Error::new(io::ErrorKind::NotFound, "no address"));
        }
        Ok(addresses)
    }
}

impl Default for Resolver {
    fn default() -> Self {
        Resolver::system()
    }
}

impl fmt::Debug for Resolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Resolver")
    }
}

/// Where an upstream URI's servers are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Host {
    /// An IP address: one server, never looked up.
    Address(SocketAddr),
    /// A name: as many servers as it has addresses.
    Name { name: String, port: u16 },
}

impl Host {
    /// From an upstream URI; the port defaults to the scheme's.
    pub(super) fn of(uri: &Uri) -> anyhow::Result<Host> {
        let Some(host) = uri.host().filter(|h| !h.is_empty()) else {
            anyhow::bail!("the upstream URI {uri} has no host");
        };
        let default_port = if uri.scheme_str() == Some("https") {
            443
        } else {
            80
        };
        let port = uri.port_u16().unwrap_or(default_port);
        // `[::1]` in a URI.
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        Ok(match bare.parse::<IpAddr>() {
            Ok(ip) => Host::Address(SocketAddr::new(ip, port)),
            Err(_) => Host::Name {
                name: bare.to_owned(),
                port,
            },
        })
    }

    /// The name a TLS certificate must hold (unless `--upstream-server-name`
    /// says otherwise), and the one the requests' `:authority` carries.
    pub(super) fn name(&self) -> String {
        match self {
            Host::Address(address) => address.ip().to_string(),
            Host::Name { name, .. } => name.clone(),
        }
    }
}

/// What a lookup changes in a name's members.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Update<T> {
    /// The members now, in the order of the answer.
    pub(super) members: Vec<(SocketAddr, T)>,
    /// Addresses new in this answer.
    pub(super) joined: Vec<SocketAddr>,
    /// The members of addresses the answer no longer gives.
    pub(super) left: Vec<(SocketAddr, T)>,
}

/// The members after a lookup answered `resolved` (sorted, each once): an
/// address already a member keeps its member, a new one gets `join`'s.
pub(super) fn update<T>(
    current: Vec<(SocketAddr, T)>,
    resolved: &[SocketAddr],
    mut join: impl FnMut(SocketAddr) -> T,
) -> Update<T> {
    let (mut kept, left): (Vec<_>, Vec<_>) = current
        .into_iter()
        .partition(|(address, _)| resolved.contains(address));
    let mut joined = Vec::new();
    let members = resolved
        .iter()
        .map(|address| {
            let member = match kept.iter().position(|(a, _)| a == address) {
                Some(i) => kept.swap_remove(i).1,
                None => {
                    joined.push(*address);
                    join(*address)
                }
            };
            (*address, member)
        })
        .collect();
    Update {
        members,
        joined,
        left,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().expect("an address")
    }

    #[test]
    fn an_update_keeps_members_adds_the_new_and_hands_back_the_vanished() {
        let (a, b, c) = (
            addr("10.0.0.1:50051"),
            addr("10.0.0.2:50051"),
            addr("[fd00::3]:50051"),
        );
        let mut made = 0;
        let mut join = |_| {
            made += 1;
            made
        };
        let first = update(Vec::new(), &[a, b], &mut join);
        assert_eq!(first.members, [(a, 1), (b, 2)]);
        assert_eq!(first.joined, [a, b]);
        assert!(first.left.is_empty());

        // b vanishes, c appears: a keeps its member (no new connections).
        let second = update(first.members, &[a, c], &mut join);
        assert_eq!(second.members, [(a, 1), (c, 3)]);
        assert_eq!(second.joined, [c]);
        assert_eq!(second.left, [(b, 2)]);

        // The same answer again changes nothing.
        let same = update(second.members, &[a, c], &mut join);
        assert_eq!(same.members, [(a, 1), (c, 3)]);
        assert!(same.joined.is_empty() && same.left.is_empty());
        assert_eq!(made, 3);
    }

    #[test]
    fn ip_literals_are_addresses_and_anything_else_a_name() {
        let host = |uri: &str| Host::of(&uri.parse().expect("a URI")).expect("a host");
        assert_eq!(
            host("http://127.0.0.1:50051"),
            Host::Address(addr("127.0.0.1:50051"))
        );
        assert_eq!(host("http://[::1]:9"), Host::Address(addr("[::1]:9")));
        assert_eq!(host("https://[::1]:9").name(), "::1");
        let name = host("https://chat.internal");
        assert_eq!(
            name,
            Host::Name {
                name: "chat.internal".into(),
                port: 443
            }
        );
        assert_eq!(name.name(), "chat.internal");
        assert_eq!(
            host("http://localhost:8"),
            Host::Name {
                name: "localhost".into(),
                port: 8
            }
        );
    }

    #[tokio::test]
    async fn a_lookup_is_sorted_once_each_and_empty_is_an_error() {
        let (a, b) = (addr("10.0.0.2:1"), addr("10.0.0.1:1"));
        let resolver = Resolver::from_fn(move |_, _| Box::pin(async move { Ok(vec![a, b, a]) }));
        assert_eq!(resolver.lookup("x", 1).await.expect("answers"), [b, a]);
        let nothing = Resolver::from_fn(|_, _| Box::pin(async { Ok(Vec::new()) }));
        assert!(nothing.lookup("x", 1).await.is_err());
    }
}
