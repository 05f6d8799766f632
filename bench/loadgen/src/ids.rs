//! The process clock, run ids, and the message ids that carry everything a
//! receiver needs to account for a message without any shared map.
//!
//! A message id is 41 ASCII bytes, fixed width:
//!
//! ```text
//! 67a0c3e1f00d 0000004c4b40 m 000003 0000000017
//! └─ run (12) ─┘└ ts (12) ─┘ │ └pub(6)┘└counter(10)┘
//!                           kind: m = measured message, p = membership probe
//! ```
//!
//! - run: 8 hex digits of Unix seconds and 4 random hex digits, so ids of
//!   different runs never collide and later runs sort after earlier ones;
//! - ts: nanoseconds since the process-wide [`START`], in hex: the send time
//!   (open loop: the scheduled send time) that latency is measured from;
//! - pub: the publisher's global index (for a probe: the room's index);
//! - counter: the publisher's message counter, from 1, +1 per message (for a
//!   probe: the attempt).
//!
//! Ids therefore increase per publisher and are roughly time-ordered across
//! publishers, which keeps the server's unique index on (room, id, sender)
//! appending instead of inserting at random places.

use std::sync::LazyLock;
use std::time::{Duration, Instant};

/// Length in bytes of every id this tool sends.
pub const ID_LEN: usize = 41;
const RUN_LEN: usize = 12;
const TS_LEN: usize = 12;
const PUB_LEN: usize = 6;
const COUNTER_LEN: usize = 10;
/// The largest publisher index an id can carry.
pub const MAX_PUBLISHER: u32 = 999_999;

/// The instant every timestamp of this process counts from.
pub static START: LazyLock<Instant> = LazyLock::new(Instant::now);

/// Nanoseconds since [`START`].
#[inline]
pub fn now_ns() -> u64 {
    // 2^64 ns is 584 years: the cast cannot truncate in practice.
    START.elapsed().as_nanos() as u64
}

/// The tokio instant of a timestamp from [`now_ns`].
pub fn instant_at(ns: u64) -> tokio::time::Instant {
    tokio::time::Instant::from_std(*START + Duration::from_nanos(ns))
}

/// Seconds as nanoseconds (negative and NaN count as 0).
pub fn secs_to_ns(secs: f64) -> u64 {
    if secs.is_finite() && secs > 0.0 {
        (secs * 1e9) as u64
    } else {
        0
    }
}

/// What a message is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A measured message of a publisher.
    Message,
    /// A probe proving that every member of a room has joined.
    Probe,
}

/// The prefix shared by every id of one run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunId([u8; RUN_LEN]);

impl RunId {
    /// A fresh run id: Unix seconds and 16 random bits.
    pub fn new() -> RunId {
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let mut bytes = [0u8; RUN_LEN];
        write_hex(&mut bytes[..8], secs & 0xffff_ffff);
        write_hex(&mut bytes[8..], u64::from(fastrand::u16(..)));
        RunId(bytes)
    }

    pub fn as_str(&self) -> &str {
        // Only ASCII hex digits are ever written into it.
        std::str::from_utf8(&self.0).unwrap_or("000000000000")
    }
}

impl Default for RunId {
    fn default() -> Self {
        RunId::new()
    }
}

/// A parsed id of this run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MessageId {
    pub ts_ns: u64,
    pub kind: Kind,
    pub publisher: u32,
    pub counter: u64,
}

impl MessageId {
    /// Appends the id's 41 bytes to `out`.
    pub fn push_to(&self, run: &RunId, out: &mut String) {
        let mut buf = [0u8; ID_LEN];
        buf[..RUN_LEN].copy_from_slice(&run.0);
        let mut at = RUN_LEN;
        write_hex(&mut buf[at..at + TS_LEN], self.ts_ns.min((1 << 48) - 1));
        at += TS_LEN;
        buf[at] = match self.kind {
            Kind::Message => b'm',
            Kind::Probe => b'p',
        };
        at += 1;
        write_dec(
            &mut buf[at..at + PUB_LEN],
            u64::from(self.publisher.min(MAX_PUBLISHER)),
        );
        at += PUB_LEN;
        write_dec(
            &mut buf[at..at + COUNTER_LEN],
            self.counter.min(9_999_999_999),
        );
        // Every byte written above is an ASCII digit or letter.
        out.push_str(std::str::from_utf8(&buf).unwrap_or(""));
    }

    /// The id as a string.
    pub fn to_string(&self, run: &RunId) -> String {
        let mut s = String::with_capacity(ID_LEN);
        self.push_to(run, &mut s);
        s
    }

    /// Parses an id received from a peer: `None` if it is not an id of this
    /// run (another run's, another client's, or garbage).
    #[inline]
    pub fn parse(run: &RunId, id: &str) -> Option<MessageId> {
        let b = id.as_bytes();
        if b.len() != ID_LEN || b[..RUN_LEN] != run.0 {
            return None;
        }
        let mut at = RUN_LEN;
        let ts_ns = parse_hex(&b[at..at + TS_LEN])?;
        at += TS_LEN;
        let kind = match b[at] {
            b'm' => Kind::Message,
            b'p' => Kind::Probe,
            _ => return None,
        };
        at += 1;
        let publisher = parse_dec(&b[at..at + PUB_LEN])? as u32;
        at += PUB_LEN;
        let counter = parse_dec(&b[at..at + COUNTER_LEN])?;
        Some(MessageId {
            ts_ns,
            kind,
            publisher,
            counter,
        })
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

fn write_hex(out: &mut [u8], mut v: u64) {
    for slot in out.iter_mut().rev() {
        *slot = HEX[(v & 0xf) as usize];
        v >>= 4;
    }
}

fn write_dec(out: &mut [u8], mut v: u64) {
    for slot in out.iter_mut().rev() {
        *slot = b'0' + (v % 10) as u8;
        v /= 10;
    }
}

#[inline]
fn parse_hex(digits: &[u8]) -> Option<u64> {
    digits.iter().try_fold(0u64, |acc, &c| {
        let d = match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            _ => return None,
        };
        Some(acc << 4 | u64::from(d))
    })
}

#[inline]
fn parse_dec(digits: &[u8]) -> Option<u64> {
    digits.iter().try_fold(0u64, |acc, &c| {
        c.is_ascii_digit().then(|| acc * 10 + u64::from(c - b'0'))
    })
}

/// `len` bytes of printable ASCII message content (letters and digits only,
/// so it never needs escaping in JSON).
pub fn content(len: usize) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    (0..len.max(1))
        .map(|_| char::from(ALPHABET[fastrand::usize(..ALPHABET.len())]))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_have_a_fixed_width() {
        let run = RunId::new();
        let id = MessageId {
            ts_ns: 123_456_789_012,
            kind: Kind::Message,
            publisher: 42,
            counter: 7,
        };
        let s = id.to_string(&run);
        assert_eq!(s.len(), ID_LEN);
        assert!(s.starts_with(run.as_str()));
        assert_eq!(MessageId::parse(&run, &s), Some(id));
        let probe = MessageId {
            kind: Kind::Probe,
            ..id
        };
        assert_eq!(MessageId::parse(&run, &probe.to_string(&run)), Some(probe));
    }

    #[test]
    fn ids_increase_with_time_then_counter() {
        let run = RunId::new();
        let a = MessageId {
            ts_ns: 1_000,
            kind: Kind::Message,
            publisher: 900,
            counter: 99,
        };
        let b = MessageId {
            ts_ns: 1_001,
            publisher: 1,
            counter: 1,
            ..a
        };
        let c = MessageId { counter: 2, ..b };
        assert!(a.to_string(&run) < b.to_string(&run));
        assert!(b.to_string(&run) < c.to_string(&run));
    }

    #[test]
    fn foreign_and_malformed_ids_are_rejected() {
        let run = RunId::new();
        let other = RunId(*b"ffffffffffff");
        let id = MessageId {
            ts_ns: 5,
            kind: Kind::Message,
            publisher: 1,
            counter: 1,
        };
        assert_eq!(MessageId::parse(&run, &id.to_string(&other)), None);
        assert_eq!(MessageId::parse(&run, "msg1"), None);
        let mut bad = id.to_string(&run);
        bad.replace_range(30..31, "x");
        assert_eq!(MessageId::parse(&run, &bad), None);
        // Multi-byte characters of the right byte length must not panic.
        let weird = format!("{}{}x", run.as_str(), "é".repeat(14));
        assert_eq!(weird.len(), ID_LEN);
        assert_eq!(MessageId::parse(&run, &weird), None);
    }

    #[test]
    fn content_is_printable_and_sized() {
        let c = content(300);
        assert_eq!(c.len(), 300);
        assert!(c.bytes().all(|b| b.is_ascii_alphanumeric()));
        assert_eq!(content(0).len(), 1);
    }
}
