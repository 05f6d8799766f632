//! `pingpong`: one client in one room, one message at a time: send, wait
//! for the own echo, send the next. The round-trip latency of an idle
//! system. A fanout of 1 room x 1 client with a window of 1.

use anyhow::bail;
use clap::Args;
use serde::Serialize;

use crate::fanout::{self, FanoutArgs, FanoutReport};
use crate::stats::{Latency, Reasons, Samples};

/// One client, one message in flight.
#[derive(Args, Clone, Debug, Serialize)]
pub struct PingpongArgs {
    /// WebSocket URL of the system under test.
    #[arg(long, default_value = "ws://127.0.0.1:8080/")]
    pub url: String,
    /// Stop after this many measured round trips (else at the end of --duration).
    #[arg(long, short = 'n', value_name = "N")]
    pub count: Option<u64>,
    /// Content bytes per message.
    #[arg(long, default_value_t = 100)]
    pub size: usize,
    /// Seconds of round trips before measuring.
    #[arg(long, default_value_t = 1.0, value_name = "SECS")]
    pub warmup: f64,
    /// Seconds measured (the cap when --count is given).
    #[arg(long, default_value_t = 10.0, value_name = "SECS")]
    pub duration: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct PingpongReport {
    pub scenario: &'static str,
    /// At least one round trip was measured (see `error` when not).
    pub ok: bool,
    /// Why the run failed: it measured no round trip.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub clean: bool,
    pub run: PingpongArgs,
    pub measured_secs: f64,
    /// Round trips per second.
    pub round_trips_per_sec: f64,
    /// Send to own echo.
    pub rtt: Latency,
    pub sent: u64,
    pub received: u64,
    pub lost: u64,
    pub duplicates: u64,
    pub out_of_order: u64,
    pub error_frames: u64,
    pub connections_ended: Reasons,
    pub error_samples: Samples,
}

pub async fn run(args: &PingpongArgs) -> anyhow::Result<PingpongReport> {
    if args.count == Some(0) {
        bail!("--count must be at least 1 (0 would measure nothing)");
    }
    let fanout = FanoutArgs {
        url: vec![args.url.clone()],
        rooms: 1,
        clients: 1,
        publishers: 1,
        rate: None,
        window: Some(1),
        size: args.size,
        warmup: args.warmup,
        duration: args.duration,
        drain_timeout: 10.0,
        concurrency: 1,
        source_ips: 0,
        setup_timeout: 30.0,
        ws_buffer: 4096,
        max_messages: args.count,
    };
    let f = fanout::run_labelled(&fanout, "pingpong").await?;
    Ok(report(args, f))
}

/// The fanout's figures under pingpong's names.
fn report(args: &PingpongArgs, f: FanoutReport) -> PingpongReport {
    let error = (f.confirm_latency.count == 0 || !f.ok).then(|| {
        format!(
            "measured nothing: no round trip in the measured window ({} sent, {} echoed in all; \
             {}s measured)",
            f.sent, f.received, f.measured_secs
        )
    });
    PingpongReport {
        scenario: "pingpong",
        ok: error.is_none(),
        error,
        clean: f.clean,
        run: args.clone(),
        measured_secs: f.measured_secs,
        round_trips_per_sec: f.confirmed_per_sec,
        rtt: f.confirm_latency,
        sent: f.sent,
        received: f.received,
        lost: f.lost,
        duplicates: f.duplicates,
        out_of_order: f.out_of_order,
        error_frames: f.error_frames,
        connections_ended: f.connections_ended,
        error_samples: f.error_samples,
    }
}

impl PingpongReport {
    pub fn summary(&self) -> String {
        let mut s = format!(
            "pingpong: {} round trips/s over {}s\n  rtt {}\n  sent {} received {} lost {} \
             duplicates {} out-of-order {} error frames {} connections ended: {}",
            self.round_trips_per_sec,
            self.measured_secs,
            self.rtt.line(),
            self.sent,
            self.received,
            self.lost,
            self.duplicates,
            self.out_of_order,
            self.error_frames,
            self.connections_ended.line(),
        );
        if !self.clean {
            s += "\n  WARNING: not clean";
        }
        if let Some(e) = &self.error {
            s += &format!("\n  FAILED: {e}");
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fanout::tests::one_client;

    fn args() -> PingpongArgs {
        PingpongArgs {
            url: "ws://127.0.0.1:9/".to_owned(),
            count: None,
            size: 100,
            warmup: 1.0,
            duration: 2.0,
        }
    }

    /// Item 16 of issue 8: the first round trip (in the warm-up) was the
    /// only one, and the report said ok, clean, 0 round trips/s.
    #[test]
    fn no_round_trip_measured_is_a_failure() {
        let r = report(&args(), one_client(1, 0));
        assert!(!r.ok, "{r:#?}");
        let error = r.error.as_deref().expect("a reason");
        assert!(
            error.starts_with(
                "measured nothing: no round trip in the measured window (1 sent, 1 echoed"
            ),
            "{error}"
        );
        assert!(r.summary().contains("FAILED: measured nothing"));
    }

    #[test]
    fn measured_round_trips_are_ok() {
        let r = report(&args(), one_client(30, 20));
        assert!(r.ok && r.clean && r.error.is_none(), "{r:#?}");
        assert_eq!(r.rtt.count, 20);
    }
}
