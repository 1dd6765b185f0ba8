//! `mqtt-bench`: an MQTT 3.1.1 load generator for any broker.
//!
//! It speaks the protocol directly with `mqtt-codec` over tokio TCP: every
//! PUBLISH is a pre-encoded template patched in place, writes are batched
//! (up to 64 KiB per syscall) and reads are decoded without copying, so one
//! generator core moves well over a million messages a second.
//!
//! Each payload starts with the publisher's number, a sequence number and
//! the send time (nanoseconds since a start `Instant` shared by publishers and
//! subscribers, which live in this one process), so the subscribers measure
//! end-to-end latency and count loss, duplicates and reordering.
//!
//! ```text
//! mqtt-bench pairs   --clients 4 --qos 1 --window 64 --duration 10
//! mqtt-bench fan-out --clients 16 --qos 0
//! mqtt-bench pairs   --clients 4 --rate 5000          # open loop, latency
//! mqtt-bench shared  --clients 4 --members 3 --qos 1
//! mqtt-bench idle    --clients 19000 --broker-pid $(pidof mqtt-broker)
//! mqtt-bench storm   --clients 19000 --connect-concurrency 512
//! mqtt-bench pairs   --qos 1 -p 1883 --sub-port 1884   # bridged: see bridge.sh
//! ```
//!
//! With `--sub-port` (and `--sub-host`) the subscribers connect to another
//! broker than the publishers: a bridge between the two carries the
//! messages, and the report is the bridged throughput, loss and latency.

use std::io;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Buf;
use clap::{Parser, ValueEnum};
use mqtt_benches::load::hist::Histogram;
use mqtt_benches::load::payload::{Stamp, HEADER_LEN};
use mqtt_benches::load::proc::{cpu_percent, sample, ProcSample};
use mqtt_benches::load::proto::{
    ack_for, push_ack, Conn, PublishTemplate, DISCONNECT, OPTS, PINGREQ, PUBCOMP, PUBREL,
    READ_CHUNK,
};
use mqtt_benches::load::report::{group, Report};
use mqtt_benches::load::storm::StormPlan;
use mqtt_benches::load::track::SeqTrack;
use mqtt_codec::{decode, Packet, QoS, Status};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum Scenario {
    /// N publishers, each to its own topic, each read by its own subscriber.
    Pairs,
    /// N publishers to one topic, one subscriber.
    FanIn,
    /// One publisher, N subscribers of its topic.
    FanOut,
    /// N publishers to their own topics, one shared subscription
    /// `$share/g/PREFIX/shared/+` with --members subscribers.
    Shared,
    /// N idle connections (CONNECT, then only keep alive); reports the
    /// broker's memory per connection (needs --broker-pid). Default N 19,000.
    Idle,
    /// N clients connect as fast as they can (--connect-concurrency
    /// handshakes at once), then all subscribe, then all disconnect; reports
    /// each phase's time and failures. Default N 19,000.
    Storm,
    /// A persistent QoS 1 subscriber subscribes (--sub-port) and leaves,
    /// --messages are published (--port), then it comes back (--resume-port,
    /// e.g. another node of a cluster): time to CONNACK and to the whole
    /// backlog, lost and duplicates.
    Resume,
}

impl Scenario {
    fn name(self) -> &'static str {
        match self {
            Scenario::Pairs => "pairs",
            Scenario::FanIn => "fan-in",
            Scenario::FanOut => "fan-out",
            Scenario::Shared => "shared",
            Scenario::Idle => "idle",
            Scenario::Storm => "storm",
            Scenario::Resume => "resume",
        }
    }

    /// Clients when --clients is not given.
    fn default_clients(self) -> u32 {
        match self {
            Scenario::Idle | Scenario::Storm => 19_000,
            _ => 1,
        }
    }

    /// Handshakes in flight when --connect-concurrency is not given: a
    /// storm opens as many as a listen backlog takes without dropping SYNs.
    fn default_concurrency(self) -> usize {
        match self {
            Scenario::Storm => 512,
            _ => 128,
        }
    }
}

/// Load generator for MQTT 3.1.1 brokers.
#[derive(Parser, Debug)]
#[command(name = "mqtt-bench", version, about)]
struct Args {
    /// What to run.
    #[arg(value_enum)]
    scenario: Scenario,
    /// Broker host.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Broker port.
    #[arg(short = 'p', long, default_value_t = 1883)]
    port: u16,
    /// Subscribers connect to this host instead of --host (bridged runs).
    #[arg(long)]
    sub_host: Option<String>,
    /// Subscribers connect to this port instead of --port: publishers on
    /// one broker, subscribers on another, a bridge between them.
    #[arg(long)]
    sub_port: Option<u16>,
    /// resume: the port the subscriber comes back to (default --sub-port).
    #[arg(long)]
    resume_port: Option<u16>,
    /// resume: messages queued while the subscriber is away.
    #[arg(long, default_value_t = 10_000)]
    messages: u32,
    /// QoS of publishes and subscriptions.
    #[arg(short = 'q', long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=2))]
    qos: u8,
    /// Payload bytes (at least 20: publisher, sequence number, timestamp).
    #[arg(long, default_value_t = 64)]
    payload: usize,
    /// pairs: publisher/subscriber pairs; fan-in, shared: publishers;
    /// fan-out: subscribers; idle, storm: connections (default 19,000;
    /// otherwise 1).
    #[arg(short = 'c', long)]
    clients: Option<u32>,
    /// shared: members of the shared subscription group.
    #[arg(long, default_value_t = 2)]
    members: u32,
    /// Seconds of publishing (idle: seconds the connections are held).
    #[arg(short = 'd', long, default_value_t = 10.0)]
    duration: f64,
    /// Open loop: messages per second per publisher, at a fixed rate.
    /// Without it, closed loop: as fast as --window (QoS 1/2) or the socket
    /// (QoS 0) allows.
    #[arg(long)]
    rate: Option<f64>,
    /// Most unacknowledged QoS 1/2 publishes per publisher (default 64 in
    /// closed loop, 65000 in open loop).
    #[arg(long)]
    window: Option<u32>,
    /// Longest wait, in seconds, after publishing for the last deliveries
    /// and acknowledgements (a broker with a backlog keeps delivering).
    #[arg(long, default_value_t = 30.0)]
    drain: f64,
    /// The drain also ends after this many seconds without any new delivery
    /// (or acknowledgement): what is missing then counts as lost.
    #[arg(long, default_value_t = 2.0)]
    drain_idle: f64,
    /// Broker process to sample for CPU% and memory (/proc).
    #[arg(long)]
    broker_pid: Option<u32>,
    /// After the run, read the broker's `$SYS/broker/publish/messages/dropped`
    /// (waits 1.1 s first so a 1 s $SYS interval has caught up).
    #[arg(long)]
    sys_dropped: bool,
    /// Print the report as one JSON line on stdout.
    #[arg(long)]
    json: bool,
    /// No progress lines on stderr.
    #[arg(long)]
    quiet: bool,
    /// Keep alive of every connection, seconds.
    #[arg(long, default_value_t = 60)]
    keep_alive: u16,
    /// Connect with Clean Session 0 (persistent sessions), so that a
    /// durable broker stores the subscribers' queues and QoS state.
    #[arg(long)]
    persistent: bool,
    /// Generator worker threads (default: one per core).
    #[arg(long)]
    threads: Option<usize>,
    /// Connections opened at the same time while setting up (storm: also
    /// SUBSCRIBEs and DISCONNECTs in flight); default 128, storm 512.
    #[arg(long)]
    connect_concurrency: Option<usize>,
    /// Topic prefix (default bench/<random>).
    #[arg(long)]
    topic_prefix: Option<String>,
    /// Connect over WebSocket (subprotocol mqtt) with this request path,
    /// e.g. `--websocket /mqtt` against a `protocol = "websockets"` listener.
    #[arg(long, value_name = "PATH")]
    websocket: Option<String>,
}

/// Counters the progress line reads.
#[derive(Default)]
struct Live {
    sent: AtomicU64,
    received: AtomicU64,
    acked: AtomicU64,
    /// Nanoseconds since start of the last delivery.
    last_rx_ns: AtomicU64,
}

fn main() -> ExitCode {
    let mut args = Args::parse();
    if args.payload < HEADER_LEN {
        eprintln!("mqtt-bench: --payload raised to {HEADER_LEN} bytes (the header)");
        args.payload = HEADER_LEN;
    }
    raise_fd_limit(args.clients(), args.quiet);
    if let Some(path) = &args.websocket {
        if matches!(args.scenario, Scenario::Idle | Scenario::Storm) {
            eprintln!("mqtt-bench: the idle and storm scenarios are TCP only");
            return ExitCode::FAILURE;
        }
        mqtt_benches::load::ws::use_websocket(path);
    }
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all();
    if let Some(n) = args.threads {
        builder.worker_threads(n.max(1));
    }
    let runtime = match builder.build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("mqtt-bench: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        let addr = tokio::net::lookup_host((args.host.as_str(), args.port))
            .await?
            .next()
            .ok_or_else(|| io::Error::other("host not found"))?;
        let sub_addr = match (&args.sub_host, args.sub_port) {
            (None, None) => addr,
            (host, port) => {
                let host = host.as_deref().unwrap_or(args.host.as_str());
                tokio::net::lookup_host((host, port.unwrap_or(args.port)))
                    .await?
                    .next()
                    .ok_or_else(|| io::Error::other("subscriber host not found"))?
            }
        };
        if args.scenario == Scenario::Idle {
            run_idle(&args, addr).await
        } else if args.scenario == Scenario::Storm {
            Ok(run_storm(&args, addr).await)
        } else if args.scenario == Scenario::Resume {
            let resume_addr = match args.resume_port {
                Some(port) => tokio::net::lookup_host((sub_addr.ip().to_string(), port))
                    .await?
                    .next()
                    .ok_or_else(|| io::Error::other("resume host not found"))?,
                None => sub_addr,
            };
            let id = run_id();
            mqtt_benches::load::resume::run(mqtt_benches::load::resume::ResumePlan {
                pub_addr: addr,
                sub_addr,
                resume_addr,
                messages: args.messages.max(1),
                payload: args.payload,
                topic: args
                    .topic_prefix
                    .clone()
                    .map_or_else(|| format!("bench/{id}/resume"), |p| format!("{p}/resume")),
                client_prefix: format!("mb-{id}-rs"),
                keep_alive: args.keep_alive,
                idle: Duration::from_secs_f64(args.drain_idle.max(0.5) * 5.0),
                verbose: !args.quiet,
            })
            .await
        } else {
            run_load(&args, addr, sub_addr).await
        }
    });
    // Connections still open are dropped with the runtime.
    runtime.shutdown_timeout(Duration::from_millis(200));
    match result {
        Ok(report) => {
            if args.json {
                println!("{}", report.to_json());
            } else {
                print!("{}", report.to_text());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("mqtt-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

impl Args {
    fn clients(&self) -> u32 {
        self.clients
            .unwrap_or(self.scenario.default_clients())
            .max(1)
    }

    fn concurrency(&self) -> usize {
        self.connect_concurrency
            .unwrap_or(self.scenario.default_concurrency())
            .max(1)
    }
}

/// Raises this process's descriptor limit to the hard limit: thousands of
/// connections need as many descriptors (a few more for the runtime).
fn raise_fd_limit(clients: u32, quiet: bool) {
    let want = u64::from(clients) * 2 + 64;
    match rlimit::increase_nofile_limit(want) {
        Ok(got) if got < u64::from(clients) + 64 && !quiet => eprintln!(
            "mqtt-bench: only {got} file descriptors allowed (ulimit -Hn); {clients} connections may fail"
        ),
        Ok(_) => {}
        Err(e) if !quiet => eprintln!("mqtt-bench: cannot raise the descriptor limit: {e}"),
        Err(_) => {}
    }
}

fn qos_of(n: u8) -> QoS {
    QoS::from_u8(n).unwrap_or(QoS::AtMostOnce)
}

/// Opens (and optionally subscribes) connections, `concurrency` at a time;
/// results are in the order of `clients`.
async fn open_all(
    addr: SocketAddr,
    clients: Vec<(String, Option<String>)>,
    qos: QoS,
    keep_alive: u16,
    clean_start: bool,
    concurrency: usize,
) -> Vec<io::Result<Conn>> {
    let limit = Arc::new(Semaphore::new(concurrency.max(1)));
    let mut set = JoinSet::new();
    let n = clients.len();
    for (i, (id, filter)) in clients.into_iter().enumerate() {
        let limit = limit.clone();
        set.spawn(async move {
            let _permit = limit.acquire_owned().await;
            let timeout = Duration::from_secs(10);
            let result = async {
                let mut conn = Conn::connect(addr, &id, keep_alive, clean_start, timeout).await?;
                if let Some(f) = filter {
                    conn.subscribe(&f, qos, timeout).await?;
                }
                Ok(conn)
            }
            .await;
            (i, result)
        });
    }
    let mut out: Vec<Option<io::Result<Conn>>> = (0..n).map(|_| None).collect();
    while let Some(joined) = set.join_next().await {
        match joined {
            Ok((i, r)) => out[i] = Some(r),
            Err(e) => return vec![Err(io::Error::other(e.to_string()))],
        }
    }
    out.into_iter()
        .map(|r| r.unwrap_or_else(|| Err(io::Error::other("connection task lost"))))
        .collect()
}

fn all_ok(results: Vec<io::Result<Conn>>, what: &str) -> io::Result<Vec<Conn>> {
    results
        .into_iter()
        .enumerate()
        .map(|(i, r)| r.map_err(|e| io::Error::new(e.kind(), format!("{what} {i}: {e}"))))
        .collect()
}

/// Who publishes where and who subscribes to what.
struct Layout {
    /// Topic of each publisher.
    topics: Vec<String>,
    /// Filter of each subscriber.
    filters: Vec<String>,
    /// For each subscriber, the publishers whose messages it must receive
    /// (for a shared group: all of them, by the group as a whole).
    sources: Vec<Vec<u32>>,
    /// Subscribers are members of one shared group.
    shared: bool,
}

fn layout(args: &Args, prefix: &str) -> Layout {
    let n = args.clients();
    match args.scenario {
        Scenario::Pairs => Layout {
            topics: (0..n).map(|i| format!("{prefix}/pair/{i}")).collect(),
            filters: (0..n).map(|i| format!("{prefix}/pair/{i}")).collect(),
            sources: (0..n).map(|i| vec![i]).collect(),
            shared: false,
        },
        Scenario::FanIn => Layout {
            topics: (0..n).map(|_| format!("{prefix}/in")).collect(),
            filters: vec![format!("{prefix}/in")],
            sources: vec![(0..n).collect()],
            shared: false,
        },
        Scenario::FanOut => Layout {
            topics: vec![format!("{prefix}/out")],
            filters: (0..n).map(|_| format!("{prefix}/out")).collect(),
            sources: (0..n).map(|_| vec![0]).collect(),
            shared: false,
        },
        Scenario::Shared => {
            let m = args.members.max(1);
            Layout {
                topics: (0..n).map(|i| format!("{prefix}/shared/{i}")).collect(),
                filters: (0..m)
                    .map(|_| format!("$share/g/{prefix}/shared/+"))
                    .collect(),
                sources: (0..m).map(|_| (0..n).collect()).collect(),
                shared: true,
            }
        }
        Scenario::Idle | Scenario::Storm | Scenario::Resume => {
            unreachable!("idle, storm and resume have no layout")
        }
    }
}

fn run_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{:x}{:x}", std::process::id(), nanos & 0xffff)
}

struct PubPlan {
    id: u32,
    template: PublishTemplate,
    qos: QoS,
    rate: Option<f64>,
    /// Offset of this publisher's schedule, spreading open-loop publishers.
    phase: Duration,
    window: u32,
    start: Instant,
    send_start: Instant,
    send_until: Instant,
    drain_until: Instant,
    drain_idle: Duration,
}

struct PubResult {
    sent: u64,
    acked: u64,
    unacked: u64,
    error: Option<String>,
}

const BATCH_BYTES: usize = 64 * 1024;

/// What a publisher does with a packet from the broker.
enum PubEvent {
    Ack(u16),
    Rec(u16),
    Comp(u16),
    Other,
}

async fn publisher(conn: Conn, plan: PubPlan, live: Arc<Live>) -> PubResult {
    let Conn {
        mut rd,
        mut wr,
        mut buf,
    } = conn;
    let msg_len = plan.template.len();
    let qos = plan.qos;
    let mut out: Vec<u8> = Vec::with_capacity(BATCH_BYTES * 2);
    let mut pos = 0usize;
    let mut seq = 0u64;
    // Packet identifier states: 0 free, 1 awaiting PUBACK/PUBREC, 2 PUBCOMP.
    let mut state = vec![0u8; 65536];
    let mut next_pid: u16 = 1;
    let mut inflight: u32 = 0;
    let mut acked = 0u64;
    let mut error = None;
    let sched_start = plan.send_start + plan.phase;
    // When an acknowledgement last arrived (or publishing ended).
    let mut last_ack = plan.send_until;
    loop {
        let now = Instant::now();
        let sending = now < plan.send_until;
        let pending = out.len() - pos;
        if sending && pending < BATCH_BYTES {
            let mut n = ((BATCH_BYTES - pending) / msg_len).max(1) as u64;
            if qos != QoS::AtMostOnce {
                n = n.min(u64::from(plan.window - inflight));
            }
            if let Some(rate) = plan.rate {
                let due = if now >= sched_start {
                    (now.duration_since(sched_start).as_secs_f64() * rate) as u64 + 1
                } else {
                    0
                };
                n = n.min(due.saturating_sub(seq));
            }
            if n > 0 {
                if pos == out.len() {
                    out.clear();
                    pos = 0;
                } else if pos >= BATCH_BYTES {
                    out.drain(..pos);
                    pos = 0;
                }
                let sent_ns = now.duration_since(plan.start).as_nanos() as u64;
                for _ in 0..n {
                    let pid = if qos == QoS::AtMostOnce {
                        0
                    } else {
                        // The window is below 65535, so a free one exists.
                        while state[usize::from(next_pid)] != 0 {
                            next_pid = next_pid.checked_add(1).unwrap_or(1);
                        }
                        let pid = next_pid;
                        state[usize::from(pid)] = 1;
                        inflight += 1;
                        next_pid = next_pid.checked_add(1).unwrap_or(1);
                        pid
                    };
                    let range = plan.template.push(&mut out, pid);
                    Stamp {
                        publisher: plan.id,
                        seq,
                        sent_ns,
                    }
                    .write(&mut out[range]);
                    seq += 1;
                }
                live.sent.fetch_add(n, Ordering::Relaxed);
            }
        }
        let flushed = pos == out.len();
        let stalled = !sending && now.saturating_duration_since(last_ack) >= plan.drain_idle;
        if (!sending && flushed && inflight == 0) || now >= plan.drain_until || stalled {
            break;
        }
        let wake = if !sending {
            plan.drain_until
                .min(last_ack.max(plan.send_until) + plan.drain_idle)
        } else if let Some(rate) = plan.rate {
            (sched_start + Duration::from_secs_f64(seq as f64 / rate)).min(plan.send_until)
        } else {
            plan.send_until
        };
        if buf.capacity() - buf.len() < 4096 {
            buf.reserve(READ_CHUNK);
        }
        tokio::select! {
            r = rd.read_buf(&mut buf) => {
                match r {
                    Ok(0) => {
                        error = Some("connection closed by the broker".to_string());
                        break;
                    }
                    Err(e) => {
                        error = Some(e.to_string());
                        break;
                    }
                    Ok(_) => {}
                }
                let before = acked;
                loop {
                    let (event, used) = match decode(&buf, &OPTS) {
                        Ok(Status::Complete((p, used))) => (
                            match p {
                                Packet::PubAck(r) => PubEvent::Ack(r.pid.get()),
                                Packet::PubRec(r) => PubEvent::Rec(r.pid.get()),
                                Packet::PubComp(r) => PubEvent::Comp(r.pid.get()),
                                _ => PubEvent::Other,
                            },
                            used,
                        ),
                        Ok(Status::Partial(_)) => break,
                        Err(e) => {
                            error = Some(format!("bad packet from the broker: {e}"));
                            break;
                        }
                    };
                    buf.advance(used);
                    match event {
                        PubEvent::Ack(pid)
                            if qos == QoS::AtLeastOnce && state[usize::from(pid)] == 1 =>
                        {
                            state[usize::from(pid)] = 0;
                            inflight -= 1;
                            acked += 1;
                        }
                        PubEvent::Rec(pid)
                            if qos == QoS::ExactlyOnce && state[usize::from(pid)] != 0 =>
                        {
                            state[usize::from(pid)] = 2;
                            push_ack(&mut out, PUBREL, pid);
                        }
                        PubEvent::Comp(pid) if state[usize::from(pid)] == 2 => {
                            state[usize::from(pid)] = 0;
                            inflight -= 1;
                            acked += 1;
                        }
                        _ => {}
                    }
                }
                if error.is_some() {
                    break;
                }
                if acked > before {
                    last_ack = Instant::now();
                }
                live.acked.fetch_add(acked - before, Ordering::Relaxed);
            }
            r = wr.write(&out[pos..]), if !flushed => match r {
                Ok(n) => pos += n,
                Err(e) => {
                    error = Some(e.to_string());
                    break;
                }
            },
            _ = tokio::time::sleep_until(wake.into()) => {}
        }
    }
    // Whole messages never written are not counted as sent (PUBRELs are 4
    // bytes, so the division can only undercount by a fraction of one).
    let unwritten = ((out.len() - pos) / msg_len) as u64;
    let _ = tokio::time::timeout(Duration::from_millis(500), wr.write_all(&DISCONNECT)).await;
    PubResult {
        sent: seq.saturating_sub(unwritten),
        acked,
        unacked: u64::from(inflight),
        error,
    }
}

struct SubResult {
    /// By publisher.
    tracks: Vec<SeqTrack>,
    hist: Histogram,
    foreign: u64,
    error: Option<String>,
}

enum SubEvent {
    Msg(Option<Stamp>),
    Rel(u16),
    Other,
}

async fn subscriber(
    conn: Conn,
    publishers: usize,
    start: Instant,
    live: Arc<Live>,
    mut finish: watch::Receiver<bool>,
    deadline: Instant,
) -> SubResult {
    let Conn {
        mut rd,
        mut wr,
        mut buf,
    } = conn;
    let mut tracks = vec![SeqTrack::default(); publishers];
    let mut hist = Histogram::new();
    let mut foreign = 0u64;
    let mut error = None;
    let mut out: Vec<u8> = Vec::with_capacity(4096);
    let mut pos = 0usize;
    loop {
        if buf.capacity() - buf.len() < 4096 {
            buf.reserve(READ_CHUNK);
        }
        let flushed = pos == out.len();
        tokio::select! {
            r = rd.read_buf(&mut buf) => {
                match r {
                    Ok(0) => {
                        error = Some("connection closed by the broker".to_string());
                        break;
                    }
                    Err(e) => {
                        error = Some(e.to_string());
                        break;
                    }
                    Ok(_) => {}
                }
                let now_ns = start.elapsed().as_nanos() as u64;
                let mut fresh = 0u64;
                if pos == out.len() {
                    out.clear();
                    pos = 0;
                }
                loop {
                    let (event, used) = match decode(&buf, &OPTS) {
                        Ok(Status::Complete((p, used))) => (
                            match p {
                                Packet::Publish(p) => {
                                    if let Some((kind, pid)) = ack_for(p.qos_pid) {
                                        push_ack(&mut out, kind, pid);
                                    }
                                    SubEvent::Msg(Stamp::read(p.payload))
                                }
                                Packet::PubRel(r) => SubEvent::Rel(r.pid.get()),
                                _ => SubEvent::Other,
                            },
                            used,
                        ),
                        Ok(Status::Partial(_)) => break,
                        Err(e) => {
                            error = Some(format!("bad packet from the broker: {e}"));
                            break;
                        }
                    };
                    buf.advance(used);
                    match event {
                        SubEvent::Msg(Some(s)) if (s.publisher as usize) < publishers => {
                            let t = &mut tracks[s.publisher as usize];
                            let before = t.unique;
                            if t.record(s.seq) {
                                fresh += t.unique - before;
                                hist.record(now_ns.saturating_sub(s.sent_ns));
                            } else {
                                foreign += 1;
                            }
                        }
                        SubEvent::Msg(_) => foreign += 1,
                        SubEvent::Rel(pid) => push_ack(&mut out, PUBCOMP, pid),
                        SubEvent::Other => {}
                    }
                }
                if error.is_some() {
                    break;
                }
                if fresh > 0 {
                    live.received.fetch_add(fresh, Ordering::Relaxed);
                    live.last_rx_ns.fetch_max(now_ns, Ordering::Relaxed);
                }
            }
            r = wr.write(&out[pos..]), if !flushed => match r {
                Ok(n) => pos += n,
                Err(e) => {
                    error = Some(e.to_string());
                    break;
                }
            },
            _ = finish.changed() => break,
            _ = tokio::time::sleep_until(deadline.into()) => break,
        }
    }
    let _ = tokio::time::timeout(Duration::from_millis(500), wr.write_all(&DISCONNECT)).await;
    SubResult {
        tracks,
        hist,
        foreign,
        error,
    }
}

/// Prints a progress line every second until `stop` is set.
fn spawn_progress(live: Arc<Live>, stop: Arc<AtomicBool>, send_start: Instant) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval_at(
            (send_start + Duration::from_secs(1)).into(),
            Duration::from_secs(1),
        );
        let (mut sent0, mut recv0, mut ack0) = (0, 0, 0);
        let mut t0 = send_start;
        loop {
            tick.tick().await;
            if stop.load(Ordering::Relaxed) {
                return;
            }
            let now = Instant::now();
            let secs = now.duration_since(t0).as_secs_f64();
            let sent = live.sent.load(Ordering::Relaxed);
            let recv = live.received.load(Ordering::Relaxed);
            let ack = live.acked.load(Ordering::Relaxed);
            eprintln!(
                "[{:5.1}s] sent {:>11}/s  delivered {:>11}/s  acked {:>11}/s  (total sent {}, delivered {})",
                now.duration_since(send_start).as_secs_f64(),
                group(((sent - sent0) as f64 / secs) as u64),
                group(((recv - recv0) as f64 / secs) as u64),
                group(((ack - ack0) as f64 / secs) as u64),
                group(sent),
                group(recv),
            );
            (sent0, recv0, ack0, t0) = (sent, recv, ack, now);
        }
    });
}

fn ms(ns: Option<u64>) -> Option<f64> {
    ns.map(|v| v as f64 / 1e6)
}

fn broker_sample(args: &Args) -> Option<ProcSample> {
    args.broker_pid.and_then(|p| sample(&p.to_string()))
}

async fn run_load(args: &Args, addr: SocketAddr, sub_addr: SocketAddr) -> io::Result<Report> {
    let start = Instant::now();
    let id = run_id();
    let prefix = args
        .topic_prefix
        .clone()
        .unwrap_or_else(|| format!("bench/{id}"));
    let qos = qos_of(args.qos);
    let plan = layout(args, &prefix);
    let n_pubs = plan.topics.len();
    let window = args
        .window
        .unwrap_or(if args.rate.is_some() { 65_000 } else { 64 })
        .clamp(1, 65_000);
    if args.broker_pid.is_some() && broker_sample(args).is_none() {
        eprintln!("mqtt-bench: cannot read /proc for --broker-pid; no CPU or memory figures");
    }
    let rss_idle = broker_sample(args);

    let subs = open_all(
        sub_addr,
        plan.filters
            .iter()
            .enumerate()
            .map(|(i, f)| (format!("mb-{id}-s{i}"), Some(f.clone())))
            .collect(),
        qos,
        args.keep_alive,
        !args.persistent,
        args.concurrency(),
    )
    .await;
    let subs = all_ok(subs, "subscriber")?;
    let pubs = open_all(
        addr,
        (0..n_pubs)
            .map(|i| (format!("mb-{id}-p{i}"), None))
            .collect(),
        qos,
        args.keep_alive,
        !args.persistent,
        args.concurrency(),
    )
    .await;
    let pubs = all_ok(pubs, "publisher")?;

    let live = Arc::new(Live::default());
    let (finish_tx, finish_rx) = watch::channel(false);
    let broker0 = broker_sample(args);
    let gen0 = sample("self");
    let send_start = Instant::now();
    let duration = Duration::from_secs_f64(args.duration.max(0.1));
    let drain = Duration::from_secs_f64(args.drain.max(0.0));
    let send_until = send_start + duration;
    let drain_until = send_until + drain;
    let drain_idle = Duration::from_secs_f64(args.drain_idle.max(0.05));

    let mut sub_tasks = Vec::new();
    for conn in subs {
        sub_tasks.push(tokio::spawn(subscriber(
            conn,
            n_pubs,
            start,
            live.clone(),
            finish_rx.clone(),
            drain_until + Duration::from_secs(1),
        )));
    }
    let mut pub_tasks = Vec::new();
    for (i, conn) in pubs.into_iter().enumerate() {
        let phase = match args.rate {
            Some(r) if r > 0.0 => Duration::from_secs_f64(i as f64 / n_pubs as f64 / r),
            _ => Duration::ZERO,
        };
        pub_tasks.push(tokio::spawn(publisher(
            conn,
            PubPlan {
                id: i as u32,
                template: PublishTemplate::new(&plan.topics[i], qos, args.payload),
                qos,
                rate: args.rate.filter(|r| *r > 0.0),
                phase,
                window,
                start,
                send_start,
                send_until,
                drain_until,
                drain_idle,
            },
            live.clone(),
        )));
    }
    let stop_progress = Arc::new(AtomicBool::new(false));
    if !args.quiet {
        spawn_progress(live.clone(), stop_progress.clone(), send_start);
    }
    // CPU over the publishing phase.
    let sampler = {
        let pid = args.broker_pid;
        tokio::spawn(async move {
            tokio::time::sleep_until(send_until.into()).await;
            (pid.and_then(|p| sample(&p.to_string())), sample("self"))
        })
    };

    let mut errors: Vec<String> = Vec::new();
    let mut sent_by_pub = Vec::with_capacity(n_pubs);
    let mut unacked = 0u64;
    let mut acked = 0u64;
    for t in pub_tasks {
        let r = t.await.map_err(|e| io::Error::other(e.to_string()))?;
        sent_by_pub.push(r.sent);
        acked += r.acked;
        unacked += r.unacked;
        errors.extend(r.error.map(|e| format!("publisher: {e}")));
    }
    let sent: u64 = sent_by_pub.iter().sum();
    let send_secs = duration.as_secs_f64();
    // Each subscriber expects every message of its sources; a shared group
    // expects each message once.
    let expected_total: u64 = if plan.shared {
        sent
    } else {
        plan.sources
            .iter()
            .flatten()
            .map(|&p| sent_by_pub[p as usize])
            .sum()
    };
    // Drain: until everything has arrived, nothing new has for
    // --drain-idle, or --drain has passed.
    let mut seen = live.received.load(Ordering::Relaxed);
    let mut progress_at = Instant::now().max(send_until);
    loop {
        let now = Instant::now();
        let received = live.received.load(Ordering::Relaxed);
        if received != seen {
            (seen, progress_at) = (received, now);
        }
        if received >= expected_total
            || now >= drain_until
            || now.saturating_duration_since(progress_at) >= drain_idle
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let drained = live.received.load(Ordering::Relaxed) >= expected_total;
    let _ = finish_tx.send(true);
    stop_progress.store(true, Ordering::Relaxed);
    let (broker1, gen1) = sampler.await.map_err(|e| io::Error::other(e.to_string()))?;

    let mut hist = Histogram::new();
    let mut per_sub: Vec<Vec<SeqTrack>> = Vec::new();
    let mut foreign = 0;
    for t in sub_tasks {
        let r = t.await.map_err(|e| io::Error::other(e.to_string()))?;
        hist.merge(&r.hist);
        foreign += r.foreign;
        errors.extend(r.error.map(|e| format!("subscriber: {e}")));
        per_sub.push(r.tracks);
    }
    let last_rx = Duration::from_nanos(live.last_rx_ns.load(Ordering::Relaxed));
    let broker_end = broker_sample(args);

    // Loss, duplicates and reordering, by receiver and publisher.
    let (mut unique, mut lost, mut duplicates, mut reordered) = (0u64, 0u64, 0u64, 0u64);
    let (mut lost_gaps, mut lost_tail) = (0u64, 0u64);
    let mut count = |t: &SeqTrack, expect: u64| {
        unique += t.unique;
        lost += expect.saturating_sub(t.unique);
        let (gaps, tail) = t.missing(expect);
        lost_gaps += gaps;
        lost_tail += tail;
        duplicates += t.duplicates;
        reordered += t.reordered;
    };
    if plan.shared {
        let mut group_tracks = vec![SeqTrack::default(); n_pubs];
        for tracks in &per_sub {
            for (g, t) in group_tracks.iter_mut().zip(tracks) {
                g.merge(t);
            }
        }
        for (p, g) in group_tracks.iter().enumerate() {
            count(g, sent_by_pub[p]);
        }
    } else {
        for (s, tracks) in per_sub.iter().enumerate() {
            for &p in &plan.sources[s] {
                count(&tracks[p as usize], sent_by_pub[p as usize]);
            }
            for (p, t) in tracks.iter().enumerate() {
                if !plan.sources[s].contains(&(p as u32)) {
                    foreign += t.unique + t.duplicates;
                }
            }
        }
    }
    let deliver_secs = last_rx
        .saturating_sub(send_start.duration_since(start))
        .as_secs_f64()
        .max(send_secs.min(1e-3));

    let mut r = Report::default();
    r.set("scenario", args.scenario.name());
    r.set("broker", addr.to_string());
    if sub_addr != addr {
        r.set("subscriber_broker", sub_addr.to_string());
    }
    r.set("qos", u64::from(args.qos));
    r.set("payload", args.payload as u64);
    r.set("publishers", n_pubs as u64);
    r.set("subscribers", plan.filters.len() as u64);
    r.set(
        "mode",
        match args.rate {
            Some(rate) => format!("open-loop {rate} msg/s per publisher"),
            None if qos == QoS::AtMostOnce => "closed-loop (socket)".to_string(),
            None => format!("closed-loop window {window}"),
        },
    );
    r.set("duration_s", send_secs);
    r.set("sent", sent);
    r.set("sent_per_s", sent as f64 / send_secs);
    r.set("acked", acked);
    r.set("unacked", unacked);
    r.set("expected", expected_total);
    r.set("delivered", unique);
    r.set("delivered_per_s", unique as f64 / deliver_secs);
    r.set("delivery_window_s", deliver_secs);
    r.set("lost", lost);
    r.set("lost_in_gaps", lost_gaps);
    r.set("lost_at_tail", lost_tail);
    r.set("drained", drained);
    r.set("duplicates", duplicates);
    r.set("reordered", reordered);
    r.set("foreign", foreign);
    r.set("p50_ms", ms(hist.quantile(0.5)));
    r.set("p99_ms", ms(hist.quantile(0.99)));
    r.set("p999_ms", ms(hist.quantile(0.999)));
    r.set("max_ms", ms(hist.max()));
    r.set(
        "broker_cpu_pct",
        broker0.zip(broker1).map(|(a, b)| cpu_percent(&a, &b)),
    );
    r.set("broker_rss_kb_idle", rss_idle.map(|s| s.rss_kb));
    r.set("broker_rss_kb_load", broker1.map(|s| s.rss_kb));
    r.set("broker_rss_kb_end", broker_end.map(|s| s.rss_kb));
    r.set("broker_hwm_kb", broker_end.map(|s| s.hwm_kb));
    r.set(
        "generator_cpu_pct",
        gen0.zip(gen1).map(|(a, b)| cpu_percent(&a, &b)),
    );
    r.set(
        "broker_dropped",
        if args.sys_dropped {
            sys_dropped(addr, &id).await
        } else {
            None
        },
    );
    r.set("errors", errors.len() as u64);
    r.set("first_error", errors.first().cloned());
    for e in errors.iter().take(5) {
        eprintln!("mqtt-bench: {e}");
    }
    Ok(r)
}

/// The broker's `$SYS/broker/publish/messages/dropped`, if it publishes it.
async fn sys_dropped(addr: SocketAddr, id: &str) -> Option<u64> {
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let timeout = Duration::from_secs(3);
    let mut conn = Conn::connect(addr, &format!("mb-{id}-sys"), 60, true, timeout)
        .await
        .ok()?;
    conn.subscribe(
        "$SYS/broker/publish/messages/dropped",
        QoS::AtMostOnce,
        timeout,
    )
    .await
    .ok()?;
    let payload = conn.next_payload(Duration::from_secs(2)).await.ok()?;
    std::str::from_utf8(&payload).ok()?.trim().parse().ok()
}

async fn run_storm(args: &Args, addr: SocketAddr) -> Report {
    let id = run_id();
    let prefix = args
        .topic_prefix
        .clone()
        .unwrap_or_else(|| format!("bench/{id}"));
    mqtt_benches::load::storm::run(StormPlan {
        addr,
        clients: args.clients(),
        concurrency: args.concurrency(),
        keep_alive: args.keep_alive,
        qos: qos_of(args.qos),
        id_prefix: format!("mb-{id}-st"),
        topic_prefix: prefix,
        step_timeout: Duration::from_secs(30),
        verbose: !args.quiet,
        broker_pid: args.broker_pid,
    })
    .await
}

async fn run_idle(args: &Args, addr: SocketAddr) -> io::Result<Report> {
    let id = run_id();
    let n = args.clients();
    let before = broker_sample(args);
    let t0 = Instant::now();
    let results = open_all(
        addr,
        (0..n).map(|i| (format!("mb-{id}-i{i}"), None)).collect(),
        QoS::AtMostOnce,
        args.keep_alive,
        !args.persistent,
        args.concurrency(),
    )
    .await;
    let connect_secs = t0.elapsed().as_secs_f64();
    let mut conns = Vec::new();
    let mut errors = Vec::new();
    for r in results {
        match r {
            Ok(c) => conns.push(c),
            Err(e) => errors.push(e.to_string()),
        }
    }
    if !args.quiet {
        eprintln!(
            "[idle] {} connected in {:.1}s, {} failed",
            group(conns.len() as u64),
            connect_secs,
            errors.len()
        );
    }
    // Let the broker finish its per-connection setup before measuring.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let settled = broker_sample(args);
    let hold = Duration::from_secs_f64(args.duration.max(0.0));
    let hold_until = Instant::now() + hold;
    let ping_every = Duration::from_secs(u64::from(args.keep_alive.max(2)) / 2);
    let mut next_ping = Instant::now() + ping_every;
    while Instant::now() < hold_until {
        let wake = next_ping.min(hold_until);
        tokio::time::sleep_until(wake.into()).await;
        if Instant::now() >= next_ping {
            for c in &mut conns {
                let _ = c.wr.try_write(&PINGREQ);
            }
            next_ping += ping_every;
        }
    }
    // Connections the broker closed meanwhile show up as readable EOF.
    let mut alive = 0u64;
    for c in &mut conns {
        let mut probe = [0u8; 64];
        match c.rd.try_read(&mut probe) {
            Ok(0) => {}
            _ => alive += 1,
        }
    }
    let after = broker_sample(args);
    let connected = conns.len() as u64;
    let per_conn = before.zip(settled).and_then(|(b, s)| {
        (connected > 0).then(|| (s.rss_kb as f64 - b.rss_kb as f64) * 1024.0 / connected as f64)
    });
    let mut r = Report::default();
    r.set("scenario", "idle");
    r.set("broker", addr.to_string());
    r.set("connections", u64::from(n));
    r.set("connected", connected);
    r.set("alive_at_end", alive);
    r.set("connect_s", connect_secs);
    r.set("connects_per_s", connected as f64 / connect_secs.max(1e-6));
    r.set("hold_s", hold.as_secs_f64());
    r.set("broker_rss_kb_before", before.map(|s| s.rss_kb));
    r.set("broker_rss_kb_connected", settled.map(|s| s.rss_kb));
    r.set("broker_rss_kb_end", after.map(|s| s.rss_kb));
    r.set("broker_hwm_kb", after.map(|s| s.hwm_kb));
    r.set("mem_per_conn_bytes", per_conn);
    r.set("errors", errors.len() as u64);
    r.set("first_error", errors.first().cloned());
    drop(conns);
    Ok(r)
}
