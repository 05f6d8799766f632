//! `history`: GetChatHistory latency on a room of known size: pages at
//! random positions (`before_seq` uniform over the room) and the newest
//! page (`before_seq` 0). `--fill N` first tops the room up to N messages.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::Args;
use serde::Serialize;
use tonic::transport::Channel;

use wsgate::proto::chat::GetChatHistoryRequest;
use wsgate::proto::chat::chat_service_client::ChatServiceClient;

use crate::ingest::{self, Plan};
use crate::stats::{Latency, Reasons, Samples, new_histogram, per_sec};
use crate::swarm::round3;

/// GetChatHistory latency.
#[derive(Args, Clone, Debug, Serialize)]
pub struct HistoryArgs {
    /// gRPC URI of the chat server.
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    pub grpc: String,
    /// The room to read.
    #[arg(long, default_value = "bench-history")]
    pub room: String,
    /// First make sure the room holds at least N messages (tops it up over
    /// gRPC at full speed).
    #[arg(long, value_name = "N")]
    pub fill: Option<u64>,
    /// Requests for pages at random positions.
    #[arg(long, default_value_t = 2000)]
    pub requests: u64,
    /// Requests for the newest page (default: as many as --requests).
    #[arg(long, value_name = "M")]
    pub newest_requests: Option<u64>,
    /// Page size (the server caps it at 500; 0 means 50).
    #[arg(long, default_value_t = 50)]
    pub limit: u32,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 1)]
    pub concurrency: u32,
    /// --fill: concurrent senders.
    #[arg(long, default_value_t = 4)]
    pub fill_senders: u32,
    /// --fill: messages each sender keeps in flight.
    #[arg(long, default_value_t = 64)]
    pub fill_window: u32,
    /// --fill: content bytes per message.
    #[arg(long, default_value_t = 100)]
    pub size: usize,
}

#[derive(Clone, Debug, Serialize)]
pub struct Fill {
    pub newest_before: u64,
    pub added: u64,
    pub secs: f64,
    pub per_sec: f64,
    pub unconfirmed: u64,
    pub errors: Reasons,
}

/// One series of requests.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Series {
    pub requests: u64,
    pub per_sec: f64,
    pub latency: Latency,
    /// Answers that were not the page asked for (wrong length or seqs).
    pub bad_pages: u64,
    /// Failed calls, by status code.
    pub errors: Reasons,
    pub samples: Samples,
}

#[derive(Clone, Debug, Serialize)]
pub struct HistoryReport {
    pub scenario: &'static str,
    /// Every series measured something (see `error` when not).
    pub ok: bool,
    /// Why the run failed: a series measured nothing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// No bad page and no failed call.
    pub clean: bool,
    pub run: HistoryArgs,
    /// The room's newest seq when measuring.
    pub newest_seq: u64,
    pub fill: Option<Fill>,
    /// Pages at random positions.
    pub random: Series,
    /// The newest page.
    pub newest: Series,
}

async fn newest_seq(client: &mut ChatServiceClient<Channel>, room: &str) -> anyhow::Result<u64> {
    let page = client
        .get_chat_history(GetChatHistoryRequest {
            room_id: room.to_owned(),
            limit: 1,
            before_seq: 0,
            after_seq: None,
            changed_since: None,
        })
        .await
        .context("GetChatHistory failed")?
        .into_inner();
    Ok(page.messages.last().map_or(0, |m| m.seq))
}

fn effective_limit(limit: u32) -> u64 {
    match limit {
        0 => 50,
        l => u64::from(l.min(500)),
    }
}

pub async fn run(args: &HistoryArgs) -> anyhow::Result<HistoryReport> {
    if args.room.is_empty() {
        bail!("--room must not be empty");
    }
    if args.requests == 0 && args.newest_requests.unwrap_or(args.requests) == 0 {
        bail!("--requests and --newest-requests are both 0: nothing to measure");
    }
    let channels = ingest::connect(&args.grpc, 1).await?;
    let mut client = ChatServiceClient::new(channels[0].clone());
    let mut newest = newest_seq(&mut client, &args.room).await?;
    let mut fill = None;
    if let Some(target) = args.fill
        && newest < target
    {
        let missing = target - newest;
        eprintln!(
            "history: room {:?} holds {newest} messages; adding {missing}",
            args.room
        );
        let t = ingest::send(Plan {
            channels: channels.clone(),
            rooms: vec![args.room.clone()],
            senders: args.fill_senders,
            window: args.fill_window,
            size: args.size,
            warmup_ns: 0,
            duration_ns: None,
            target: Some(missing),
            drain_timeout: Duration::from_secs(10),
            label: "history fill",
        })
        .await?;
        let mut errors = t.stream_errors.clone();
        if t.error_frames > 0 {
            errors.add("error frames", t.error_frames);
        }
        fill = Some(Fill {
            newest_before: newest,
            added: t.confirmed,
            secs: round3(t.elapsed_ns as f64 / 1e9),
            per_sec: per_sec(t.confirmed, t.elapsed_ns),
            unconfirmed: t.unconfirmed,
            errors,
        });
        newest = newest_seq(&mut client, &args.room).await?;
        if newest < target {
            bail!(
                "the room holds {newest} messages after the fill, not {target} ({} sent, {} confirmed, errors: {})",
                t.sent,
                t.confirmed,
                t.stream_errors.line()
            );
        }
    }
    if newest == 0 {
        bail!("room {:?} is empty: use --fill N", args.room);
    }
    eprintln!("history: room {:?}, newest seq {newest}", args.room);
    let channel = channels[0].clone();
    let random = series(args, &channel, newest, args.requests, false).await;
    let newest_series = series(
        args,
        &channel,
        newest,
        args.newest_requests.unwrap_or(args.requests),
        true,
    )
    .await;
    let clean = random.bad_pages == 0
        && random.errors.is_empty()
        && newest_series.bad_pages == 0
        && newest_series.errors.is_empty();
    let error = nothing_measured(&[("random page", &random), ("newest page", &newest_series)]);
    Ok(HistoryReport {
        scenario: "history",
        ok: error.is_none(),
        error,
        clean,
        run: args.clone(),
        newest_seq: newest,
        fill,
        random,
        newest: newest_series,
    })
}

/// `requests` calls with `args.concurrency` in flight; `newest`: the newest
/// page each time, else a random one.
async fn series(
    args: &HistoryArgs,
    channel: &Channel,
    newest_seq: u64,
    requests: u64,
    newest: bool,
) -> Series {
    let tickets = Arc::new(AtomicU64::new(0));
    let limit = effective_limit(args.limit);
    let started = Instant::now();
    let workers: Vec<_> = (0..args.concurrency.max(1))
        .map(|_| {
            let mut client = ChatServiceClient::new(channel.clone());
            let tickets = tickets.clone();
            let room = args.room.clone();
            let page_limit = args.limit;
            tokio::spawn(async move {
                let mut h = new_histogram();
                let mut s = Series::default();
                while tickets.fetch_add(1, Ordering::Relaxed) < requests {
                    // Uniform over the room: 2..=newest+1 always has one older message.
                    let before = if newest {
                        0
                    } else {
                        fastrand::u64(2..=newest_seq + 1)
                    };
                    let sent = Instant::now();
                    let answer = client
                        .get_chat_history(GetChatHistoryRequest {
                            room_id: room.clone(),
                            limit: page_limit,
                            before_seq: before,
                            after_seq: None,
                            changed_since: None,
                        })
                        .await;
                    let ns = sent.elapsed().as_nanos() as u64;
                    s.requests += 1;
                    match answer {
                        Ok(page) => {
                            h.saturating_record(ns.max(1));
                            let page = page.into_inner();
                            if let Err(why) = check_page(&page.messages, before, newest_seq, limit)
                            {
                                s.bad_pages += 1;
                                s.samples.add(why);
                            }
                        }
                        Err(status) => {
                            s.errors.add(format!("{:?}", status.code()), 1);
                            s.samples.add(status.message().to_owned());
                        }
                    }
                }
                (s, h)
            })
        })
        .collect();
    let mut total = Series::default();
    let mut hist = new_histogram();
    for w in workers {
        match w.await {
            Ok((s, h)) => {
                total.requests += s.requests;
                total.bad_pages += s.bad_pages;
                total.errors.merge(s.errors);
                total.samples.merge(s.samples);
                let _ = hist.add(&h);
            }
            Err(e) => total.errors.add(format!("worker failed: {e}"), 1),
        }
    }
    total.per_sec = per_sec(total.requests, started.elapsed().as_nanos() as u64);
    total.latency = Latency::of(&hist);
    total
}

/// Why a run failed, if it did: a series that was asked for requests but
/// timed none (every call failed).
fn nothing_measured(series: &[(&str, &Series)]) -> Option<String> {
    let empty: Vec<String> = series
        .iter()
        .filter(|(_, s)| s.requests > 0 && s.latency.count == 0)
        .map(|(name, s)| {
            format!(
                "none of the {} {name} requests succeeded (errors: {})",
                s.requests,
                s.errors.line()
            )
        })
        .collect();
    (!empty.is_empty()).then(|| format!("measured nothing: {}", empty.join("; ")))
}

/// A page before `before` (0: the newest) must hold the `limit` messages
/// right below it, oldest first, with no gap.
fn check_page(
    messages: &[wsgate::proto::chat::ChatMessage],
    before: u64,
    newest_seq: u64,
    limit: u64,
) -> Result<(), String> {
    let seqs: Vec<u64> = messages.iter().map(|m| m.seq).collect();
    if seqs.windows(2).any(|w| w[1] != w[0] + 1) {
        return Err(format!("page before {before}: seqs not consecutive"));
    }
    if before == 0 {
        // Newer messages may have arrived since: at least what we knew of.
        let want = limit.min(newest_seq) as usize;
        if seqs.len() != want || seqs.last().is_some_and(|&s| s < newest_seq) {
            return Err(format!(
                "newest page: {} messages ending at {:?}, expected {want} ending at >= {newest_seq}",
                seqs.len(),
                seqs.last()
            ));
        }
        return Ok(());
    }
    let want = limit.min(before - 1) as usize;
    if seqs.len() != want || (want > 0 && seqs.last() != Some(&(before - 1))) {
        return Err(format!(
            "page before {before}: {} messages ending at {:?}, expected {want} ending at {}",
            seqs.len(),
            seqs.last(),
            before - 1
        ));
    }
    Ok(())
}

impl HistoryReport {
    pub fn summary(&self) -> String {
        let mut s = String::new();
        if let Some(f) = &self.fill {
            s += &format!(
                "history fill: {} added in {}s ({} msgs/s), {} unconfirmed, errors: {}\n",
                f.added,
                f.secs,
                f.per_sec,
                f.unconfirmed,
                f.errors.line()
            );
        }
        for (name, series) in [("random page", &self.random), ("newest page", &self.newest)] {
            s += &format!(
                "history {name} ({} of {}, limit {}, concurrency {}): {} req/s, {}; bad pages {}, errors: {}\n",
                series.requests,
                self.newest_seq,
                self.run.limit,
                self.run.concurrency,
                series.per_sec,
                series.latency.line(),
                series.bad_pages,
                series.errors.line(),
            );
        }
        if !self.clean {
            s += "  WARNING: not clean\n";
        }
        if let Some(e) = &self.error {
            s += &format!("  FAILED: {e}\n");
        }
        s.trim_end().to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::{Series, check_page, nothing_measured};
    use wsgate::proto::chat::ChatMessage;

    fn page(seqs: std::ops::RangeInclusive<u64>) -> Vec<ChatMessage> {
        seqs.map(|seq| ChatMessage {
            seq,
            ..ChatMessage::default()
        })
        .collect()
    }

    #[test]
    fn pages_are_checked() {
        assert!(check_page(&page(51..=100), 101, 500, 50).is_ok());
        assert!(check_page(&page(1..=9), 10, 500, 50).is_ok());
        assert!(check_page(&page(52..=100), 101, 500, 50).is_err());
        assert!(check_page(&page(50..=99), 101, 500, 50).is_err());
        assert!(check_page(&page(451..=500), 0, 500, 50).is_ok());
        assert!(check_page(&page(1..=3), 0, 3, 50).is_ok());
        assert!(check_page(&page(450..=499), 0, 500, 50).is_err());
        let mut gap = page(51..=100);
        gap[10].seq = 1000;
        assert!(check_page(&gap, 101, 500, 50).is_err());
    }

    #[test]
    fn a_series_whose_every_call_failed_measured_nothing() {
        let mut failed = Series {
            requests: 5,
            ..Series::default()
        };
        failed.errors.add("Unavailable", 5);
        let mut fine = Series {
            requests: 3,
            ..Series::default()
        };
        fine.latency.count = 3;
        let skipped = Series::default();
        let error = nothing_measured(&[("random page", &failed), ("newest page", &fine)])
            .expect("measured nothing");
        assert_eq!(
            error,
            "measured nothing: none of the 5 random page requests succeeded \
             (errors: Unavailable: 5)"
        );
        // A series not asked for (--newest-requests 0) is no failure.
        assert_eq!(
            nothing_measured(&[("random page", &fine), ("newest page", &skipped)]),
            None
        );
    }
}
