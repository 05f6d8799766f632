//! `pingpong`: one client in one room, one message at a time: send, wait
//! for the own echo, send the next. The round-trip latency of an idle
//! system. A fanout of 1 room x 1 client with a window of 1.

use clap::Args;
use serde::Serialize;

use crate::fanout::{self, FanoutArgs};
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
    pub ok: bool,
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
    let fanout = FanoutArgs {
        url: args.url.clone(),
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
    Ok(PingpongReport {
        scenario: "pingpong",
        ok: f.ok,
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
    })
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
        s
    }
}
