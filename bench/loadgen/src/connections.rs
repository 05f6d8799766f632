//! `connections`: N idle WebSocket connections, each a member of a room,
//! membership proven by a probe message per room. How fast they connect,
//! what fails, and what they cost the system under test in memory.

use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::Args;
use serde::Serialize;

use crate::stats::Reasons;
use crate::swarm::{self, Layout, Spec, Swarm};
use crate::sys;
use crate::ws::{self, Target};

/// N idle connections in rooms.
#[derive(Args, Clone, Debug, Serialize)]
pub struct ConnectionsArgs {
    /// WebSocket URL of the system under test.
    #[arg(long, default_value = "ws://127.0.0.1:8080/")]
    pub url: String,
    /// Connections to open.
    #[arg(short = 'n', long = "connections", default_value_t = 1000)]
    pub n: u32,
    /// Spread connections over source addresses 127.0.0.2..=127.0.0.(1+N),
    /// so ephemeral ports never run out (0: let the system choose).
    #[arg(long, default_value_t = 8, value_name = "N")]
    pub source_ips: u8,
    /// Connection handshakes in progress at once.
    #[arg(long, default_value_t = 512)]
    pub concurrency: usize,
    /// Rooms, joined round robin (default: one per 100 connections).
    #[arg(long, value_name = "K")]
    pub rooms: Option<u32>,
    /// A process whose resident memory to report, as NAME=PID; repeatable.
    #[arg(long = "pid", value_name = "NAME=PID")]
    pub pids: Vec<String>,
    /// Seconds to keep the connections open after all joined.
    #[arg(long, default_value_t = 0.0, value_name = "SECS")]
    pub hold: f64,
    /// Seconds allowed for one connection's TCP connect and handshake.
    #[arg(long, default_value_t = 30.0, value_name = "SECS")]
    pub connect_timeout: f64,
    /// Seconds allowed, after connecting, for every member to be confirmed.
    #[arg(long, default_value_t = 120.0, value_name = "SECS")]
    pub setup_timeout: f64,
    /// WebSocket read/write buffer per connection, bytes.
    #[arg(long, default_value_t = 4096)]
    pub ws_buffer: usize,
}

/// Resident memory of one process, in KiB.
#[derive(Clone, Debug, Serialize)]
pub struct Memory {
    pub name: String,
    pub pid: u32,
    pub before_kib: u64,
    pub after_kib: u64,
    pub delta_kib: i64,
    /// delta / connections joined.
    pub per_connection_kib: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct ConnectionsReport {
    pub scenario: &'static str,
    /// Every connection joined and was confirmed.
    pub ok: bool,
    /// Why not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub run: ConnectionsArgs,
    pub rooms: u32,
    pub setup: swarm::SetupReport,
    pub connections: u32,
    pub joined: u32,
    pub failures: u64,
    pub failure_reasons: Reasons,
    pub handshakes_per_sec: f64,
    pub connect_secs: f64,
    /// From the first connect until every member of every room got its probe.
    pub all_joined_secs: f64,
    /// The processes named by --pid.
    pub memory: Vec<Memory>,
    /// Sum over the --pid processes.
    pub memory_total: Option<Memory>,
    /// The load generator's own resident memory.
    pub loadgen_memory: Memory,
    /// Connections that ended while held open, by reason.
    pub ended_while_open: Reasons,
}

fn parse_pids(pids: &[String]) -> anyhow::Result<Vec<(String, u32)>> {
    pids.iter()
        .map(|p| {
            let (name, pid) = p
                .split_once('=')
                .with_context(|| format!("--pid {p:?}: expected NAME=PID"))?;
            let pid = pid
                .trim()
                .parse()
                .with_context(|| format!("--pid {p:?}: not a process id"))?;
            Ok((name.to_owned(), pid))
        })
        .collect()
}

fn mem(name: &str, pid: u32, before: u64, after: u64, joined: u32) -> Memory {
    let delta = after as i64 - before as i64;
    Memory {
        name: name.to_owned(),
        pid,
        before_kib: before,
        after_kib: after,
        delta_kib: delta,
        per_connection_kib: if joined == 0 {
            0.0
        } else {
            (delta as f64 / f64::from(joined) * 100.0).round() / 100.0
        },
    }
}

pub async fn run(args: &ConnectionsArgs) -> anyhow::Result<ConnectionsReport> {
    if args.n == 0 {
        bail!("-n must be at least 1");
    }
    let limit = sys::nofile_limit();
    if limit > 0 && u64::from(args.n) + 64 > limit {
        bail!(
            "{} connections need {} file descriptors, the limit is {limit} (ulimit -n)",
            args.n,
            args.n + 64
        );
    }
    let pids = parse_pids(&args.pids)?;
    let rooms = args.rooms.unwrap_or(args.n / 100).clamp(1, args.n);
    let me = std::process::id();
    let rss = |pid: u32| {
        sys::rss_kib(pid).with_context(|| format!("cannot read the memory of pid {pid}"))
    };
    let before: Vec<u64> = pids
        .iter()
        .map(|(_, pid)| rss(*pid))
        .collect::<Result<_, _>>()?;
    let self_before = rss(me)?;

    let spec = Spec {
        targets: vec![Target::resolve(&args.url).await?],
        clients: args.n,
        rooms,
        layout: Layout::RoundRobin,
        run: None,
        source_ips: ws::source_ips(args.source_ips),
        concurrency: args.concurrency,
        connect_timeout: Duration::from_secs_f64(args.connect_timeout.max(0.1)),
        setup_timeout: Duration::from_secs_f64(args.setup_timeout.max(0.1)),
        ws_buffer: args.ws_buffer.max(1024),
        require_all: false,
        label: "connections",
    };
    let swarm = Swarm::start(spec).await?;
    let setup = swarm.setup.clone();
    let joined = setup.members_confirmed;
    let after: Vec<u64> = pids
        .iter()
        .map(|(_, pid)| rss(*pid))
        .collect::<Result<_, _>>()?;
    let self_after = rss(me)?;
    if args.hold > 0.0 {
        eprintln!(
            "connections: holding {joined} connections for {}s",
            args.hold
        );
        tokio::time::sleep(Duration::from_secs_f64(args.hold)).await;
    }
    let clients = swarm.stop().await;
    let mut ended_while_open = Reasons::default();
    for c in &clients {
        if let Some(reason) = &c.ended {
            ended_while_open.add(reason.clone(), 1);
        }
    }

    let memory: Vec<Memory> = pids
        .iter()
        .zip(before.iter().zip(&after))
        .map(|((name, pid), (b, a))| mem(name, *pid, *b, *a, joined))
        .collect();
    let memory_total = (!memory.is_empty()).then(|| {
        mem(
            "total",
            0,
            memory.iter().map(|m| m.before_kib).sum(),
            memory.iter().map(|m| m.after_kib).sum(),
            joined,
        )
    });
    let error = missing(args.n, joined, &setup);
    Ok(ConnectionsReport {
        scenario: "connections",
        ok: error.is_none(),
        error,
        run: args.clone(),
        rooms,
        connections: args.n,
        joined,
        failures: setup.connect_failures,
        failure_reasons: setup.connect_failure_reasons.clone(),
        handshakes_per_sec: setup.handshakes_per_sec,
        connect_secs: setup.connect_secs,
        all_joined_secs: setup.joined_secs,
        memory,
        memory_total,
        loadgen_memory: mem("wsgate-bench", me, self_before, self_after, joined),
        ended_while_open,
        setup,
    })
}

/// Why the run failed, if it did: not every connection joined (none at all
/// is a run that measured nothing).
fn missing(n: u32, joined: u32, setup: &swarm::SetupReport) -> Option<String> {
    if joined == n && setup.connect_failures == 0 {
        return None;
    }
    let what = if joined == 0 {
        "measured nothing: no connection joined"
    } else {
        "not every connection joined"
    };
    Some(format!(
        "{what}: {joined} of {n} joined, {} failed ({})",
        setup.connect_failures,
        setup.connect_failure_reasons.line()
    ))
}

impl ConnectionsReport {
    pub fn summary(&self) -> String {
        let mut s = format!(
            "connections: {}/{} joined in {} rooms; connect {}s ({} handshakes/s), all joined after {}s\n\
             \x20 failures: {} ({})",
            self.joined,
            self.connections,
            self.rooms,
            self.connect_secs,
            self.handshakes_per_sec,
            self.all_joined_secs,
            self.failures,
            self.failure_reasons.line(),
        );
        for m in self
            .memory
            .iter()
            .chain(&self.memory_total)
            .chain([&self.loadgen_memory])
        {
            s += &format!(
                "\n  {:<14} rss {} -> {} KiB: {:+} KiB, {} KiB per connection",
                m.name, m.before_kib, m.after_kib, m.delta_kib, m.per_connection_kib
            );
        }
        if !self.setup.setup_error_frames.is_empty() {
            s += &format!(
                "\n  error frames while joining: {}",
                self.setup.setup_error_frames.line()
            );
        }
        if !self.ended_while_open.is_empty() {
            s += &format!("\n  ended while open: {}", self.ended_while_open.line());
        }
        if let Some(e) = &self.error {
            s += &format!("\n  FAILED: {e}");
        }
        s
    }
}
