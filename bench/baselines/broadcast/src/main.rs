//! `bare-broadcast`: the ceiling baseline of the wsgate benchmarks, a bare
//! WebSocket room broadcast with no gRPC hop, no storage and no sequence
//! numbers. See the library for what it does.

use anyhow::Context as _;
use clap::Parser;
use tokio::net::TcpListener;

/// A bare WebSocket room broadcast server (no gRPC hop, no disk): the
/// ceiling the wsgate benchmarks compare with.
#[derive(Parser)]
#[command(version, about)]
struct Args {
    /// Address to listen on; port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:8090")]
    listen: String,
    /// Frames queued towards one client; a client whose queue is full is
    /// closed with code 1008.
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..))]
    queue: u32,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let listener = TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    eprintln!("bare-broadcast listening on {}", listener.local_addr()?);
    let config = bare_broadcast::Config {
        queue: args.queue as usize,
    };
    tokio::select! {
        () = bare_broadcast::run(listener, config) => Ok(()),
        stopped = shutdown_signal() => stopped.context("cannot wait for signals"),
    }
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate())?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => r,
            _ = term.recv() => Ok(()),
        }
    }
    #[cfg(not(unix))]
    tokio::signal::ctrl_c().await
}
