//! A log line that may come thousands of times a second (a refusal whose
//! cause the client chooses, an outage every session notices at once):
//! logged at most once per interval, the rest at debug, with a count of
//! what was held back.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// At most one line of a kind per this interval, with the count of those
/// only logged at debug since.
const LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Logs at its level at most once per [`LOG_INTERVAL`], at debug otherwise.
/// Lock-free: two atomics.
pub(super) struct QuietLog {
    start: Instant,
    /// Milliseconds since `start` before which info lines are held back.
    next_info: AtomicU64,
    suppressed: AtomicU64,
}

impl QuietLog {
    pub(super) fn new() -> QuietLog {
        QuietLog {
            start: Instant::now(),
            next_info: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// Calls `info` with the count of lines held back since the last one,
    /// or `debug` if one was logged within the interval.
    pub(super) fn log(&self, info: impl FnOnce(u64), debug: impl FnOnce()) {
        let now = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        let next = self.next_info.load(Ordering::Relaxed);
        let interval = u64::try_from(LOG_INTERVAL.as_millis()).unwrap_or(u64::MAX);
        if now >= next
            && self
                .next_info
                .compare_exchange(
                    next,
                    now.saturating_add(interval),
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_ok()
        {
            info(self.suppressed.swap(0, Ordering::Relaxed));
        } else {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            debug();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_logs_one_info_line_per_interval() {
        let log = QuietLog::new();
        let (mut infos, mut debugs) = (Vec::new(), 0);
        for _ in 0..1000 {
            log.log(|suppressed| infos.push(suppressed), || debugs += 1);
        }
        assert_eq!(infos, vec![0]);
        assert_eq!(debugs, 999);
        // Once the interval is over, the next one says how many it held back.
        log.next_info.store(0, Ordering::Relaxed);
        log.log(|suppressed| infos.push(suppressed), || debugs += 1);
        assert_eq!(infos, vec![0, 999]);
    }
}
