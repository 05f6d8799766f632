//! Caps on open connections: a count per key (the client's IP, the whole
//! gateway, and later a user), taken before the upgrade and given back when
//! the [`Permit`] is dropped, whatever ends the session.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};

/// Default most WebSocket sessions open at once on one gateway. An idle
/// session costs ~34 KiB across gateway and server (BENCHMARKS.md), so
/// 10,000 is ~350 MB: a small machine's worth. Past that a 503 that a
/// client can retry elsewhere beats running out of memory for everyone.
/// Load tests raise it (bench/ passes its own).
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// Default most sessions from one client address (one IPv6 /64). One person
/// opens a few tabs; an office or a carrier NAT puts a few hundred people
/// behind one address. 256 lets those through and stops one host from
/// taking the whole gateway. Behind a reverse proxy every client has the
/// proxy's address: raise it to `--max-connections` there.
pub const DEFAULT_MAX_CONNECTIONS_PER_IP: usize = 256;
/// Default most sessions one user (a token's `sub`) may have open, in jwt
/// mode. A person with a phone, a laptop and a dozen tabs stays well under
/// it; a leaked token cannot take the gateway with thousands.
pub const DEFAULT_MAX_CONNECTIONS_PER_USER: usize = 32;

/// Open sessions counted by key, at most `max` per key. Cheap to clone.
///
/// A std mutex over a map: it is taken once when a session opens and once
/// when it closes, never across an `.await`, so it is never contended for
/// long; the per-frame path never touches it.
pub struct ConnectionLimit<K: Hash + Eq + Clone> {
    inner: Arc<Inner<K>>,
}

struct Inner<K> {
    max: usize,
    open: Mutex<HashMap<K, usize>>,
}

impl<K: Hash + Eq + Clone> Clone for ConnectionLimit<K> {
    fn clone(&self) -> Self {
        ConnectionLimit {
            inner: self.inner.clone(),
        }
    }
}

/// `key` already holds `max` permits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Full {
    pub max: usize,
}

/// One open session counted under its key; dropping it gives the place back.
pub struct Permit<K: Hash + Eq + Clone> {
    limit: ConnectionLimit<K>,
    key: K,
}

impl<K: Hash + Eq + Clone> ConnectionLimit<K> {
    pub fn new(max: usize) -> Self {
        ConnectionLimit {
            inner: Arc::new(Inner {
                max,
                open: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// A place under `key`, or [`Full`] if it already has `max`.
    pub fn try_acquire(&self, key: K) -> Result<Permit<K>, Full> {
        let mut open = self.lock();
        let count = open.entry(key.clone()).or_insert(0);
        if *count >= self.inner.max {
            let full = Full {
                max: self.inner.max,
            };
            if *count == 0 {
                open.remove(&key);
            }
            return Err(full);
        }
        *count += 1;
        Ok(Permit {
            limit: self.clone(),
            key,
        })
    }

    /// How many permits `key` holds now.
    pub fn open(&self, key: &K) -> usize {
        self.lock().get(key).copied().unwrap_or(0)
    }

    // A panic while holding the lock leaves the counts consistent (each
    // change is one statement), so a poisoned lock is still good.
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<K, usize>> {
        self.inner
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

impl<K: Hash + Eq + Clone> Drop for Permit<K> {
    fn drop(&mut self) {
        let mut open = self.limit.lock();
        if let Some(count) = open.get_mut(&self.key) {
            *count -= 1;
            // Keys without sessions go, so the map holds only current clients.
            if *count == 0 {
                open.remove(&self.key);
            }
        }
    }
}

/// The key a client address is counted under: the address itself for IPv4
/// (an IPv4-mapped IPv6 address counts as its IPv4 one), its /64 for IPv6,
/// since one host commonly holds a whole /64 and could pick a fresh address
/// for every connection.
pub fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let bits = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(bits.into())
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_holds_at_most_max_permits_and_dropping_one_frees_its_place() {
        let limit = ConnectionLimit::new(2);
        let a1 = limit.try_acquire("a").unwrap();
        let _a2 = limit.try_acquire("a").unwrap();
        assert_eq!(limit.try_acquire("a").err(), Some(Full { max: 2 }));
        // Another key has its own count.
        let _b = limit.try_acquire("b").unwrap();
        drop(a1);
        assert_eq!(limit.open(&"a"), 1);
        let _a3 = limit.try_acquire("a").unwrap();
        assert_eq!(limit.open(&"a"), 2);
    }

    #[test]
    fn keys_without_sessions_are_forgotten() {
        let limit = ConnectionLimit::new(1);
        drop(limit.try_acquire(1u32).unwrap());
        assert!(limit.lock().is_empty());
        let zero = ConnectionLimit::<u32>::new(0);
        assert!(zero.try_acquire(1).is_err());
        assert!(zero.lock().is_empty());
    }

    #[test]
    fn ipv6_clients_are_counted_by_their_64_and_mapped_ipv4_as_ipv4() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(client_key(ip("192.0.2.7")), ip("192.0.2.7"));
        assert_eq!(client_key(ip("::ffff:192.0.2.7")), ip("192.0.2.7"));
        assert_eq!(
            client_key(ip("2001:db8:1:2:aaaa:bbbb:cccc:dddd")),
            ip("2001:db8:1:2::")
        );
        assert_ne!(
            client_key(ip("2001:db8:1:2::1")),
            client_key(ip("2001:db8:1:3::1"))
        );
    }
}
