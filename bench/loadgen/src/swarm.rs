//! A swarm of WebSocket clients in rooms: the machinery under `fanout`,
//! `pingpong` and `connections`.
//!
//! Each client is one task that owns its socket and its bookkeeping; they
//! share only padded counters, a few batched histograms and the phase:
//!
//! 1. **Setup**: connect (bounded concurrency), send `join_room`.
//! 2. **Probe**: the first client of each room to join sends probe messages
//!    (with backoff) until every member of the room has received one: the
//!    only proof of membership all systems under test give.
//! 3. **Run** (fanout): publishers send, open loop (`--rate`, on a schedule,
//!    latency from the scheduled time) or closed loop (`--window`), until
//!    the end of the run; every client accounts for every arrival.
//! 4. **Stop**: each client closes its socket and returns its figures.

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::bail;
use futures_util::{FutureExt as _, SinkExt as _, StreamExt as _};
use serde::Serialize;
use tokio::sync::{Notify, Semaphore, watch};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::{self, Message};

use crate::ids::{self, Kind, MessageId, RunId, now_ns};
use crate::order::{Arrival, Track};
use crate::stats::{HistShards, LatBuf, Reasons, Samples, Sharded, per_sec};
use crate::ws::{self, ChatFrames, Parsed, Target, Ws};

/// How early an open-loop publisher may send a message before its
/// scheduled time (tokio's timers tick in milliseconds). An early message
/// is timed from when it was really sent, a late one from its schedule.
const SEND_SLACK_NS: u64 = 1_000_000;
const FIRST_PROBE_RETRY: Duration = Duration::from_millis(250);
const MAX_PROBE_RETRY: Duration = Duration::from_secs(2);
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long after the planned end publishers may take to notice it.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// How clients are placed in rooms.
#[derive(Clone, Copy, Debug)]
pub enum Layout {
    /// Client `i` is member `i % per_room` of room `i / per_room`
    /// (fanout: rooms are filled one after another).
    Blocks { per_room: u32 },
    /// Client `i` is in room `i % rooms` (connections: round robin).
    RoundRobin,
}

/// How publishers send.
#[derive(Clone, Copy, Debug)]
pub enum Mode {
    /// Open loop: one message every `interval_ns` per publisher.
    Rate { interval_ns: u64 },
    /// Closed loop: `window` messages in flight per publisher.
    Window(u32),
}

/// The measured run of a fanout.
#[derive(Clone, Debug)]
pub struct RunPlan {
    pub mode: Mode,
    pub publishers_per_room: u32,
    pub size: usize,
    pub warmup_ns: u64,
    pub duration_ns: u64,
    /// Stop each publisher after this many measured messages.
    pub max_measured: Option<u64>,
    pub drain_timeout: Duration,
}

/// Everything a swarm needs.
#[derive(Clone, Debug)]
pub struct Spec {
    /// Where clients connect: the client in slot k of its room to
    /// `targets[k % len]` (at least one).
    pub targets: Vec<Target>,
    pub clients: u32,
    pub rooms: u32,
    pub layout: Layout,
    pub run: Option<RunPlan>,
    pub source_ips: Vec<Ipv4Addr>,
    pub concurrency: usize,
    pub connect_timeout: Duration,
    pub setup_timeout: Duration,
    pub ws_buffer: usize,
    /// Fail the setup if any client cannot connect.
    pub require_all: bool,
    pub label: &'static str,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Setup,
    Probe,
    Run,
    Stop,
}

/// The measured run's times, in ns since [`ids::START`].
#[derive(Clone, Copy, Debug)]
struct Times {
    t0: u64,
    warm_end: u64,
    end: u64,
}

impl Times {
    #[inline]
    fn measured(&self, ns: u64) -> bool {
        ns >= self.warm_end && ns < self.end
    }
}

struct RoomState {
    joined: AtomicU32,
    confirmed: AtomicU32,
}

struct Shared {
    spec: Spec,
    run_id: RunId,
    ws_config: tungstenite::protocol::WebSocketConfig,
    connect_slots: Semaphore,
    rooms: Box<[RoomState]>,
    room_names: Box<[String]>,
    content: String,
    /// Woken on every setup step and publisher stop; the coordinator waits on it.
    progress: Notify,
    attempts: AtomicU32,
    connected: AtomicU32,
    confirmed: AtomicU32,
    lost_in_setup: AtomicU32,
    /// Error frames seen before the run (reported with a setup failure).
    setup_errors: Mutex<Reasons>,
    connect_failures: Mutex<Reasons>,
    publishers_stopped: AtomicU32,
    last_stop_ns: AtomicU64,
    times: OnceLock<Times>,
    sent: Sharded,
    received: Sharded,
    /// Delivery latency to members on the publisher's target `[0]` and on
    /// another `[1]`.
    delivery: [HistShards; 2],
    confirm: HistShards,
    lag: HistShards,
}

impl Shared {
    fn new(spec: Spec) -> Shared {
        let run_id = RunId::new();
        Shared {
            ws_config: ws::config(spec.ws_buffer),
            connect_slots: Semaphore::new(spec.concurrency.max(1)),
            rooms: (0..spec.rooms)
                .map(|_| RoomState {
                    joined: AtomicU32::new(0),
                    confirmed: AtomicU32::new(0),
                })
                .collect(),
            room_names: (0..spec.rooms)
                .map(|r| format!("b{}-{r}", run_id.as_str()))
                .collect(),
            content: ids::content(spec.run.as_ref().map_or(1, |r| r.size)),
            run_id,
            progress: Notify::new(),
            attempts: AtomicU32::new(0),
            connected: AtomicU32::new(0),
            confirmed: AtomicU32::new(0),
            lost_in_setup: AtomicU32::new(0),
            setup_errors: Mutex::new(Reasons::default()),
            connect_failures: Mutex::new(Reasons::default()),
            publishers_stopped: AtomicU32::new(0),
            last_stop_ns: AtomicU64::new(0),
            times: OnceLock::new(),
            sent: Sharded::default(),
            received: Sharded::default(),
            delivery: Default::default(),
            confirm: HistShards::default(),
            lag: HistShards::default(),
            spec,
        }
    }

    /// (room, slot in the room) of client `i`.
    fn place(&self, i: u32) -> (u32, u32) {
        match self.spec.layout {
            Layout::Blocks { per_room } => (i / per_room, i % per_room),
            Layout::RoundRobin => (i % self.spec.rooms, i / self.spec.rooms),
        }
    }

    fn publishers_per_room(&self) -> u32 {
        self.spec.run.as_ref().map_or(0, |r| r.publishers_per_room)
    }

    fn total_publishers(&self) -> u32 {
        self.publishers_per_room() * self.spec.rooms
    }

    /// Index in `spec.targets` of the client in `slot` of its room.
    fn target_of(&self, slot: u32) -> usize {
        slot as usize % self.spec.targets.len().max(1)
    }

    fn user_name(&self, room: u32, slot: u32) -> String {
        format!("{}-{slot}", self.room_names[room as usize])
    }
}

/// One client's figures.
#[derive(Debug, Default)]
pub struct ClientStats {
    pub connected: bool,
    /// Messages sent (publishers), and those sent in the measured window.
    pub sent: u64,
    pub sent_measured: u64,
    /// Own messages echoed back, and those echoed in the measured window.
    pub confirmed: u64,
    pub confirmed_measured: u64,
    /// chat_message arrivals (own echoes included) in the measured window.
    pub delivered_measured: u64,
    /// Distinct messages of this run received (own echoes included).
    pub unique: u64,
    pub duplicates: u64,
    pub out_of_order: u64,
    /// chat_message frames that are not of this run or not of this room.
    pub foreign: u64,
    pub error_frames: u64,
    pub unparsable_frames: u64,
    pub error_samples: Samples,
    /// Why the connection ended before the run was over, if it did.
    pub ended: Option<String>,
}

/// What the setup achieved.
#[derive(Clone, Debug, Default, Serialize)]
pub struct SetupReport {
    pub clients: u32,
    pub connected: u32,
    pub connect_failures: u64,
    pub connect_failure_reasons: Reasons,
    /// From the first connect to the last attempt's end.
    pub connect_secs: f64,
    /// Successful handshakes per second over the connect phase.
    pub handshakes_per_sec: f64,
    /// From the first connect until every member of every room received a probe.
    pub joined_secs: f64,
    pub members_confirmed: u32,
    pub rooms: u32,
    /// `error` frames received before the run, by code and message.
    pub setup_error_frames: Reasons,
}

/// A running swarm; [`Swarm::start`] returns it with every member confirmed.
pub struct Swarm {
    shared: Arc<Shared>,
    phase: watch::Sender<Phase>,
    tasks: Vec<JoinHandle<ClientStats>>,
    pub setup: SetupReport,
}

/// The figures of a measured run, summed over clients.
#[derive(Debug)]
pub struct RunTotals {
    pub clients: Vec<ClientStats>,
    /// Length of the measured window in ns (shorter than planned when
    /// publishers stopped early on a message count).
    pub measured_ns: u64,
    pub drain_secs: f64,
    pub drained: bool,
    /// Both of the next two.
    pub delivery: hdrhistogram::Histogram<u64>,
    /// Deliveries to members on the publisher's target.
    pub delivery_same_url: hdrhistogram::Histogram<u64>,
    /// Deliveries to members on another target than the publisher's.
    pub delivery_other_url: hdrhistogram::Histogram<u64>,
    pub confirm: hdrhistogram::Histogram<u64>,
    pub send_lag: hdrhistogram::Histogram<u64>,
}

impl Swarm {
    /// Connects every client, joins the rooms and proves membership; an
    /// error if that fails (every client is then stopped).
    pub async fn start(spec: Spec) -> anyhow::Result<Swarm> {
        let (phase, phase_rx) = watch::channel(Phase::Setup);
        let shared = Arc::new(Shared::new(spec));
        let clients = shared.spec.clients;
        let label = shared.spec.label;
        let started = Instant::now();
        let tasks = (0..clients)
            .map(|i| tokio::spawn(client(shared.clone(), i, phase_rx.clone())))
            .collect();
        let mut swarm = Swarm {
            shared: shared.clone(),
            phase,
            tasks,
            setup: SetupReport {
                clients,
                rooms: shared.spec.rooms,
                ..SetupReport::default()
            },
        };

        // 1. Every connection attempt resolved (each is bounded by its timeout).
        wait_until(
            &shared,
            None,
            || shared.attempts.load(Ordering::Acquire) >= clients,
            || {
                format!(
                    "{label}: connecting {}/{clients} ({} failed)",
                    shared.connected.load(Ordering::Relaxed),
                    shared.attempts.load(Ordering::Relaxed)
                        - shared.connected.load(Ordering::Relaxed)
                )
            },
        )
        .await;
        let connect_ns = started.elapsed().as_nanos() as u64;
        let connected = shared.connected.load(Ordering::Acquire);
        let failures = lock(&shared.connect_failures).clone();
        swarm.setup.connected = connected;
        swarm.setup.connect_failures = failures.total();
        swarm.setup.connect_failure_reasons = failures;
        swarm.setup.connect_secs = round3(connect_ns as f64 / 1e9);
        swarm.setup.handshakes_per_sec = per_sec(u64::from(connected), connect_ns);
        eprintln!(
            "{label}: {connected}/{clients} connected in {:.2}s ({} handshakes/s){}",
            swarm.setup.connect_secs,
            swarm.setup.handshakes_per_sec,
            if swarm.setup.connect_failures > 0 {
                format!("; failures: {}", swarm.setup.connect_failure_reasons.line())
            } else {
                String::new()
            }
        );
        if connected == 0 || (shared.spec.require_all && connected < clients) {
            let reasons = swarm.setup.connect_failure_reasons.line();
            swarm.abort().await;
            bail!("only {connected} of {clients} clients could connect ({reasons})");
        }

        // 2. Membership: probes until every connected member got one.
        let _ = swarm.phase.send(Phase::Probe);
        let deadline = Instant::now() + shared.spec.setup_timeout;
        let confirmed = wait_until(
            &shared,
            Some(deadline),
            || {
                shared.confirmed.load(Ordering::Acquire) >= connected
                    || shared.lost_in_setup.load(Ordering::Acquire) > 0
            },
            || {
                format!(
                    "{label}: membership confirmed {}/{connected}",
                    shared.confirmed.load(Ordering::Relaxed)
                )
            },
        )
        .await;
        let members = shared.confirmed.load(Ordering::Acquire);
        let lost = shared.lost_in_setup.load(Ordering::Acquire);
        swarm.setup.members_confirmed = members;
        swarm.setup.joined_secs = round3(started.elapsed().as_secs_f64());
        swarm.setup.setup_error_frames = lock(&shared.setup_errors).clone();
        if !confirmed || members < connected {
            let rooms_done = shared
                .rooms
                .iter()
                .filter(|r| r.confirmed.load(Ordering::Relaxed) >= r.joined.load(Ordering::Relaxed))
                .count();
            let errors = swarm.setup.setup_error_frames.line();
            swarm.abort().await;
            bail!(
                "membership not confirmed: {members} of {connected} members received a probe \
                 ({rooms_done} of {} rooms complete, {lost} connections lost during setup, \
                 setup timeout {:?}); error frames received: {errors}",
                shared.spec.rooms,
                shared.spec.setup_timeout
            );
        }
        eprintln!(
            "{label}: {members} members of {} rooms confirmed after {:.2}s",
            shared.spec.rooms, swarm.setup.joined_secs
        );
        Ok(swarm)
    }

    /// The measured run: publishers send until the planned end (or their
    /// message count), then every client waits until all expected messages
    /// arrived or the drain timeout passed; then every client stops.
    pub async fn run(self) -> anyhow::Result<RunTotals> {
        let shared = self.shared.clone();
        let Some(plan) = shared.spec.run.clone() else {
            bail!("no run planned");
        };
        let label = shared.spec.label;
        // A little ahead, so every publisher's first message is on schedule.
        let t0 = now_ns() + 20_000_000;
        let times = Times {
            t0,
            warm_end: t0 + plan.warmup_ns,
            end: t0 + plan.warmup_ns + plan.duration_ns,
        };
        let _ = shared.times.set(times);
        let _ = self.phase.send(Phase::Run);

        let publishers = shared.total_publishers();
        let planned_end = ids::instant_at(times.end).into_std();
        let mut last = (Instant::now(), 0u64, 0u64);
        wait_until(
            &shared,
            Some(planned_end + STOP_GRACE),
            || shared.publishers_stopped.load(Ordering::Acquire) >= publishers,
            || {
                let now = Instant::now();
                let (sent, received) = (shared.sent.sum(), shared.received.sum());
                let ns = (now - last.0).as_nanos() as u64;
                let line = format!(
                    "{label}: {:.0}s sent {}/s delivered {}/s{}",
                    (now_ns().saturating_sub(t0)) as f64 / 1e9,
                    per_sec(sent - last.1, ns),
                    per_sec(received - last.2, ns),
                    if now_ns() < times.warm_end {
                        " (warm-up)"
                    } else {
                        ""
                    }
                );
                last = (now, sent, received);
                line
            },
        )
        .await;
        let stopped_ns = shared
            .last_stop_ns
            .load(Ordering::Acquire)
            .max(times.warm_end);
        let measured_ns = stopped_ns.min(times.end) - times.warm_end;

        // Drain: every member gets every message that was sent.
        let drain_start = Instant::now();
        let drain_deadline = drain_start + plan.drain_timeout;
        let members = match shared.spec.layout {
            Layout::Blocks { per_room } => u64::from(per_room),
            Layout::RoundRobin => 1,
        };
        let mut drained = false;
        loop {
            let expected = shared.sent.sum() * members;
            if shared.received.sum() >= expected {
                drained = true;
                break;
            }
            if Instant::now() >= drain_deadline {
                break;
            }
            // The tool's own polling of counters, at a tick far below any
            // figure it reports; receivers never block on it.
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let drain_secs = round3(drain_start.elapsed().as_secs_f64());
        let clients = self.stop().await;
        let [same, other] = &shared.delivery;
        let (delivery_same_url, delivery_other_url) = (same.merged(), other.merged());
        let mut delivery = delivery_same_url.clone();
        // Same bounds on both sides: adding cannot fail.
        let _ = delivery.add(&delivery_other_url);
        Ok(RunTotals {
            clients,
            measured_ns,
            drain_secs,
            drained,
            delivery,
            delivery_same_url,
            delivery_other_url,
            confirm: shared.confirm.merged(),
            send_lag: shared.lag.merged(),
        })
    }

    /// Closes every connection and returns every client's figures.
    pub async fn stop(self) -> Vec<ClientStats> {
        let _ = self.phase.send(Phase::Stop);
        let mut all = Vec::with_capacity(self.tasks.len());
        for task in self.tasks {
            match task.await {
                Ok(stats) => all.push(stats),
                Err(e) => all.push(ClientStats {
                    ended: Some(format!("client task failed: {e}")),
                    ..ClientStats::default()
                }),
            }
        }
        all
    }

    async fn abort(&mut self) {
        let _ = self.phase.send(Phase::Stop);
        for task in &self.tasks {
            task.abort();
        }
        for task in self.tasks.drain(..) {
            let _ = task.await;
        }
    }

    /// Members of this run per room, as planned.
    pub fn members_per_room(&self) -> u32 {
        match self.shared.spec.layout {
            Layout::Blocks { per_room } => per_room,
            Layout::RoundRobin => self.shared.spec.clients.div_ceil(self.shared.spec.rooms),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    }
}

pub(crate) fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// Waits until `done()`, woken by the clients' progress notifications,
/// printing `progress()` to stderr every second; false at the deadline.
async fn wait_until(
    shared: &Shared,
    deadline: Option<Instant>,
    mut done: impl FnMut() -> bool,
    mut progress: impl FnMut() -> String,
) -> bool {
    let mut next_print = Instant::now() + Duration::from_secs(1);
    loop {
        if done() {
            return true;
        }
        let now = Instant::now();
        if deadline.is_some_and(|d| now >= d) {
            return false;
        }
        if now >= next_print {
            eprintln!("{}", progress());
            next_print = now + Duration::from_secs(1);
        }
        let wake = deadline.map_or(next_print, |d| d.min(next_print));
        tokio::select! {
            _ = shared.progress.notified() => {}
            _ = tokio::time::sleep_until(wake.into()) => {}
        }
    }
}

struct Publisher {
    index: u32,
    frames: ChatFrames,
    mode: Mode,
    max_measured: Option<u64>,
    counter: u64,
    in_flight: u32,
    next_due: u64,
    /// Closed loop: the send timer filled the window, so from now on every
    /// echo refills it. A flag, not a look at the clock: comparing the
    /// echo's arrival with t0 stalled a publisher whose timer fired a little
    /// before t0 and whose echo came back before t0 too (nothing was sent
    /// again until the end: a run that measured nothing).
    opened: bool,
    stopped: bool,
    lag: LatBuf,
}

struct Client {
    shared: Arc<Shared>,
    index: u32,
    room: u32,
    prober: bool,
    member: bool,
    probes_sent: u64,
    probe_retry: Duration,
    publisher: Option<Publisher>,
    /// What this client saw of each publisher of its room.
    tracks: Vec<Track>,
    /// Index of the target this client is connected to.
    target: usize,
    /// As `Shared::delivery`: same target as the publisher, another.
    delivery: [LatBuf; 2],
    confirm: LatBuf,
    stats: ClientStats,
}

async fn client(shared: Arc<Shared>, index: u32, phase: watch::Receiver<Phase>) -> ClientStats {
    let (room, slot) = shared.place(index);
    let attempt_done = |shared: &Shared| {
        shared.attempts.fetch_add(1, Ordering::AcqRel);
        shared.progress.notify_one();
    };
    let fail = |shared: &Shared, reason: String| {
        lock(&shared.connect_failures).add(reason, 1);
        attempt_done(shared);
        ClientStats::default()
    };
    let source = match shared.spec.source_ips.as_slice() {
        [] => None,
        ips => Some(ips[index as usize % ips.len()]),
    };
    let connecting = async {
        let _slot = shared.connect_slots.acquire().await;
        if *phase.borrow() == Phase::Stop {
            return Err("aborted".to_owned());
        }
        let Some(target) = shared.spec.targets.get(shared.target_of(slot)) else {
            return Err("no target".to_owned());
        };
        let mut ws = ws::connect(
            target,
            source,
            shared.ws_config,
            shared.spec.connect_timeout,
        )
        .await?;
        let user = shared.user_name(room, slot);
        let join = ws::join_frame(&shared.room_names[room as usize], &user);
        match tokio::time::timeout(shared.spec.connect_timeout, ws.send(join)).await {
            Ok(Ok(())) => Ok((ws, user)),
            Ok(Err(e)) => Err(ws::ws_reason("join", &e)),
            Err(_) => Err("join: timeout".to_owned()),
        }
    };
    let (ws, user) = match connecting.await {
        Ok(connected) => connected,
        Err(reason) => return fail(&shared, reason),
    };
    let prober = shared.rooms[room as usize]
        .joined
        .fetch_add(1, Ordering::AcqRel)
        == 0;
    shared.connected.fetch_add(1, Ordering::AcqRel);
    attempt_done(&shared);

    let mut client = Client::new(shared, index, &user, prober);
    client.run(ws, phase).await;
    client.stats
}

impl Client {
    /// Client `index`, connected and joined as `user`; `prober`: the first
    /// of its room to join, who proves membership for the room.
    fn new(shared: Arc<Shared>, index: u32, user: &str, prober: bool) -> Client {
        let (room, slot) = shared.place(index);
        let publisher = shared.spec.run.as_ref().and_then(|plan| {
            (slot < plan.publishers_per_room).then(|| Publisher {
                index: room * plan.publishers_per_room + slot,
                frames: ChatFrames::new(
                    &shared.run_id,
                    &shared.room_names[room as usize],
                    user,
                    &shared.content,
                ),
                mode: plan.mode,
                max_measured: plan.max_measured,
                counter: 0,
                in_flight: 0,
                next_due: 0,
                opened: false,
                stopped: false,
                lag: LatBuf::default(),
            })
        });
        let tracks = vec![Track::default(); shared.publishers_per_room() as usize];
        let target = shared.target_of(slot);
        Client {
            shared,
            index,
            room,
            prober,
            member: false,
            probes_sent: 0,
            probe_retry: FIRST_PROBE_RETRY,
            publisher,
            tracks,
            target,
            delivery: Default::default(),
            confirm: LatBuf::default(),
            stats: ClientStats {
                connected: true,
                ..ClientStats::default()
            },
        }
    }

    async fn run(&mut self, mut ws: Ws, mut phase_rx: watch::Receiver<Phase>) {
        let far = || tokio::time::Instant::now() + Duration::from_secs(86_400 * 365);
        let probe_timer = tokio::time::sleep_until(far());
        let send_timer = tokio::time::sleep_until(far());
        tokio::pin!(probe_timer, send_timer);
        let (mut probe_armed, mut send_armed) = (false, false);
        let mut phase = *phase_rx.borrow_and_update();
        let mut entered = Phase::Setup;
        // One future per phase change (a handful per run), not one per
        // loop iteration: it owns the receiver and gives it back.
        let mut next_phase = Box::pin(next_phase(phase_rx));

        let ended = loop {
            // React to a phase once, however it was noticed.
            if phase != entered {
                entered = phase;
                match phase {
                    Phase::Setup => {}
                    Phase::Probe => {
                        if self.prober {
                            if let Err(e) = self.send_probe(&mut ws).await {
                                break Some(e);
                            }
                            probe_timer
                                .as_mut()
                                .reset(tokio::time::Instant::now() + self.probe_retry);
                            probe_armed = true;
                        }
                    }
                    Phase::Run => {
                        probe_armed = false;
                        if let Some(at) = self.start_run() {
                            send_timer.as_mut().reset(ids::instant_at(at));
                            send_armed = true;
                        }
                    }
                    Phase::Stop => break None,
                }
            }
            tokio::select! {
                biased;
                changed = &mut next_phase => {
                    match changed {
                        Some((new, rx)) => {
                            phase = new;
                            next_phase = Box::pin(self::next_phase(rx));
                        }
                        None => break None,
                    }
                }
                msg = ws.next() => {
                    if let Err(e) = self.on_message(msg) {
                        break Some(e);
                    }
                    // Take every frame already read before writing.
                    let mut failed = None;
                    while let Some(msg) = ws.next().now_or_never() {
                        if let Err(e) = self.on_message(msg) {
                            failed = Some(e);
                            break;
                        }
                    }
                    if failed.is_some() {
                        break failed;
                    }
                    if let Err(e) = self.after_reads(&mut ws, now_ns()).await {
                        break Some(e);
                    }
                }
                () = &mut probe_timer, if probe_armed => {
                    let room = &self.shared.rooms[self.room as usize];
                    if room.confirmed.load(Ordering::Acquire) >= room.joined.load(Ordering::Acquire) {
                        probe_armed = false;
                    } else {
                        if let Err(e) = self.send_probe(&mut ws).await {
                            break Some(e);
                        }
                        self.probe_retry = (self.probe_retry * 2).min(MAX_PROBE_RETRY);
                        probe_timer.as_mut().reset(tokio::time::Instant::now() + self.probe_retry);
                    }
                }
                () = &mut send_timer, if send_armed => {
                    match self.on_send_timer(&mut ws, now_ns()).await {
                        Ok(Some(next)) => send_timer.as_mut().reset(ids::instant_at(next)),
                        Ok(None) => send_armed = false,
                        Err(e) => break Some(e),
                    }
                }
            }
        };

        self.flush_latencies();
        if let Some(p) = self.publisher.as_mut()
            && !p.stopped
        {
            p.stopped = true;
            stop_publisher(&self.shared, p);
        }
        match ended {
            None => {
                let _ = tokio::time::timeout(CLOSE_TIMEOUT, ws.close(None)).await;
            }
            Some(reason) => {
                if phase == Phase::Setup || phase == Phase::Probe {
                    self.shared.lost_in_setup.fetch_add(1, Ordering::AcqRel);
                    self.shared.progress.notify_one();
                }
                self.stats.ended = Some(reason);
            }
        }
    }

    async fn send_probe(&mut self, ws: &mut Ws) -> Result<(), String> {
        self.probes_sent += 1;
        let id = MessageId {
            ts_ns: now_ns(),
            kind: Kind::Probe,
            publisher: self.room,
            counter: self.probes_sent,
        };
        let user = self.shared.user_name(self.room, 0);
        let frames = ChatFrames::new(
            &self.shared.run_id,
            &self.shared.room_names[self.room as usize],
            &user,
            "probe",
        );
        ws.send(frames.frame(&id))
            .await
            .map_err(|e| ws::ws_reason("send", &e))
    }

    /// Handles one read result; an error ends the client.
    #[inline]
    fn on_message(
        &mut self,
        msg: Option<Result<Message, tungstenite::Error>>,
    ) -> Result<(), String> {
        match msg {
            None => Err("closed without a close frame".to_owned()),
            Some(Err(e)) => Err(ws::ws_reason("read", &e)),
            Some(Ok(Message::Text(text))) => {
                self.on_text(text.as_str());
                Ok(())
            }
            Some(Ok(Message::Close(frame))) => Err(match frame {
                Some(f) => format!("closed by server: {}", u16::from(f.code)),
                None => "closed by server: no code".to_owned(),
            }),
            Some(Ok(_)) => Ok(()),
        }
    }

    #[inline]
    fn on_text(&mut self, text: &str) {
        match ws::parse(text) {
            Parsed::Chat(id) => self.on_chat(&id),
            Parsed::Error => {
                self.stats.error_frames += 1;
                let error = ws::describe_error(text);
                if self.shared.times.get().is_none() {
                    // Before the run: the coordinator reports these if the setup fails.
                    lock(&self.shared.setup_errors).add(ws::clip(&error, 80), 1);
                }
                self.stats.error_samples.add(error);
            }
            Parsed::Other => {}
            Parsed::Unparsable => {
                self.stats.unparsable_frames += 1;
                self.stats
                    .error_samples
                    .add(format!("unparsable: {}", ws::clip(text, 120)));
            }
        }
    }

    #[inline]
    fn on_chat(&mut self, id: &str) {
        let now = now_ns();
        let Some(m) = MessageId::parse(&self.shared.run_id, id) else {
            self.stats.foreign += 1;
            return;
        };
        if m.kind == Kind::Probe {
            if m.publisher != self.room {
                self.stats.foreign += 1;
            } else if !self.member {
                self.member = true;
                self.shared.rooms[self.room as usize]
                    .confirmed
                    .fetch_add(1, Ordering::AcqRel);
                self.shared.confirmed.fetch_add(1, Ordering::AcqRel);
                self.shared.progress.notify_one();
            }
            return;
        }
        let per_room = self.tracks.len() as u32;
        if per_room == 0 || m.publisher / per_room != self.room {
            self.stats.foreign += 1;
            return;
        }
        match self.tracks[(m.publisher % per_room) as usize].arrive(m.counter) {
            Arrival::Duplicate => {
                self.stats.duplicates += 1;
                return;
            }
            Arrival::OutOfOrder => self.stats.out_of_order += 1,
            Arrival::InOrder => {}
        }
        self.stats.unique += 1;
        let shard = self.index as usize;
        self.shared.received.add(shard, 1);
        let Some(times) = self.shared.times.get() else {
            return;
        };
        if times.measured(now) {
            self.stats.delivered_measured += 1;
        }
        let latency = now.saturating_sub(m.ts_ns);
        let sent_measured = times.measured(m.ts_ns);
        match self.publisher.as_mut() {
            Some(p) if p.index == m.publisher => {
                self.stats.confirmed += 1;
                if times.measured(now) {
                    self.stats.confirmed_measured += 1;
                }
                p.in_flight = p.in_flight.saturating_sub(1);
                if sent_measured {
                    self.confirm.push(&self.shared.confirm, shard, latency);
                }
            }
            _ => {
                if sent_measured {
                    let other = self.shared.target_of(m.publisher % per_room) != self.target;
                    self.delivery[usize::from(other)].push(
                        &self.shared.delivery[usize::from(other)],
                        shard,
                        latency,
                    );
                }
            }
        }
    }

    /// A publisher's schedule at the start of the run: when its send timer
    /// first fires (ns since [`ids::START`]), `None` for a mere member.
    fn start_run(&mut self) -> Option<u64> {
        let times = self.shared.times.get()?;
        let p = self.publisher.as_mut()?;
        Some(match p.mode {
            Mode::Rate { interval_ns } => {
                p.next_due = times.t0 + fastrand::u64(0..interval_ns.max(1));
                p.next_due.saturating_sub(SEND_SLACK_NS)
            }
            // No slack: the window opens at t0, not before, so no message
            // of the run is sent (nor echoed) before the run starts.
            Mode::Window(_) => {
                p.next_due = times.t0;
                times.t0
            }
        })
    }

    /// Closed loop: refill the window after echoes came back (`now`: ns
    /// since [`ids::START`]).
    async fn after_reads(&mut self, ws: &mut Ws, now: u64) -> Result<(), String> {
        let Some(times) = self.shared.times.get().copied() else {
            return Ok(());
        };
        let Some(p) = self.publisher.as_mut() else {
            return Ok(());
        };
        let Mode::Window(window) = p.mode else {
            return Ok(());
        };
        // Before the send timer opened the window, echoes (late probes) are
        // no cue to send: the timer starts the run.
        if p.stopped || !p.opened {
            return Ok(());
        }
        if p.in_flight < window {
            self.refill(ws, window, now, times).await?;
        }
        Ok(())
    }

    async fn refill(
        &mut self,
        ws: &mut Ws,
        window: u32,
        now: u64,
        times: Times,
    ) -> Result<(), String> {
        let Some(p) = self.publisher.as_mut() else {
            return Ok(());
        };
        let mut fed = false;
        while p.in_flight < window {
            if now >= times.end
                || p.max_measured
                    .is_some_and(|max| self.stats.sent_measured >= max)
            {
                p.stopped = true;
                stop_publisher(&self.shared, p);
                break;
            }
            send_one(&self.shared, p, &mut self.stats, ws, now, times, self.index).await?;
            p.in_flight += 1;
            fed = true;
        }
        if fed {
            ws.flush().await.map_err(|e| ws::ws_reason("send", &e))?;
        }
        Ok(())
    }

    /// The publisher's timer, fired at `now` (ns since [`ids::START`]):
    /// open loop, send what is due; closed loop, open the window (at t0)
    /// and notice the end. Returns when to fire next (ns), if ever.
    async fn on_send_timer(&mut self, ws: &mut Ws, now: u64) -> Result<Option<u64>, String> {
        let Some(times) = self.shared.times.get().copied() else {
            return Ok(None);
        };
        let index = self.index;
        let Some(p) = self.publisher.as_mut() else {
            return Ok(None);
        };
        if p.stopped {
            return Ok(None);
        }
        match p.mode {
            Mode::Window(window) => {
                if now < times.t0 {
                    return Ok(Some(times.t0));
                }
                if now >= times.end {
                    p.stopped = true;
                    stop_publisher(&self.shared, p);
                    return Ok(None);
                }
                p.opened = true;
                self.refill(ws, window, now, times).await?;
                // Wake at the end even if no echo ever comes back.
                Ok(Some(times.end))
            }
            Mode::Rate { interval_ns } => {
                let horizon = now + SEND_SLACK_NS;
                let mut fed = false;
                while p.next_due <= horizon {
                    if p.next_due >= times.end
                        || p.max_measured
                            .is_some_and(|max| self.stats.sent_measured >= max)
                    {
                        p.stopped = true;
                        stop_publisher(&self.shared, p);
                        break;
                    }
                    if p.next_due >= times.warm_end {
                        p.lag.push(
                            &self.shared.lag,
                            index as usize,
                            now.saturating_sub(p.next_due),
                        );
                    }
                    // Early (within the slack): timed from the real send;
                    // late: from the schedule (no coordinated omission).
                    let ts = p.next_due.min(now);
                    send_one(&self.shared, p, &mut self.stats, ws, ts, times, index).await?;
                    p.next_due += interval_ns;
                    fed = true;
                }
                if fed {
                    ws.flush().await.map_err(|e| ws::ws_reason("send", &e))?;
                }
                if p.stopped {
                    return Ok(None);
                }
                Ok(Some(p.next_due.saturating_sub(SEND_SLACK_NS)))
            }
        }
    }

    fn flush_latencies(&mut self) {
        let shard = self.index as usize;
        for (buf, shards) in self.delivery.iter_mut().zip(&self.shared.delivery) {
            buf.flush(shards, shard);
        }
        self.confirm.flush(&self.shared.confirm, shard);
        if let Some(p) = self.publisher.as_mut() {
            p.lag.flush(&self.shared.lag, shard);
        }
    }
}

/// The next phase, and the receiver back; `None` if the coordinator is gone.
async fn next_phase(mut rx: watch::Receiver<Phase>) -> Option<(Phase, watch::Receiver<Phase>)> {
    rx.changed().await.ok()?;
    let phase = *rx.borrow_and_update();
    Some((phase, rx))
}

/// Queues one message (the caller flushes).
async fn send_one(
    shared: &Shared,
    p: &mut Publisher,
    stats: &mut ClientStats,
    ws: &mut Ws,
    ts: u64,
    times: Times,
    shard: u32,
) -> Result<(), String> {
    p.counter += 1;
    let id = MessageId {
        ts_ns: ts,
        kind: Kind::Message,
        publisher: p.index,
        counter: p.counter,
    };
    ws.feed(p.frames.frame(&id))
        .await
        .map_err(|e| ws::ws_reason("send", &e))?;
    stats.sent += 1;
    if times.measured(ts) {
        stats.sent_measured += 1;
    }
    shared.sent.add(shard as usize, 1);
    Ok(())
}

fn stop_publisher(shared: &Shared, _p: &Publisher) {
    shared.last_stop_ns.fetch_max(now_ns(), Ordering::AcqRel);
    shared.publishers_stopped.fetch_add(1, Ordering::AcqRel);
    shared.progress.notify_one();
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    const MS: u64 = 1_000_000;
    const WAIT: Duration = Duration::from_secs(5);

    /// One WebSocket connection over loopback: (the tool's end, the server's).
    async fn ws_pair() -> (Ws, Target, Ws) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let server = tokio::spawn(async move {
            let (stream, _) = listener.accept().await.expect("accept");
            tokio_tungstenite::accept_async(stream)
                .await
                .expect("handshake")
        });
        let target = Target {
            url: format!("ws://{addr}/"),
            addr,
        };
        let ws = ws::connect(&target, None, ws::config(4096), WAIT)
            .await
            .expect("connect");
        let server = tokio::time::timeout(WAIT, server)
            .await
            .expect("accepted in time")
            .expect("server task");
        (ws, target, server)
    }

    /// One room, one client publishing in a closed loop of `window`.
    fn closed_loop(target: Target, window: u32) -> Spec {
        Spec {
            targets: vec![target],
            clients: 1,
            rooms: 1,
            layout: Layout::Blocks { per_room: 1 },
            run: Some(RunPlan {
                mode: Mode::Window(window),
                publishers_per_room: 1,
                size: 16,
                warmup_ns: 0,
                duration_ns: 10_000 * MS,
                max_measured: None,
                drain_timeout: WAIT,
            }),
            source_ips: Vec::new(),
            concurrency: 1,
            connect_timeout: WAIT,
            setup_timeout: WAIT,
            ws_buffer: 4096,
            require_all: true,
            label: "test",
        }
    }

    async fn next_text(ws: &mut Ws) -> String {
        loop {
            let msg = tokio::time::timeout(WAIT, ws.next())
                .await
                .expect("a frame in time")
                .expect("open")
                .expect("readable");
            if let Message::Text(text) = msg {
                return text.as_str().to_owned();
            }
        }
    }

    fn counter_of(run: &RunId, frame: &str) -> u64 {
        let Parsed::Chat(id) = ws::parse(frame) else {
            panic!("not a chat message: {frame}");
        };
        MessageId::parse(run, &id)
            .expect("an id of this run")
            .counter
    }

    /// Item 16 of issue 8: the send timer of a window could fire (and send)
    /// up to a millisecond before t0, the echo come back before t0 too, and
    /// echoes before t0 did not refill the window: the publisher sent
    /// nothing more until the end, and pingpong measured 0 round trips.
    /// Here every instant is chosen, not read from the clock: the timer
    /// fires the moment it is due, the echo comes back 50 µs after the send.
    #[tokio::test]
    async fn the_first_echo_refills_the_window_however_early_it_arrives() {
        let (mut ws, target, mut server) = ws_pair().await;
        let shared = Arc::new(Shared::new(closed_loop(target, 1)));
        // A minute ahead of the real clock, so nothing here depends on it.
        let t0 = now_ns() + 60_000 * MS;
        let times = Times {
            t0,
            warm_end: t0,
            end: t0 + 10_000 * MS,
        };
        shared.times.set(times).expect("times set once");
        let mut c = Client::new(shared.clone(), 0, "u", true);

        // A read (a late probe) before the timer opened the window is no
        // cue to start.
        c.after_reads(&mut ws, t0 - MS / 2).await.expect("no send");
        assert_eq!(c.stats.sent, 0, "the timer starts the run, not a read");

        let mut due = c.start_run().expect("a publisher has a send timer");
        let opened_at = loop {
            let fired_at = due;
            due = c
                .on_send_timer(&mut ws, fired_at)
                .await
                .expect("sends")
                .expect("fires again");
            if c.stats.sent > 0 {
                break fired_at;
            }
            assert!(due > fired_at, "re-armed for later, not for now");
        };
        assert_eq!(c.stats.sent, 1, "a window of 1");

        let frame = next_text(&mut server).await;
        assert_eq!(counter_of(&shared.run_id, &frame), 1);
        server.send(Message::text(frame)).await.expect("echo");
        let echo = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("echo in time");
        c.on_message(echo).expect("an echo, not an error");
        c.after_reads(&mut ws, opened_at + 50_000)
            .await
            .expect("refills");

        assert_eq!(c.stats.sent, 2, "the echo refilled the window");
        let frame = next_text(&mut server).await;
        assert_eq!(counter_of(&shared.run_id, &frame), 2);
        assert!(opened_at >= t0, "no message of the run before t0");
        let p = c.publisher.as_ref().expect("publisher");
        assert_eq!((p.in_flight, p.stopped), (1, false));
    }
}
