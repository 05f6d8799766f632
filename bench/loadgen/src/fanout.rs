//! `fanout`: R rooms of C WebSocket clients, P of them publishing; every
//! member receives every message of its room. Throughput, end-to-end
//! latency and an exact account of every delivery.

use std::time::Duration;

use anyhow::bail;
use clap::{ArgGroup, Args};
use serde::Serialize;

use crate::ids::{self, secs_to_ns};
use crate::stats::{Latency, Reasons, Samples, per_sec};
use crate::swarm::{self, Layout, Mode, RunPlan, RunTotals, SetupReport, Swarm};
use crate::ws::{self, Target};

/// Fan-out: R rooms x C clients, P publishers per room.
#[derive(Args, Clone, Debug, Serialize)]
#[command(group(ArgGroup::new("load").required(true).args(["rate", "window"])))]
pub struct FanoutArgs {
    /// WebSocket URL of the system under test; repeat it (or separate
    /// with commas) to spread each room's clients over several gateways:
    /// the client in slot k of its room connects to URL k mod N. The JSON
    /// gives them as one comma-separated string.
    #[arg(
        long,
        value_delimiter = ',',
        num_args = 1,
        default_value = "ws://127.0.0.1:8080/"
    )]
    #[serde(serialize_with = "comma_separated")]
    pub url: Vec<String>,
    /// Number of rooms.
    #[arg(long, default_value_t = 10)]
    pub rooms: u32,
    /// Clients per room (publishers included).
    #[arg(long, default_value_t = 10)]
    pub clients: u32,
    /// Publishers per room (the first P clients of each room).
    #[arg(long, default_value_t = 1)]
    pub publishers: u32,
    /// Open loop: total messages per second offered over all publishers,
    /// each publisher on its own evenly spaced schedule (random phase).
    /// Latency counts from the scheduled send time.
    #[arg(long, value_name = "MSGS_PER_SEC")]
    pub rate: Option<f64>,
    /// Closed loop: messages each publisher keeps in flight; the next is
    /// sent when the publisher's own echo arrives (for saturation).
    #[arg(long, value_name = "W")]
    pub window: Option<u32>,
    /// Content bytes per message (printable ASCII).
    #[arg(long, default_value_t = 100)]
    pub size: usize,
    /// Seconds of load before measuring.
    #[arg(long, default_value_t = 2.0, value_name = "SECS")]
    pub warmup: f64,
    /// Seconds measured.
    #[arg(long, default_value_t = 10.0, value_name = "SECS")]
    pub duration: f64,
    /// After publishers stop, how long to wait for missing deliveries
    /// (ends early once everything arrived).
    #[arg(long, default_value_t = 10.0, value_name = "SECS")]
    pub drain_timeout: f64,
    /// Connection handshakes in progress at once.
    #[arg(long, default_value_t = 256)]
    pub concurrency: usize,
    /// Spread connections over source addresses 127.0.0.2..=127.0.0.(1+N)
    /// (0: let the system choose). Only for a loopback target.
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub source_ips: u8,
    /// Seconds allowed for every member of every room to be confirmed.
    #[arg(long, default_value_t = 60.0, value_name = "SECS")]
    pub setup_timeout: f64,
    /// WebSocket read/write buffer per connection, bytes (tungstenite
    /// zero-fills the whole read buffer before every read: keep it small).
    #[arg(long, default_value_t = 4096)]
    pub ws_buffer: usize,
    /// Stop each publisher after this many measured messages (the run also
    /// ends at the end of --duration).
    #[arg(long, value_name = "N")]
    pub max_messages: Option<u64>,
}

/// The figures of a fanout run (all rates over the measured window).
#[derive(Clone, Debug, Serialize)]
pub struct FanoutReport {
    pub scenario: &'static str,
    /// The run measured something (see `error` when not).
    pub ok: bool,
    /// Why the run failed: it measured nothing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// No loss, duplicate, reordering, error frame or dropped connection.
    pub clean: bool,
    pub run: FanoutArgs,
    pub mode: &'static str,
    pub setup: SetupReport,
    /// Length of the measured window in seconds.
    pub measured_secs: f64,
    /// Messages sent by publishers per second.
    pub offered_per_sec: f64,
    /// Publishers' own echoes received per second.
    pub confirmed_per_sec: f64,
    /// chat_message frames received per second by all members, senders included.
    pub delivered_per_sec: f64,
    /// Send to arrival at the other members, messages sent in the window.
    pub delivery_latency: Latency,
    /// `delivery_latency` of the members on the publisher's URL.
    pub delivery_latency_same_url: Latency,
    /// `delivery_latency` of the members on another URL than the
    /// publisher's (no samples with one URL).
    pub delivery_latency_other_url: Latency,
    /// Send to the sender's own echo.
    pub confirm_latency: Latency,
    /// Open loop: how late the tool sent after the schedule (its own
    /// lateness; large values mean the tool, not the target, is saturated).
    pub send_lag: Latency,
    pub sent: u64,
    pub sent_measured: u64,
    /// Each message sent times the members of its room.
    pub expected: u64,
    /// Distinct deliveries (every member, sender included).
    pub received: u64,
    pub lost: u64,
    pub duplicates: u64,
    /// Deliveries that were not the next of their publisher for their receiver.
    pub out_of_order: u64,
    /// chat_message frames of another run or another room.
    pub foreign: u64,
    pub drained: bool,
    pub drain_secs: f64,
    pub error_frames: u64,
    pub unparsable_frames: u64,
    /// Connections that ended before the run did, by reason (close codes).
    pub connections_ended: Reasons,
    pub error_samples: Samples,
}

fn comma_separated<S: serde::Serializer>(urls: &[String], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&urls.join(","))
}

fn validate(args: &FanoutArgs) -> anyhow::Result<()> {
    if args.url.is_empty() {
        bail!("--url is required");
    }
    if args.rooms == 0 || args.clients == 0 {
        bail!("--rooms and --clients must be at least 1");
    }
    if args.publishers == 0 || args.publishers > args.clients {
        bail!("--publishers must be between 1 and --clients");
    }
    if u64::from(args.rooms) * u64::from(args.publishers) > u64::from(ids::MAX_PUBLISHER) {
        bail!("too many publishers");
    }
    if args.rate.is_some_and(|r| !(r.is_finite() && r > 0.0)) {
        bail!("--rate must be positive");
    }
    if args.window == Some(0) {
        bail!("--window must be at least 1");
    }
    if args.max_messages == Some(0) {
        bail!("--max-messages must be at least 1 (0 would measure nothing)");
    }
    if args.duration <= 0.0 {
        bail!("--duration must be positive");
    }
    if args.size == 0 || args.size > 1 << 20 {
        bail!("--size must be between 1 and 1 MiB");
    }
    let fds = u64::from(args.rooms) * u64::from(args.clients) + 64;
    let limit = crate::sys::nofile_limit();
    if limit > 0 && fds > limit {
        bail!("{fds} file descriptors needed, the limit is {limit} (ulimit -n)");
    }
    Ok(())
}

/// Runs a fanout; an error if the setup failed.
pub async fn run(args: &FanoutArgs) -> anyhow::Result<FanoutReport> {
    run_labelled(args, "fanout").await
}

pub(crate) async fn run_labelled(
    args: &FanoutArgs,
    label: &'static str,
) -> anyhow::Result<FanoutReport> {
    validate(args)?;
    let publishers = args.rooms * args.publishers;
    let mode = match (args.rate, args.window) {
        (Some(rate), _) => Mode::Rate {
            interval_ns: ((f64::from(publishers) * 1e9 / rate) as u64).max(1),
        },
        (None, Some(w)) => Mode::Window(w),
        (None, None) => bail!("one of --rate or --window is required"),
    };
    let mut targets = Vec::with_capacity(args.url.len());
    for url in &args.url {
        targets.push(Target::resolve(url).await?);
    }
    let spec = swarm::Spec {
        targets,
        clients: args.rooms * args.clients,
        rooms: args.rooms,
        layout: Layout::Blocks {
            per_room: args.clients,
        },
        run: Some(RunPlan {
            mode,
            publishers_per_room: args.publishers,
            size: args.size,
            warmup_ns: secs_to_ns(args.warmup),
            duration_ns: secs_to_ns(args.duration),
            max_measured: args.max_messages,
            drain_timeout: Duration::from_secs_f64(args.drain_timeout.max(0.0)),
        }),
        source_ips: ws::source_ips(args.source_ips),
        concurrency: args.concurrency,
        connect_timeout: Duration::from_secs(30),
        setup_timeout: Duration::from_secs_f64(args.setup_timeout.max(0.1)),
        ws_buffer: args.ws_buffer.max(1024),
        require_all: true,
        label,
    };
    let swarm = Swarm::start(spec).await?;
    let setup = swarm.setup.clone();
    let members = u64::from(swarm.members_per_room());
    let totals = swarm.run().await?;
    Ok(report(args, mode, setup, members, totals))
}

pub(crate) fn report(
    args: &FanoutArgs,
    mode: Mode,
    setup: SetupReport,
    members: u64,
    t: RunTotals,
) -> FanoutReport {
    let sum = |f: fn(&swarm::ClientStats) -> u64| t.clients.iter().map(f).sum::<u64>();
    let sent = sum(|c| c.sent);
    let received = sum(|c| c.unique);
    let expected = sent * members;
    let mut connections_ended = Reasons::default();
    let mut error_samples = Samples::default();
    for c in &t.clients {
        if let Some(reason) = &c.ended {
            connections_ended.add(reason.clone(), 1);
        }
        error_samples.merge(c.error_samples.clone());
    }
    let mut r = FanoutReport {
        scenario: "fanout",
        ok: true,
        error: None,
        clean: false,
        run: args.clone(),
        mode: match mode {
            Mode::Rate { .. } => "open",
            Mode::Window(_) => "closed",
        },
        setup,
        measured_secs: swarm::round3(t.measured_ns as f64 / 1e9),
        offered_per_sec: per_sec(sum(|c| c.sent_measured), t.measured_ns),
        confirmed_per_sec: per_sec(sum(|c| c.confirmed_measured), t.measured_ns),
        delivered_per_sec: per_sec(sum(|c| c.delivered_measured), t.measured_ns),
        delivery_latency: Latency::of(&t.delivery),
        delivery_latency_same_url: Latency::of(&t.delivery_same_url),
        delivery_latency_other_url: Latency::of(&t.delivery_other_url),
        confirm_latency: Latency::of(&t.confirm),
        send_lag: Latency::of(&t.send_lag),
        sent,
        sent_measured: sum(|c| c.sent_measured),
        expected,
        received,
        lost: expected.saturating_sub(received),
        duplicates: sum(|c| c.duplicates),
        out_of_order: sum(|c| c.out_of_order),
        foreign: sum(|c| c.foreign),
        drained: t.drained,
        drain_secs: t.drain_secs,
        error_frames: sum(|c| c.error_frames),
        unparsable_frames: sum(|c| c.unparsable_frames),
        connections_ended,
        error_samples,
    };
    r.clean = r.lost == 0
        && r.duplicates == 0
        && r.out_of_order == 0
        && r.foreign == 0
        && r.error_frames == 0
        && r.unparsable_frames == 0
        && r.connections_ended.is_empty()
        && r.received == r.expected;
    r.error = nothing_measured(&r, members, sum(|c| c.delivered_measured));
    r.ok = r.error.is_none();
    r
}

/// Why a run's figures are empty, if they are: nothing sent, delivered or
/// timed in the measured window. Such a run must fail, not report 0/s.
fn nothing_measured(r: &FanoutReport, members: u64, delivered: u64) -> Option<String> {
    let missing = if r.sent_measured == 0 {
        "no message was sent in the measured window"
    } else if delivered == 0 {
        "no message arrived in the measured window"
    } else if r.confirm_latency.count == 0 {
        "no publisher got the echo of a message sent in the measured window"
    } else if members > 1 && r.delivery_latency.count == 0 {
        "no member got another's message sent in the measured window"
    } else {
        return None;
    };
    Some(format!(
        "measured nothing: {missing} ({} sent in all, {} of {} deliveries; {}s measured)",
        r.sent, r.received, r.expected, r.measured_secs
    ))
}

impl FanoutReport {
    /// The human summary (stderr).
    pub fn summary(&self) -> String {
        let a = &self.run;
        let load = match self.mode {
            "open" => format!("open loop at {} msgs/s", a.rate.unwrap_or_default()),
            _ => format!("closed loop, window {}", a.window.unwrap_or_default()),
        };
        let mut s = format!(
            "fanout {} rooms x {} clients ({} publishers each), {load}, {} B, {}s measured\n\
             \x20 offered   {:>12} msgs/s\n\
             \x20 confirmed {:>12} msgs/s   confirm  {}\n\
             \x20 delivered {:>12} msgs/s   delivery {}\n",
            a.rooms,
            a.clients,
            a.publishers,
            a.size,
            self.measured_secs,
            self.offered_per_sec,
            self.confirmed_per_sec,
            self.confirm_latency.line(),
            self.delivered_per_sec,
            self.delivery_latency.line(),
        );
        if a.url.len() > 1 {
            s += &format!(
                "  delivery, same URL as the publisher    {}\n  delivery, other URL than the publisher  {}\n",
                self.delivery_latency_same_url.line(),
                self.delivery_latency_other_url.line(),
            );
        }
        if self.mode == "open" {
            s += &format!("  send lag (tool)            {}\n", self.send_lag.line());
        }
        s += &format!(
            "  deliveries: expected {} received {} lost {} duplicates {} out-of-order {} \
             (drain {}s{})\n  errors: {} error frames, {} unparsable, {} foreign, connections ended: {}",
            self.expected,
            self.received,
            self.lost,
            self.duplicates,
            self.out_of_order,
            self.drain_secs,
            if self.drained { "" } else { ", TIMED OUT" },
            self.error_frames,
            self.unparsable_frames,
            self.foreign,
            self.connections_ended.line(),
        );
        if !self.error_samples.0.is_empty() {
            s += &format!("\n  samples: {}", self.error_samples.0.join(" | "));
        }
        if !self.clean {
            s += "\n  WARNING: not clean: see the figures above";
        }
        if let Some(e) = &self.error {
            s += &format!("\n  FAILED: {e}");
        }
        s
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::stats::new_histogram;
    use crate::swarm::ClientStats;

    fn args() -> FanoutArgs {
        FanoutArgs {
            url: vec!["ws://127.0.0.1:9/".to_owned()],
            rooms: 1,
            clients: 1,
            publishers: 1,
            rate: None,
            window: Some(1),
            size: 100,
            warmup: 1.0,
            duration: 2.0,
            drain_timeout: 10.0,
            concurrency: 1,
            source_ips: 0,
            setup_timeout: 30.0,
            ws_buffer: 4096,
            max_messages: None,
        }
    }

    /// A fanout of one client whose publisher made `sent` round trips,
    /// `measured` of them in the measured window.
    pub(crate) fn one_client(sent: u64, measured: u64) -> FanoutReport {
        let mut confirm = new_histogram();
        for _ in 0..measured {
            confirm.record(100_000).expect("in range");
        }
        let client = ClientStats {
            connected: true,
            sent,
            sent_measured: measured,
            confirmed: sent,
            confirmed_measured: measured,
            delivered_measured: measured,
            unique: sent,
            ..ClientStats::default()
        };
        let totals = RunTotals {
            clients: vec![client],
            measured_ns: 2_000_000_000,
            drain_secs: 0.0,
            drained: true,
            delivery: new_histogram(),
            delivery_same_url: new_histogram(),
            delivery_other_url: new_histogram(),
            confirm,
            send_lag: new_histogram(),
        };
        report(&args(), Mode::Window(1), SetupReport::default(), 1, totals)
    }

    /// Item 16 of issue 8: one round trip in the warm-up, none measured,
    /// reported as `"ok": true, "clean": true` and 0/s.
    #[test]
    fn a_run_that_measured_nothing_fails() {
        let r = one_client(1, 0);
        assert!(r.clean, "nothing lost: clean, yet");
        assert!(!r.ok, "{r:#?}");
        let error = r.error.as_deref().expect("a reason");
        assert!(
            error.starts_with("measured nothing: no message was sent in the measured window"),
            "{error}"
        );
        assert!(r.summary().contains("FAILED: measured nothing"));
        let json: serde_json::Value =
            serde_json::from_str(&serde_json::to_string(&r).expect("json")).expect("parse");
        assert_eq!(json["ok"], false);
        assert_eq!(json["error"], error);
    }

    #[test]
    fn a_run_that_measured_something_is_ok() {
        let r = one_client(12, 8);
        assert!(r.ok && r.clean, "{r:#?}");
        assert_eq!(r.confirm_latency.count, 8);
        let json: serde_json::Value =
            serde_json::from_str(&serde_json::to_string(&r).expect("json")).expect("parse");
        assert_eq!(json["ok"], true);
        assert!(json.get("error").is_none(), "no error key: {json}");
    }

    #[test]
    fn members_that_received_nothing_of_the_window_fail_the_run() {
        // The publisher's echoes came back; the two other members got nothing.
        let r = {
            let mut confirm = new_histogram();
            confirm.record(100_000).expect("in range");
            let publisher = ClientStats {
                connected: true,
                sent: 1,
                sent_measured: 1,
                confirmed: 1,
                confirmed_measured: 1,
                delivered_measured: 1,
                unique: 1,
                ..ClientStats::default()
            };
            let member = || ClientStats {
                connected: true,
                ..ClientStats::default()
            };
            let totals = RunTotals {
                clients: vec![publisher, member(), member()],
                measured_ns: 1_000_000_000,
                drain_secs: 0.0,
                drained: false,
                delivery: new_histogram(),
                delivery_same_url: new_histogram(),
                delivery_other_url: new_histogram(),
                confirm,
                send_lag: new_histogram(),
            };
            report(&args(), Mode::Window(1), SetupReport::default(), 3, totals)
        };
        assert!(!r.ok && !r.clean, "{r:#?}");
        let error = r.error.as_deref().expect("a reason");
        assert!(error.contains("no member got another's message"), "{error}");
    }
}
