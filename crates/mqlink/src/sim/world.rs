//! One simulated run: a scenario drawn from the seed, the world (disk, network, broker),
//! mqlink's publish path as processes that crash and restart, the fault schedule, the
//! final heal, and the facts the checker reads.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use mqlink_spool::{AppendOutcome, OnCorruption, OnFull, Spool, SpoolError, SpoolOptions};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::broker::{Broker, BrokerCfg};
use super::disk::SimDisk;
use super::net::{Close, Net};
use super::rng::Rng;
use super::trace::Trace;
use crate::dead_letter::DeadLetter;
use crate::mqtt::client::{self, MqttOptions};
use crate::mqtt::codec::{Protocol, PublishProps, QoS};
use crate::mqtt::transport::{BoxIo, Dial};
use crate::mqtt::url::BrokerUrl;
use crate::publish::message::OutMessage;
use crate::publish::publisher::{PublishStats, Publisher};

/// Simulated time the publish path gets after the final heal to deliver everything: the
/// longest transient-refusal backoff (30 s), reconnect backoff, keepalive and connect
/// timeouts, and a few 3.1.1 probes of messages a broker closes on.
pub(crate) const LIVENESS_BOUND: Duration = Duration::from_secs(90);

/// What a route is, for the checker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Class {
    Normal,
    /// Topic `deny/`: the broker refuses it (0x87 on v5).
    Deny,
    /// Topic `bad/`: the broker refuses it (0x90 on v5).
    Bad,
    /// Larger than the broker's Maximum Packet Size.
    Big,
    /// Retained, on a broker without retain.
    Retained,
}

#[derive(Debug, Clone)]
pub(crate) struct Route {
    pub topic: &'static str,
    pub qos: QoS,
    pub retain: bool,
    pub class: Class,
}

pub(crate) const ROUTES: [Route; 7] = [
    Route {
        topic: "r0/t",
        qos: QoS::AtMostOnce,
        retain: false,
        class: Class::Normal,
    },
    Route {
        topic: "r1/t",
        qos: QoS::AtLeastOnce,
        retain: false,
        class: Class::Normal,
    },
    Route {
        topic: "r2/t",
        qos: QoS::ExactlyOnce,
        retain: false,
        class: Class::Normal,
    },
    Route {
        topic: "ret/t",
        qos: QoS::AtLeastOnce,
        retain: true,
        class: Class::Retained,
    },
    Route {
        topic: "deny/t",
        qos: QoS::AtLeastOnce,
        retain: false,
        class: Class::Deny,
    },
    Route {
        topic: "bad/t",
        qos: QoS::ExactlyOnce,
        retain: false,
        class: Class::Bad,
    },
    Route {
        topic: "big/t",
        qos: QoS::AtLeastOnce,
        retain: false,
        class: Class::Big,
    },
];

/// A fault action at a moment of the run.
#[derive(Debug, Clone)]
pub(crate) enum Fault {
    /// Cut the newest connection after `bytes` more bytes in direction `dir` (0: to the
    /// broker, 1: to the client).
    Cut {
        dir: usize,
        bytes: u64,
        reset: bool,
    },
    /// The next connection is cut within its first bytes from the broker (before CONNACK).
    CutConnack {
        bytes: u64,
    },
    Blackhole(bool),
    /// Hold one direction (0: to the broker, 1: to the client), or let it flow again.
    HalfOpen {
        dir: usize,
        on: bool,
    },
    Delay(u64),
    /// Percent of QoS 1/2 messages refused transiently.
    Busy(u64),
    BrokerDown {
        persistence: bool,
    },
    BrokerUp,
    /// Broker's autosave.
    Snapshot,
    /// mqlink dies (SIGKILL; with `power_loss` the disk drops unsynced bytes) and starts
    /// again at once.
    Crash {
        power_loss: bool,
    },
    /// mqlink dies, a byte of a durable record flips, mqlink starts again.
    Flip,
    /// mqlink is stopped (SIGTERM: its tasks must end within a deadline, the spool is
    /// closed) and starts again.
    Restart,
    /// The disk fills up (`Some(headroom)`) or has room again.
    DiskFull(Option<u64>),
}

/// Everything a seed decides before the run.
#[derive(Debug, Clone)]
pub(crate) struct Scenario {
    pub seed: u64,
    pub client_v5: bool,
    pub broker: BrokerCfg,
    pub persistent: bool,
    pub max_inflight: u16,
    pub events: u32,
    pub load_ms: u64,
    /// Weights of the routes.
    pub weights: [u64; 7],
    pub big_payload: usize,
    pub on_corruption: OnCorruption,
    pub segment_bytes: u64,
    pub memory_bytes: u64,
    pub max_bytes: u64,
    pub schedule: Vec<(u64, Fault)>,
}

impl Scenario {
    pub(crate) fn draw(seed: u64) -> Scenario {
        let mut rng = Rng::new(seed);
        let broker_v5 = rng.chance(75);
        let client_v5 = rng.chance(80);
        let limits = rng.chance(40);
        let broker = BrokerCfg {
            v5: broker_v5,
            receive_max: if limits { rng.range(1, 8) as u16 } else { 20 },
            max_packet: (limits && rng.chance(50)).then_some(1024),
            max_qos: if limits && rng.chance(30) {
                QoS::AtLeastOnce
            } else {
                QoS::ExactlyOnce
            },
            retain_available: !(limits && rng.chance(30)),
            transient_codes: super::broker::TRANSIENT_CODES,
        };
        let mut weights = [30, 30, 30, 0, 0, 0, 0];
        if limits || rng.chance(30) {
            for w in &mut weights[3..] {
                *w = if rng.chance(50) { 1 } else { 0 };
            }
        }
        let load_ms = rng.range(2_000, 12_000);
        let mut schedule = Vec::new();
        let n = rng.range(1, 6);
        for _ in 0..n {
            let at = rng.below(load_ms);
            let dur = rng.range(200, 6_000);
            match rng.below(14) {
                0 | 1 => {
                    for k in 0..rng.range(1, 3) {
                        schedule.push((
                            at + k * rng.range(50, 800),
                            Fault::Cut {
                                dir: rng.below(2) as usize,
                                bytes: rng.below(3000),
                                reset: rng.chance(50),
                            },
                        ));
                    }
                }
                2 => schedule.push((
                    at,
                    Fault::CutConnack {
                        bytes: rng.below(4),
                    },
                )),
                3 => {
                    schedule.push((at, Fault::Blackhole(true)));
                    schedule.push((at + dur, Fault::Blackhole(false)));
                }
                4 => {
                    schedule.push((at, Fault::Delay(rng.range(20, 500))));
                    schedule.push((at + dur, Fault::Delay(0)));
                }
                5 => {
                    schedule.push((at, Fault::Busy(rng.range(10, 60))));
                    schedule.push((at + dur, Fault::Busy(0)));
                }
                6 => {
                    let persistence = rng.chance(60);
                    if persistence && rng.chance(50) {
                        // An autosave older than what the broker acknowledges next.
                        schedule.push((at.saturating_sub(rng.below(2_000)), Fault::Snapshot));
                    }
                    schedule.push((at, Fault::BrokerDown { persistence }));
                    schedule.push((at + rng.below(3_000), Fault::BrokerUp));
                }
                7 | 8 => schedule.push((
                    at,
                    Fault::Crash {
                        power_loss: rng.chance(50),
                    },
                )),
                9 => schedule.push((at, Fault::Flip)),
                10 => {
                    let dir = rng.below(2) as usize;
                    schedule.push((at, Fault::HalfOpen { dir, on: true }));
                    schedule.push((at + dur, Fault::HalfOpen { dir, on: false }));
                }
                11 => schedule.push((at, Fault::Restart)),
                12 => {
                    // Ghosts: the broker's acks are held, so its QoS 2 messages wait for
                    // PUBREL when it saves; later it dies and comes back from that save,
                    // holding messages mqlink finished meanwhile (Mosquitto's autosave).
                    schedule.push((at, Fault::HalfOpen { dir: 1, on: true }));
                    schedule.push((at + 300, Fault::Snapshot));
                    schedule.push((at + 400, Fault::HalfOpen { dir: 1, on: false }));
                    schedule.push((at + 800, Fault::BrokerDown { persistence: true }));
                    schedule.push((at + 800 + rng.below(1_000), Fault::BrokerUp));
                }
                _ => {
                    schedule.push((at, Fault::DiskFull(Some(rng.range(0, 4_000)))));
                    schedule.push((at + dur, Fault::DiskFull(None)));
                }
            }
        }
        schedule.sort_by_key(|(at, _)| *at);
        if !(client_v5 && broker_v5) && broker.max_qos < QoS::ExactlyOnce {
            // A 3.1.1 broker refuses a QoS 2 message only by closing the connection: each
            // costs three reconnects before it is dead-lettered (documented). A few, not a
            // third of the load, as the campaign's planner does.
            weights[2] = 1;
        }
        Scenario {
            seed,
            client_v5,
            broker,
            persistent: rng.chance(50),
            max_inflight: rng.range(1, 20) as u16,
            events: rng.range(20, 300) as u32,
            load_ms,
            weights,
            big_payload: 2_000,
            on_corruption: if rng.chance(50) {
                OnCorruption::Fail
            } else {
                OnCorruption::Discard
            },
            segment_bytes: rng.range(1_024, 16_384),
            memory_bytes: rng.range(0, 32_768),
            max_bytes: rng.range(16_384, 1 << 20),
            schedule,
        }
    }

    /// The protocol the run speaks once connected.
    pub(crate) fn v5(&self) -> bool {
        self.client_v5 && self.broker.v5
    }
}

/// What became of an event the workload tried to append.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Appended {
    /// The append returned Ok: the event is owed. `(incarnation, spool id)` orders it.
    Ok { incarnation: u32, id: u64 },
    /// Refused (full, I/O error): not owed, never stored.
    Refused,
    /// The process died while the append was pending: may or may not be stored.
    Unknown,
}

/// The facts a run leaves for the checker.
#[derive(Debug)]
pub(crate) struct Facts {
    pub appended: BTreeMap<u32, (usize, Appended)>,
    pub arrivals: Vec<(String, Bytes)>,
    pub dropped_by_broker: Vec<Bytes>,
    pub transient: Vec<Bytes>,
    pub ghost_reused: Vec<Bytes>,
    pub dead_letters: Vec<serde_json::Value>,
    /// Events whose record a flipped byte damaged.
    pub damaged: Vec<u32>,
    pub drained: bool,
    /// Simulated time from the final heal until everything was delivered.
    pub drain_ms: u64,
    pub left_in_spool: u64,
    pub violations: Vec<String>,
}

struct Proc {
    spool: Spool,
    cancel: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
    stats: Arc<PublishStats>,
    /// Dead-letter lines and broker success acks when it started (counter check).
    dead_at_start: usize,
    acks_at_start: u64,
}

/// Payload of event `n`: its number first, so the checker can read it back.
pub(crate) fn event_of(payload: &[u8]) -> Option<u32> {
    std::str::from_utf8(payload.get(1..8)?).ok()?.parse().ok()
}

struct World {
    sc: Scenario,
    rng: Rng,
    disk: SimDisk,
    net: Net,
    broker: Broker,
    trace: Trace,
    start: Instant,
    appended: Arc<Mutex<BTreeMap<u32, (usize, Appended)>>>,
    next_event: Arc<AtomicU32>,
    producing: Arc<AtomicBool>,
    incarnation: u32,
    proc: Option<Proc>,
    on_corruption: OnCorruption,
    dead_path: PathBuf,
    damaged: Vec<u32>,
    violations: Vec<String>,
}

fn read_dead_letters(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

impl World {
    fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    fn log(&self, what: String) {
        self.trace.line(format!("{} world: {what}", self.now_ms()));
    }

    /// Start mqlink: open the spool (the operator switches to `discard` after a refusal
    /// to open a damaged spool), then the connection, the publisher, the writer's clock and
    /// the workload.
    fn start_proc(&mut self) {
        self.incarnation += 1;
        let opts = |on_corruption| SpoolOptions {
            max_bytes: self.sc.max_bytes,
            on_full: OnFull::Reject,
            segment_bytes: self.sc.segment_bytes,
            memory_bytes: self.sc.memory_bytes,
            on_corruption,
            ..SpoolOptions::default()
        };
        let storage = Arc::new(self.disk.clone());
        let dir = Path::new("/sim/spool");
        let spool = match Spool::open_stepped(dir, opts(self.on_corruption), storage.clone()) {
            Ok((s, report)) => {
                self.log(format!(
                    "spool opened: {} records, torn {:?}, corrupt {}",
                    report.records,
                    report.torn_tail.as_ref().map(|t| t.bytes_discarded),
                    report.corrupt.len()
                ));
                s
            }
            Err(SpoolError::Corrupt { path, start, .. }) => {
                self.log(format!(
                    "spool refused: corrupt {} at {start}",
                    path.display()
                ));
                if self.damaged.is_empty() || self.on_corruption != OnCorruption::Fail {
                    self.violations.push(format!(
                        "the spool refused to open ({} at {start}) with no damage done to it, or under on_corruption discard",
                        path.display()
                    ));
                }
                self.on_corruption = OnCorruption::Discard;
                match Spool::open_stepped(dir, opts(OnCorruption::Discard), storage) {
                    Ok((s, _)) => s,
                    Err(SpoolError::Io { ref source, .. }) if source.raw_os_error() == Some(28) => {
                        self.log("spool cannot open: disk full".into());
                        return;
                    }
                    Err(e) => {
                        self.violations
                            .push(format!("spool cannot open under discard: {e}"));
                        return;
                    }
                }
            }
            Err(SpoolError::Io { ref source, .. }) if source.raw_os_error() == Some(28) => {
                // A full disk: mqlink exits; its supervisor starts it again later (the
                // world does so after each fault and at the heal).
                self.log("spool cannot open: disk full".into());
                return;
            }
            Err(e) => {
                self.violations.push(format!("spool cannot open: {e}"));
                return;
            }
        };
        let mut o = MqttOptions::new(BrokerUrl::parse("mqtt://sim.invalid:1883").expect("url"));
        o.client_id = "mqlink-sim".into();
        o.protocol = if self.sc.client_v5 {
            Protocol::V5
        } else {
            Protocol::V311
        };
        o.fallback_to_311 = self.sc.client_v5;
        o.keep_alive = Duration::from_secs(4);
        o.clean_start = !self.sc.persistent;
        o.resume_at_start = false;
        o.session_expiry = self.sc.persistent.then_some(Duration::from_secs(3600));
        o.reconnect_min = Duration::from_millis(100);
        o.reconnect_max = Duration::from_secs(2);
        o.connect_timeout = Duration::from_secs(3);
        o.max_inflight = self.sc.max_inflight;
        o.queue_capacity = 64;
        let net = self.net.clone();
        let dial: Dial = Arc::new(move || {
            let r = net.dial().map(|e| Box::new(e) as BoxIo);
            Box::pin(async move { r })
        });
        let (client, _deliveries, event_loop) =
            client::new_with_dial(o, dial).expect("valid options");
        let cancel = CancellationToken::new();
        let stats = Arc::new(PublishStats::default());
        let dead = Arc::new(DeadLetter::inline(&self.dead_path));
        let publisher = Publisher::new(spool.clone(), client, dead, stats.clone(), 64);
        let mut tasks = Vec::new();
        tasks.push(tokio::spawn(event_loop.run(cancel.clone())));
        let (c, trace, inc) = (cancel.clone(), self.trace.clone(), self.incarnation);
        tasks.push(tokio::spawn(async move {
            if let Err(e) = publisher.run(c).await {
                trace.line(format!("publisher of incarnation {inc} failed: {e}"));
            }
        }));
        // The writer's clock: a group commits 1-10 ms after the last one (an fsync's
        // time), the checkpoint every 25 ms; idle, it looks every 25 ms only (appends then
        // wait up to that long: still a possible fsync latency, and far fewer wake-ups).
        let (s, mut rng) = (spool.clone(), self.rng.fork());
        tasks.push(tokio::spawn(async move {
            let mut last = Instant::now();
            let mut busy = true;
            loop {
                let wait = if busy { rng.range(1, 10) } else { 25 };
                tokio::time::sleep(Duration::from_millis(wait)).await;
                let due = last.elapsed() >= Duration::from_millis(25);
                if due {
                    last = Instant::now();
                }
                busy = s.step(due);
            }
        }));
        for _ in 0..2 {
            tasks.push(tokio::spawn(self.producer(spool.clone())));
        }
        let dead_at_start = read_dead_letters(&self.dead_path).len();
        let acks = self.broker.state().acks;
        self.proc = Some(Proc {
            spool,
            cancel,
            tasks,
            stats,
            dead_at_start,
            acks_at_start: acks[1] + acks[2],
        });
        self.log(format!("mqlink incarnation {} started", self.incarnation));
    }

    /// One client of the workload: appends batches of 1-3 events.
    fn producer(&mut self, spool: Spool) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut rng = self.rng.fork();
        let (appended, next, producing) = (
            self.appended.clone(),
            self.next_event.clone(),
            self.producing.clone(),
        );
        let (incarnation, total, weights, big) = (
            self.incarnation,
            self.sc.events,
            self.sc.weights,
            self.sc.big_payload,
        );
        let start = self.start;
        async move {
            while producing.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(rng.range(0, 60))).await;
                let mut batch = Vec::new();
                let mut events = Vec::new();
                for _ in 0..rng.range(1, 3) {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= total {
                        return;
                    }
                    let sum: u64 = weights.iter().sum();
                    let mut pick = rng.below(sum);
                    let route = weights
                        .iter()
                        .position(|w| {
                            if pick < *w {
                                true
                            } else {
                                pick -= w;
                                false
                            }
                        })
                        .unwrap_or(0);
                    let r = &ROUTES[route];
                    let mut payload = format!("e{n:07}").into_bytes();
                    if r.class == Class::Big {
                        payload.resize(big, b'.');
                    }
                    let msg = OutMessage {
                        route: route as u16,
                        topic: r.topic.to_string(),
                        payload: Bytes::from(payload),
                        qos: r.qos,
                        retain: r.retain,
                        props: PublishProps::default(),
                        accepted_at_ms: start.elapsed().as_millis() as u64,
                    };
                    batch.push(msg.encode());
                    events.push((n, route));
                    appended
                        .lock()
                        .expect("lock")
                        .insert(n, (route, Appended::Unknown));
                }
                let result = spool.append_batch(batch).await;
                let mut a = appended.lock().expect("lock");
                for (i, (n, route)) in events.into_iter().enumerate() {
                    let v = match result {
                        Ok(AppendOutcome::Appended { first_id, .. }) => Appended::Ok {
                            incarnation,
                            id: first_id + i as u64,
                        },
                        _ => Appended::Refused,
                    };
                    a.insert(n, (route, v));
                }
            }
        }
    }

    /// SIGKILL: every task dies where it is, unsynced bytes stay in the page cache (the
    /// caller takes them with a power loss).
    async fn kill(&mut self) {
        let Some(p) = self.proc.take() else { return };
        p.spool.crash();
        for t in &p.tasks {
            t.abort();
        }
        for t in p.tasks {
            let _ = t.await;
        }
        drop(p.cancel);
        self.log(format!("mqlink incarnation {} killed", self.incarnation));
    }

    /// SIGTERM: the workload stops, the connection and the publisher are cancelled and
    /// must end within 5 s (a DISCONNECT is sent; undecided messages stay in the spool),
    /// then the spool is closed (final sync and checkpoint).
    async fn stop(&mut self) {
        let Some(p) = self.proc.take() else { return };
        let mut tasks = p.tasks.into_iter();
        let (event_loop, publisher) = (tasks.next(), tasks.next());
        // The writer's clock and the producers: not part of mqlink's shutdown tree here.
        for t in tasks {
            t.abort();
            let _ = t.await;
        }
        p.cancel.cancel();
        for (what, t) in [("connection", event_loop), ("publisher", publisher)] {
            let Some(t) = t else { continue };
            let abort = t.abort_handle();
            if tokio::time::timeout(Duration::from_secs(5), t)
                .await
                .is_err()
            {
                abort.abort();
                self.violations.push(format!(
                    "the {what} task did not stop within 5 s of shutdown"
                ));
            }
        }
        if let Err(e) = p.spool.close().await {
            self.log(format!("spool close failed: {e}"));
        }
        self.log(format!("mqlink incarnation {} stopped", self.incarnation));
    }

    async fn apply(&mut self, fault: Fault) {
        self.log(format!("fault {fault:?}"));
        if self.proc.is_none() {
            // mqlink could not start (a full disk); its supervisor tries again.
            self.start_proc();
        }
        match fault {
            Fault::Cut { dir, bytes, reset } => {
                let how = if reset { Close::Reset } else { Close::Fin };
                self.net.cut_after(dir, bytes, how);
            }
            Fault::CutConnack { bytes } => {
                self.net.state().cut_next.push_back((1, bytes, Close::Fin));
            }
            Fault::Blackhole(on) => {
                self.net.hold(0, on);
                self.net.hold(1, on);
            }
            Fault::HalfOpen { dir, on } => self.net.hold(dir, on),
            Fault::Restart => {
                self.stop().await;
                self.start_proc();
            }
            Fault::Delay(ms) => self.broker.state().delay = Duration::from_millis(ms),
            Fault::Busy(p) => self.broker.state().busy = p,
            Fault::BrokerDown { persistence } => {
                if self.net.state().listening {
                    self.broker.stop(&self.net, persistence);
                }
            }
            Fault::BrokerUp => {
                if !self.net.state().listening {
                    self.broker.start(&self.net);
                }
            }
            Fault::Snapshot => self.broker.snapshot(),
            Fault::Crash { power_loss } => {
                self.kill().await;
                if power_loss {
                    self.disk.power_loss();
                }
                self.start_proc();
            }
            Fault::Flip => {
                self.kill().await;
                if let Some(f) = self.disk.flip_record_byte(&mut self.rng) {
                    let event = OutMessage::decode(Bytes::from(f.payload.clone()))
                        .ok()
                        .and_then(|m| event_of(&m.payload));
                    self.log(format!(
                        "flipped a byte of record {} in {} (event {event:?})",
                        f.spool_id,
                        f.path.display()
                    ));
                    self.damaged.extend(event);
                }
                self.start_proc();
            }
            Fault::DiskFull(headroom) => self.disk.fill(headroom),
        }
    }

    fn drained(&self) -> Option<u64> {
        let p = self.proc.as_ref()?;
        let left = p.spool.stats().records;
        let busy = self.next_event.load(Ordering::Relaxed) < self.sc.events
            && self.producing.load(Ordering::Relaxed);
        (left == 0 && !busy && p.stats.inflight.load(Ordering::Relaxed) == 0).then_some(0)
    }

    async fn run(mut self) -> Facts {
        self.broker.start(&self.net);
        self.start_proc();
        // The broker's autosave, every 1-3 s.
        let (b, mut rng) = (self.broker.clone(), self.rng.fork());
        let autosave = tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(rng.range(1_000, 3_000))).await;
                b.snapshot();
            }
        });
        for (at, fault) in self.sc.schedule.clone() {
            tokio::time::sleep_until(self.start + Duration::from_millis(at)).await;
            self.apply(fault).await;
        }
        tokio::time::sleep_until(self.start + Duration::from_millis(self.sc.load_ms)).await;
        // The final heal: every fault ends, the workload stops.
        self.log("heal".into());
        self.producing.store(false, Ordering::Relaxed);
        self.net.hold(0, false);
        self.net.hold(1, false);
        self.net.state().cut_next.clear();
        self.disk.fill(None);
        {
            let mut b = self.broker.state();
            b.busy = 0;
            b.delay = Duration::ZERO;
        }
        if !self.net.state().listening {
            self.broker.start(&self.net);
        }
        if self.proc.is_none() {
            self.start_proc();
        }
        let healed = Instant::now();
        let mut drained = false;
        while healed.elapsed() < LIVENESS_BOUND {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if self.drained().is_some() {
                drained = true;
                break;
            }
        }
        let drain_ms = healed.elapsed().as_millis() as u64;
        self.log(format!("drained={drained}"));
        let left_in_spool = self.proc.as_ref().map_or(0, |p| p.spool.stats().records);
        let dead_letters = read_dead_letters(&self.dead_path);
        if let Some(p) = &self.proc {
            let rejected = p.stats.rejected.load(Ordering::Relaxed) as usize;
            if drained && rejected != dead_letters.len() - p.dead_at_start {
                self.violations.push(format!(
                    "counters: the last incarnation counted {rejected} rejected, the dead-letter file got {}",
                    dead_letters.len() - p.dead_at_start
                ));
            }
            let acked: u64 = p.stats.acknowledged[1..]
                .iter()
                .map(|a| a.load(Ordering::Relaxed))
                .sum();
            let b = self.broker.state().acks;
            let seen = b[1] + b[2] - p.acks_at_start;
            if acked > seen {
                self.violations.push(format!(
                    "counters: {acked} QoS 1/2 acknowledged by the publisher, the broker sent {seen} success acks"
                ));
            }
        }
        self.kill().await;
        autosave.abort();
        let _ = autosave.await;
        let b = self.broker.state();
        Facts {
            appended: self.appended.lock().expect("lock").clone(),
            arrivals: b
                .arrivals
                .iter()
                .map(|a| (a.topic.clone(), a.payload.clone()))
                .collect(),
            dropped_by_broker: b.dropped.iter().map(|(p, _)| p.clone()).collect(),
            transient: b.transient.clone(),
            ghost_reused: b.ghost_reused.clone(),
            dead_letters,
            damaged: self.damaged.clone(),
            drained,
            drain_ms,
            left_in_spool,
            violations: self.violations.clone(),
        }
    }
}

/// Run one seed on a fresh paused-time runtime; the facts and the trace.
pub(crate) fn run(sc: &Scenario, dead_dir: &Path) -> (Facts, Trace) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("runtime");
    let trace = Trace::default();
    let mut rng = Rng::new(sc.seed ^ 0x5eed);
    let mut jitter = rng.fork();
    client::JITTER.with(|j| {
        *j.borrow_mut() = Some(Box::new(move |max| jitter.range(0, max)));
    });
    let facts = rt.block_on(async {
        let broker = Broker::new(sc.broker.clone(), rng.fork(), trace.clone());
        let world = World {
            sc: sc.clone(),
            rng,
            disk: SimDisk::new(),
            net: Net::new(),
            broker,
            trace: trace.clone(),
            start: Instant::now(),
            appended: Arc::default(),
            next_event: Arc::default(),
            producing: Arc::new(AtomicBool::new(true)),
            incarnation: 0,
            proc: None,
            on_corruption: sc.on_corruption,
            dead_path: dead_dir.join("dead-letter.jsonl"),
            damaged: Vec::new(),
            violations: Vec::new(),
        };
        world.run().await
    });
    client::JITTER.with(|j| *j.borrow_mut() = None);
    // Tasks still parked (the broker's handlers) go with the runtime.
    drop(rt);
    (facts, trace)
}
