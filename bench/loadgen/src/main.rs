//! `wsgate-bench`: the command line. Parses flags, runs one scenario of the
//! library, prints the human summary on stderr and one JSON line on stdout.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use serde::Serialize;

use wsgate_bench::{connections, fanout, history, ingest, pingpong, sys};

/// Load generator for wsgate, the Node.js baseline and bare-broadcast.
///
/// Each scenario prints a human summary on stderr and exactly one JSON
/// object (one line) with every figure on stdout. Exit status: 0 when the
/// scenario ran (losses and errors during the measurement are figures:
/// see "clean" in the JSON), 1 on a setup failure (cannot connect,
/// membership never confirmed, not every connection joined), 2 on bad
/// arguments. Latencies are in microseconds, rates per second over the
/// measured window (after the warm-up). See bench/README.md.
#[derive(Parser)]
#[command(name = "wsgate-bench", version)]
struct Cli {
    /// Runtime worker threads (default: one per CPU).
    #[arg(long, global = true, value_name = "N")]
    threads: Option<usize>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
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

#[derive(Serialize)]
struct Failure<'a> {
    scenario: &'a str,
    ok: bool,
    error: String,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Timestamps count from here.
    let _ = *wsgate_bench::ids::START;
    match sys::raise_nofile_limit() {
        Ok((soft, _)) if soft < 1024 => eprintln!("note: only {soft} open files allowed"),
        Ok(_) => {}
        Err(e) => eprintln!("note: cannot read the open-file limit: {e}"),
    }
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    runtime.enable_all();
    if let Some(n) = cli.threads {
        runtime.worker_threads(n.max(1));
    }
    let runtime = match runtime.build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let (name, result) = runtime.block_on(async {
        match &cli.command {
            Command::Fanout(a) => (
                "fanout",
                report(fanout::run(a).await, |r| (r.summary(), r.ok)),
            ),
            Command::Pingpong(a) => (
                "pingpong",
                report(pingpong::run(a).await, |r| (r.summary(), r.ok)),
            ),
            Command::Connections(a) => (
                "connections",
                report(connections::run(a).await, |r| (r.summary(), r.ok)),
            ),
            Command::Ingest(a) => (
                "ingest",
                report(ingest::run(a).await, |r| (r.summary(), r.ok)),
            ),
            Command::History(a) => (
                "history",
                report(history::run(a).await, |r| (r.summary(), r.ok)),
            ),
        }
    });
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    match result {
        Ok((json, ok)) => {
            println!("{json}");
            if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("{name}: setup failed: {e:#}");
            let failure = Failure {
                scenario: name,
                ok: false,
                error: format!("{e:#}"),
            };
            println!(
                "{}",
                serde_json::to_string(&failure).unwrap_or_else(|_| "{\"ok\":false}".to_owned())
            );
            ExitCode::FAILURE
        }
    }
}

/// Prints the summary; returns the JSON line and whether the scenario ran.
fn report<R: Serialize>(
    result: anyhow::Result<R>,
    summary: impl FnOnce(&R) -> (String, bool),
) -> anyhow::Result<(String, bool)> {
    let r = result?;
    let (text, ok) = summary(&r);
    eprintln!("{text}");
    Ok((serde_json::to_string(&r)?, ok))
}
