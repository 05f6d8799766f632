//! `ingest`: straight gRPC to the chat server, no gateway. Each sender
//! opens a `Chat` stream and keeps a window of messages in flight; the
//! server's echo of a stored message to its sender is the confirmation.
//! The write path's capacity (storage, group commit, fan-out to senders).
//!
//! [`send`] is also how `history --fill` tops a room up.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::Args;
use serde::Serialize;
use tokio::sync::{Barrier, watch};
use tonic::transport::{Channel, Endpoint};

use wsgate::proto::chat::chat_service_client::ChatServiceClient;
use wsgate::proto::chat::{ChatMessage, ChatStream, chat_stream::Event};

use crate::ids::{self, Kind, MessageId, RunId, now_ns, secs_to_ns};
use crate::stats::{HistShards, LatBuf, Latency, Reasons, Samples, Sharded, per_sec};
use crate::swarm::round3;

/// gRPC ingest: senders x window messages in flight.
#[derive(Args, Clone, Debug, Serialize)]
pub struct IngestArgs {
    /// gRPC URI of the chat server.
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    pub grpc: String,
    /// Concurrent Chat streams.
    #[arg(long, default_value_t = 64)]
    pub senders: u32,
    /// Messages each sender keeps in flight.
    #[arg(long, default_value_t = 16)]
    pub window: u32,
    /// Rooms the senders are spread over (default: one room per sender).
    /// Senders sharing a room also receive each other's messages.
    #[arg(long, value_name = "K")]
    pub rooms: Option<u32>,
    /// Content bytes per message.
    #[arg(long, default_value_t = 100)]
    pub size: usize,
    /// Seconds of load before measuring.
    #[arg(long, default_value_t = 2.0, value_name = "SECS")]
    pub warmup: f64,
    /// Seconds measured.
    #[arg(long, default_value_t = 10.0, value_name = "SECS")]
    pub duration: f64,
    /// HTTP/2 connections the streams are spread over.
    #[arg(long, default_value_t = 1)]
    pub channels: u32,
    /// Seconds to wait for the last confirmations after sending stops.
    #[arg(long, default_value_t = 10.0, value_name = "SECS")]
    pub drain_timeout: f64,
}

/// What the senders should do.
pub(crate) struct Plan {
    pub channels: Vec<Channel>,
    pub rooms: Vec<String>,
    pub senders: u32,
    pub window: u32,
    pub size: usize,
    pub warmup_ns: u64,
    /// `None`: until `target` messages are sent.
    pub duration_ns: Option<u64>,
    /// Stop after this many messages in all.
    pub target: Option<u64>,
    pub drain_timeout: Duration,
    pub label: &'static str,
}

/// The senders' figures, summed.
#[derive(Debug, Default)]
pub(crate) struct Totals {
    pub sent: u64,
    pub sent_measured: u64,
    pub confirmed: u64,
    pub confirmed_measured: u64,
    /// Other senders' messages received (senders sharing a room).
    pub deliveries: u64,
    pub unconfirmed: u64,
    pub error_frames: u64,
    pub stream_errors: Reasons,
    pub error_samples: Samples,
    pub confirm: Option<hdrhistogram::Histogram<u64>>,
    pub measured_ns: u64,
    pub elapsed_ns: u64,
}

#[derive(Clone, Copy)]
struct Times {
    t0: u64,
    warm_end: u64,
    end: u64,
}

struct Shared {
    plan: Plan,
    run_id: RunId,
    content: String,
    ready: Barrier,
    times: watch::Receiver<Option<Times>>,
    reserved: AtomicU64,
    sent: Sharded,
    confirmed: Sharded,
    confirm: HistShards,
}

#[derive(Default)]
struct SenderStats {
    sent: u64,
    sent_measured: u64,
    confirmed: u64,
    confirmed_measured: u64,
    deliveries: u64,
    unconfirmed: u64,
    error_frames: u64,
    stream_error: Option<String>,
    error_samples: Samples,
}

/// Connects `channels` HTTP/2 connections to `uri`.
pub(crate) async fn connect(uri: &str, channels: u32) -> anyhow::Result<Vec<Channel>> {
    let endpoint = Endpoint::from_shared(uri.to_owned())
        .with_context(|| format!("{uri:?} is not a URI"))?
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(10));
    let mut all = Vec::new();
    for _ in 0..channels.max(1) {
        all.push(
            endpoint
                .connect()
                .await
                .with_context(|| format!("cannot connect to {uri}"))?,
        );
    }
    Ok(all)
}

/// Runs the senders to the end of the plan.
pub(crate) async fn send(plan: Plan) -> anyhow::Result<Totals> {
    if plan.senders == 0 || plan.window == 0 || plan.rooms.is_empty() || plan.channels.is_empty() {
        bail!("senders, window, rooms and channels must be at least 1");
    }
    if plan.senders > ids::MAX_PUBLISHER {
        bail!("too many senders");
    }
    let (times_tx, times_rx) = watch::channel(None);
    let senders = plan.senders;
    let label = plan.label;
    let shared = Arc::new(Shared {
        run_id: RunId::new(),
        content: ids::content(plan.size),
        ready: Barrier::new(senders as usize + 1),
        times: times_rx,
        reserved: AtomicU64::new(0),
        sent: Sharded::default(),
        confirmed: Sharded::default(),
        confirm: HistShards::default(),
        plan,
    });
    let tasks: Vec<_> = (0..senders)
        .map(|i| tokio::spawn(sender(shared.clone(), i)))
        .collect();
    // Every stream is open (or failed) before the clock starts.
    shared.ready.wait().await;
    let t0 = now_ns() + 5_000_000;
    let warm_end = t0 + shared.plan.warmup_ns;
    let end = shared
        .plan
        .duration_ns
        .map_or(u64::MAX, |d| warm_end.saturating_add(d));
    let _ = times_tx.send(Some(Times { t0, warm_end, end }));

    let started = Instant::now();
    let mut all = futures_util::future::join_all(tasks);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    let mut last = (Instant::now(), 0u64, 0u64);
    let results = loop {
        tokio::select! {
            results = &mut all => break results,
            _ = tick.tick() => {
                let now = Instant::now();
                let (sent, confirmed) = (shared.sent.sum(), shared.confirmed.sum());
                let ns = (now - last.0).as_nanos() as u64;
                let of = shared.plan.target.map_or(String::new(), |t| format!(" ({confirmed}/{t})"));
                eprintln!(
                    "{label}: sent {}/s confirmed {}/s{of}{}",
                    per_sec(sent - last.1, ns),
                    per_sec(confirmed - last.2, ns),
                    if now_ns() < warm_end { " (warm-up)" } else { "" }
                );
                last = (now, sent, confirmed);
            }
        }
    };
    let elapsed_ns = started.elapsed().as_nanos() as u64;
    let mut t = Totals {
        measured_ns: end.min(now_ns()).saturating_sub(warm_end),
        elapsed_ns,
        ..Totals::default()
    };
    for r in results {
        let s = match r {
            Ok(s) => s,
            Err(e) => SenderStats {
                stream_error: Some(format!("sender task failed: {e}")),
                ..SenderStats::default()
            },
        };
        t.sent += s.sent;
        t.sent_measured += s.sent_measured;
        t.confirmed += s.confirmed;
        t.confirmed_measured += s.confirmed_measured;
        t.deliveries += s.deliveries;
        t.unconfirmed += s.unconfirmed;
        t.error_frames += s.error_frames;
        if let Some(e) = s.stream_error {
            t.stream_errors.add(e, 1);
        }
        t.error_samples.merge(s.error_samples);
    }
    t.confirm = Some(shared.confirm.merged());
    Ok(t)
}

async fn sender(shared: Arc<Shared>, i: u32) -> SenderStats {
    let mut stats = SenderStats::default();
    let plan = &shared.plan;
    let room = plan.rooms[i as usize % plan.rooms.len()].clone();
    let sender_id = format!("g{}-{i}", shared.run_id.as_str());
    let channel = plan.channels[i as usize % plan.channels.len()].clone();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<ChatStream>();
    let outbound =
        futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|m| (m, rx)) });
    // Opening resolves on the response headers, and some servers (grpc-js)
    // send those only with their first message, i.e. after ours: so the
    // call is opened on its own task and awaited once the window is sent.
    let mut opening = Some(tokio::spawn(async move {
        ChatServiceClient::new(channel).chat(outbound).await
    }));
    let mut inbound = None;
    shared.ready.wait().await;
    let mut times_rx = shared.times.clone();
    let times = match times_rx.wait_for(Option::is_some).await {
        Ok(t) => match *t {
            Some(t) => t,
            None => return stats,
        },
        Err(_) => return stats,
    };
    tokio::time::sleep_until(ids::instant_at(times.t0)).await;

    let mut latencies = LatBuf::default();
    let mut counter = 0u64;
    let mut in_flight = 0u32;
    let mut stopped = false;
    let mut drain_deadline = tokio::time::Instant::now();
    let end_at = if times.end == u64::MAX {
        tokio::time::Instant::now() + Duration::from_secs(86_400 * 365)
    } else {
        ids::instant_at(times.end)
    };
    loop {
        // Keep the window full.
        if !stopped {
            let now = now_ns();
            while in_flight < plan.window {
                let more = now < times.end
                    && plan
                        .target
                        .is_none_or(|t| shared.reserved.fetch_add(1, Ordering::Relaxed) < t);
                if !more {
                    stopped = true;
                    drain_deadline = tokio::time::Instant::now() + plan.drain_timeout;
                    break;
                }
                counter += 1;
                let id = MessageId {
                    ts_ns: now,
                    kind: Kind::Message,
                    publisher: i,
                    counter,
                };
                let frame = ChatStream {
                    event: Some(Event::ChatMessage(ChatMessage {
                        id: id.to_string(&shared.run_id),
                        room_id: room.clone(),
                        sender_id: sender_id.clone(),
                        content: shared.content.clone(),
                        ..ChatMessage::default()
                    })),
                    request_id: None,
                };
                if tx.send(frame).is_err() {
                    stats.stream_error = Some("request stream closed".to_owned());
                    stopped = true;
                    break;
                }
                in_flight += 1;
                stats.sent += 1;
                if now >= times.warm_end && now < times.end {
                    stats.sent_measured += 1;
                }
                shared.sent.add(i as usize, 1);
            }
        }
        if stopped && in_flight == 0 {
            break;
        }
        if let Some(opening) = opening.take() {
            match opening.await {
                Ok(Ok(response)) => inbound = Some(response.into_inner()),
                Ok(Err(status)) => {
                    stats.stream_error = Some(format!("open: {:?}", status.code()));
                    stats.error_samples.add(status.message().to_owned());
                    return stats;
                }
                Err(e) => {
                    stats.stream_error = Some(format!("open: {e}"));
                    return stats;
                }
            }
        }
        let Some(inbound) = inbound.as_mut() else {
            break;
        };
        let received = tokio::select! {
            m = inbound.message() => m,
            () = tokio::time::sleep_until(end_at), if !stopped => {
                stopped = true;
                drain_deadline = tokio::time::Instant::now() + plan.drain_timeout;
                continue;
            }
            () = tokio::time::sleep_until(drain_deadline), if stopped => break,
        };
        match received {
            Ok(Some(frame)) => match frame.event {
                Some(Event::ChatMessage(m)) => {
                    let now = now_ns();
                    match MessageId::parse(&shared.run_id, &m.id) {
                        Some(id) if id.publisher == i && m.sender_id == sender_id => {
                            in_flight = in_flight.saturating_sub(1);
                            stats.confirmed += 1;
                            shared.confirmed.add(i as usize, 1);
                            if now >= times.warm_end && now < times.end {
                                stats.confirmed_measured += 1;
                            }
                            if id.ts_ns >= times.warm_end && id.ts_ns < times.end {
                                latencies.push(
                                    &shared.confirm,
                                    i as usize,
                                    now.saturating_sub(id.ts_ns),
                                );
                            }
                        }
                        _ => stats.deliveries += 1,
                    }
                }
                Some(Event::Error(e)) => {
                    stats.error_frames += 1;
                    stats
                        .error_samples
                        .add(format!("{:?}: {}", e.code(), e.message));
                }
                _ => {}
            },
            Ok(None) => {
                stats.stream_error = Some("stream ended by the server".to_owned());
                break;
            }
            Err(status) => {
                stats.stream_error = Some(format!("{:?}", status.code()));
                stats.error_samples.add(status.message().to_owned());
                break;
            }
        }
    }
    latencies.flush(&shared.confirm, i as usize);
    stats.unconfirmed = u64::from(in_flight);
    stats
}

/// The figures of an ingest run.
#[derive(Clone, Debug, Serialize)]
pub struct IngestReport {
    pub scenario: &'static str,
    /// The run measured something (see `error` when not).
    pub ok: bool,
    /// Why the run failed: it measured nothing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Every message confirmed, no error frame, no stream error.
    pub clean: bool,
    pub run: IngestArgs,
    pub rooms: u32,
    pub measured_secs: f64,
    /// Messages sent per second.
    pub offered_per_sec: f64,
    /// Own echoes (stored messages) per second.
    pub confirmed_per_sec: f64,
    /// Send to own echo.
    pub confirm_latency: Latency,
    pub sent: u64,
    pub confirmed: u64,
    /// Sent but never confirmed (after the drain).
    pub unconfirmed: u64,
    /// Other senders' messages received per second (senders sharing a room).
    pub deliveries_per_sec: f64,
    pub error_frames: u64,
    pub stream_errors: Reasons,
    pub error_samples: Samples,
}

pub async fn run(args: &IngestArgs) -> anyhow::Result<IngestReport> {
    if args.duration <= 0.0 {
        bail!("--duration must be positive");
    }
    let rooms = args
        .rooms
        .unwrap_or(args.senders)
        .clamp(1, args.senders.max(1));
    let run = RunId::new();
    let plan = Plan {
        channels: connect(&args.grpc, args.channels).await?,
        rooms: (0..rooms)
            .map(|r| format!("g{}-{r}", run.as_str()))
            .collect(),
        senders: args.senders,
        window: args.window,
        size: args.size,
        warmup_ns: secs_to_ns(args.warmup),
        duration_ns: Some(secs_to_ns(args.duration)),
        target: None,
        drain_timeout: Duration::from_secs_f64(args.drain_timeout.max(0.0)),
        label: "ingest",
    };
    let t = send(plan).await?;
    let confirm_latency = t.confirm.as_ref().map(Latency::of).unwrap_or_default();
    let clean = t.unconfirmed == 0 && t.error_frames == 0 && t.stream_errors.is_empty();
    let error = nothing_measured(&t, confirm_latency.count);
    Ok(IngestReport {
        scenario: "ingest",
        ok: error.is_none(),
        error,
        clean,
        run: args.clone(),
        rooms,
        measured_secs: round3(t.measured_ns as f64 / 1e9),
        offered_per_sec: per_sec(t.sent_measured, t.measured_ns),
        confirmed_per_sec: per_sec(t.confirmed_measured, t.measured_ns),
        confirm_latency,
        sent: t.sent,
        confirmed: t.confirmed,
        unconfirmed: t.unconfirmed,
        deliveries_per_sec: per_sec(t.deliveries, t.elapsed_ns),
        error_frames: t.error_frames,
        stream_errors: t.stream_errors,
        error_samples: t.error_samples,
    })
}

/// Why a run's figures are empty, if they are: nothing sent, confirmed or
/// timed in the measured window. Such a run must fail, not report 0/s.
fn nothing_measured(t: &Totals, latency_samples: u64) -> Option<String> {
    let missing = if t.sent_measured == 0 {
        "no message was sent in the measured window"
    } else if t.confirmed_measured == 0 {
        "no message was confirmed in the measured window"
    } else if latency_samples == 0 {
        "no message sent in the measured window was confirmed"
    } else {
        return None;
    };
    Some(format!(
        "measured nothing: {missing} ({} sent, {} confirmed in all; stream errors: {})",
        t.sent,
        t.confirmed,
        t.stream_errors.line()
    ))
}

impl IngestReport {
    pub fn summary(&self) -> String {
        let a = &self.run;
        let mut s = format!(
            "ingest: {} senders x window {} over {} rooms, {} B, {}s measured\n\
             \x20 offered   {:>12} msgs/s\n\
             \x20 confirmed {:>12} msgs/s   confirm {}\n\
             \x20 sent {} confirmed {} unconfirmed {}; {} error frames; stream errors: {}",
            a.senders,
            a.window,
            self.rooms,
            a.size,
            self.measured_secs,
            self.offered_per_sec,
            self.confirmed_per_sec,
            self.confirm_latency.line(),
            self.sent,
            self.confirmed,
            self.unconfirmed,
            self.error_frames,
            self.stream_errors.line(),
        );
        if !self.error_samples.0.is_empty() {
            s += &format!("\n  samples: {}", self.error_samples.0.join(" | "));
        }
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

    #[test]
    fn a_run_with_nothing_confirmed_in_the_window_measured_nothing() {
        let mut stalled = Totals {
            sent: 64,
            sent_measured: 64,
            ..Totals::default()
        };
        stalled.stream_errors.add("Unavailable", 4);
        let error = nothing_measured(&stalled, 0).expect("measured nothing");
        assert!(
            error.starts_with("measured nothing: no message was confirmed in the measured window"),
            "{error}"
        );
        assert!(
            error.contains("Unavailable"),
            "the stream errors say why: {error}"
        );
        let idle = Totals::default();
        assert!(
            nothing_measured(&idle, 0)
                .expect("measured nothing")
                .contains("no message was sent in the measured window")
        );
    }

    #[test]
    fn confirmed_messages_in_the_window_are_a_measurement() {
        let t = Totals {
            sent: 100,
            sent_measured: 80,
            confirmed: 100,
            confirmed_measured: 80,
            ..Totals::default()
        };
        assert_eq!(nothing_measured(&t, 80), None);
    }
}
