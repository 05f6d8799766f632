//! The command line, shared by the binary and the tests.

use clap::{Parser, Subcommand};

use crate::{connections, fanout, history, ingest, pingpong};

/// Load generator for wsgate, the Node.js baseline and bare-broadcast.
///
/// Each scenario prints a human summary on stderr and exactly one JSON
/// object (one line) with every figure on stdout. Exit status: 0 when the
/// scenario ran and measured something (losses and errors during the
/// measurement are figures: see "clean" in the JSON); 1 on a setup failure
/// (cannot connect, membership never confirmed, not every connection
/// joined, or arguments that parse but make no sense) and when the run
/// measured nothing (no round trip, delivery or sample in the measured
/// window), with "ok": false and the reason in "error"; 2 when the
/// arguments do not parse. Latencies are in microseconds, rates per second
/// over the measured window (after the warm-up). See bench/README.md.
#[derive(Parser, Debug)]
#[command(name = "wsgate-bench", version)]
pub struct Cli {
    /// Runtime worker threads (default: one per CPU).
    #[arg(long, global = true, value_name = "N")]
    pub threads: Option<usize>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// R rooms x C WebSocket clients, P publishers per room: throughput,
    /// end-to-end latency, losses (open loop --rate or closed loop --window).
    Fanout(fanout::FanoutArgs),
    /// One client, one message in flight: round-trip latency.
    Pingpong(pingpong::PingpongArgs),
    /// N idle WebSocket connections in rooms: connect rate, failures,
    /// memory per connection of the --pid processes.
    Connections(connections::ConnectionsArgs),
    /// Straight gRPC Chat streams, no gateway: stored (confirmed) messages per second.
    Ingest(ingest::IngestArgs),
    /// GetChatHistory latency on a room (optionally filled to N messages first).
    History(history::HistoryArgs),
}

impl Command {
    pub fn name(&self) -> &'static str {
        match self {
            Command::Fanout(_) => "fanout",
            Command::Pingpong(_) => "pingpong",
            Command::Connections(_) => "connections",
            Command::Ingest(_) => "ingest",
            Command::History(_) => "history",
        }
    }

    /// Runs the scenario: `(human summary, JSON line, ok)`, or the setup failure.
    pub async fn run(&self) -> anyhow::Result<(String, String, bool)> {
        fn done<R: serde::Serialize>(
            r: R,
            summary: String,
            ok: bool,
        ) -> anyhow::Result<(String, String, bool)> {
            Ok((summary, serde_json::to_string(&r)?, ok))
        }
        match self {
            Command::Fanout(a) => {
                let r = fanout::run(a).await?;
                let (s, ok) = (r.summary(), r.ok);
                done(r, s, ok)
            }
            Command::Pingpong(a) => {
                let r = pingpong::run(a).await?;
                let (s, ok) = (r.summary(), r.ok);
                done(r, s, ok)
            }
            Command::Connections(a) => {
                let r = connections::run(a).await?;
                let (s, ok) = (r.summary(), r.ok);
                done(r, s, ok)
            }
            Command::Ingest(a) => {
                let r = ingest::run(a).await?;
                let (s, ok) = (r.summary(), r.ok);
                done(r, s, ok)
            }
            Command::History(a) => {
                let r = history::run(a).await?;
                let (s, ok) = (r.summary(), r.ok);
                done(r, s, ok)
            }
        }
    }
}
