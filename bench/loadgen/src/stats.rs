//! Counting and latency recording without a hot shared lock, and the figures
//! the reports are made of.
//!
//! - [`Sharded`]: a counter split over cache-line-padded atomics; each client
//!   adds to its own shard (relaxed), a reader sums them.
//! - [`HistShards`] + [`LatBuf`]: each client buffers its latency samples and
//!   records them into one of a few HDR histograms 256 at a time, so a lock
//!   is taken once per 256 samples, and rarely contended.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use hdrhistogram::Histogram;
use serde::Serialize;

/// Highest latency recorded, in ns (60 s); longer ones are recorded as this.
pub const MAX_LATENCY_NS: u64 = 60_000_000_000;
const SHARDS: usize = 16;
const HIST_SHARDS: usize = 8;
const LATBUF_CAP: usize = 256;

#[repr(align(128))]
#[derive(Default)]
struct Padded(AtomicU64);

/// A counter that many tasks add to without sharing a cache line.
pub struct Sharded([Padded; SHARDS]);

impl Default for Sharded {
    fn default() -> Self {
        Sharded(std::array::from_fn(|_| Padded::default()))
    }
}

impl Sharded {
    #[inline]
    pub fn add(&self, shard: usize, n: u64) {
        self.0[shard % SHARDS].0.fetch_add(n, Ordering::Relaxed);
    }

    pub fn sum(&self) -> u64 {
        self.0.iter().map(|p| p.0.load(Ordering::Relaxed)).sum()
    }
}

/// A new latency histogram: 1 ns to 60 s, 3 significant digits.
pub fn new_histogram() -> Histogram<u64> {
    // Constant, valid bounds: this cannot fail.
    Histogram::new_with_bounds(1, MAX_LATENCY_NS, 3).expect("valid histogram bounds")
}

/// A few histograms that clients record into in batches.
pub struct HistShards(Box<[Mutex<Histogram<u64>>]>);

impl Default for HistShards {
    fn default() -> Self {
        HistShards(
            (0..HIST_SHARDS)
                .map(|_| Mutex::new(new_histogram()))
                .collect(),
        )
    }
}

impl HistShards {
    fn record(&self, shard: usize, values: &[u64]) {
        let mut h = match self.0[shard % self.0.len()].lock() {
            Ok(h) => h,
            Err(poisoned) => poisoned.into_inner(),
        };
        for &v in values {
            h.saturating_record(v.clamp(1, MAX_LATENCY_NS));
        }
    }

    /// All shards merged.
    pub fn merged(&self) -> Histogram<u64> {
        let mut all = new_histogram();
        for shard in self.0.iter() {
            let h = match shard.lock() {
                Ok(h) => h,
                Err(poisoned) => poisoned.into_inner(),
            };
            // Same bounds on both sides: adding cannot fail.
            let _ = all.add(&*h);
        }
        all
    }
}

/// One client's buffer of latency samples (ns) for one histogram.
#[derive(Default)]
pub struct LatBuf(Vec<u64>);

impl LatBuf {
    #[inline]
    pub fn push(&mut self, shards: &HistShards, shard: usize, ns: u64) {
        if self.0.capacity() == 0 {
            self.0.reserve_exact(LATBUF_CAP);
        }
        self.0.push(ns);
        if self.0.len() == LATBUF_CAP {
            self.flush(shards, shard);
        }
    }

    pub fn flush(&mut self, shards: &HistShards, shard: usize) {
        if !self.0.is_empty() {
            shards.record(shard, &self.0);
            self.0.clear();
        }
    }
}

/// Percentiles of a latency histogram, in microseconds.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Latency {
    pub count: u64,
    pub mean_us: f64,
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
}

impl Latency {
    pub fn of(h: &Histogram<u64>) -> Latency {
        if h.is_empty() {
            return Latency::default();
        }
        let us = |ns: u64| (ns as f64 / 100.0).round() / 10.0;
        Latency {
            count: h.len(),
            mean_us: (h.mean() / 100.0).round() / 10.0,
            p50_us: us(h.value_at_quantile(0.50)),
            p90_us: us(h.value_at_quantile(0.90)),
            p99_us: us(h.value_at_quantile(0.99)),
            p999_us: us(h.value_at_quantile(0.999)),
            max_us: us(h.max()),
        }
    }

    /// One line for the human summary.
    pub fn line(&self) -> String {
        if self.count == 0 {
            return "no samples".to_owned();
        }
        format!(
            "p50 {} p90 {} p99 {} p99.9 {} max {} (us, n={})",
            self.p50_us, self.p90_us, self.p99_us, self.p999_us, self.max_us, self.count
        )
    }
}

/// Counts of things by a short reason (connect failures, close codes...).
#[derive(Clone, Debug, Default, Serialize)]
#[serde(transparent)]
pub struct Reasons(pub BTreeMap<String, u64>);

impl Reasons {
    pub fn add(&mut self, reason: impl Into<String>, n: u64) {
        *self.0.entry(reason.into()).or_default() += n;
    }

    pub fn merge(&mut self, other: Reasons) {
        for (k, v) in other.0 {
            self.add(k, v);
        }
    }

    pub fn total(&self) -> u64 {
        self.0.values().sum()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn line(&self) -> String {
        if self.0.is_empty() {
            return "none".to_owned();
        }
        self.0
            .iter()
            .map(|(k, v)| format!("{k}: {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// `count` per second over `ns`, rounded to 0.1.
pub fn per_sec(count: u64, ns: u64) -> f64 {
    if ns == 0 {
        return 0.0;
    }
    (count as f64 * 1e9 / ns as f64 * 10.0).round() / 10.0
}

/// Keeps the first few distinct examples of something that went wrong.
#[derive(Clone, Debug, Default, Serialize)]
#[serde(transparent)]
pub struct Samples(pub Vec<String>);

impl Samples {
    pub fn add(&mut self, s: impl Into<String>) {
        if self.0.len() < 5 {
            let s = s.into();
            if !self.0.contains(&s) {
                self.0.push(s);
            }
        }
    }

    pub fn merge(&mut self, other: Samples) {
        for s in other.0 {
            self.add(s);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batched_samples_all_reach_the_histograms() {
        let shards = HistShards::default();
        let mut a = LatBuf::default();
        let mut b = LatBuf::default();
        for i in 0..1000u64 {
            a.push(&shards, 0, 1_000 + i);
            b.push(&shards, 1, 2_000_000);
        }
        a.flush(&shards, 0);
        b.flush(&shards, 1);
        let h = shards.merged();
        assert_eq!(h.len(), 2000);
        let l = Latency::of(&h);
        // 3 significant digits: within 0.1%.
        assert!((l.max_us - 2000.0).abs() <= 2.0, "{l:?}");
        assert!(l.p50_us >= 1.0 && l.p50_us <= 2.0, "{l:?}");
    }

    #[test]
    fn sharded_counter_sums() {
        let c = Sharded::default();
        for i in 0..100 {
            c.add(i, 2);
        }
        assert_eq!(c.sum(), 200);
    }

    #[test]
    fn rates() {
        assert_eq!(per_sec(500, 2_000_000_000), 250.0);
        assert_eq!(per_sec(5, 0), 0.0);
    }
}
