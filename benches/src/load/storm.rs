//! The connection storm: N clients connect as fast as the broker lets them
//! (with a bound on handshakes in flight), then every one subscribes to its
//! own topic, then every one disconnects. Each phase is timed on its own, with
//! its failures and the latency of one client's step, so a broker that
//! accepts quickly but subscribes slowly (or leaks on close) shows where.
//!
//! What a device fleet does after a broker restart or a network outage:
//! thousands of reconnections at once.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mqtt_codec::QoS;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::hist::Histogram;
use super::proc::sample;
use super::proto::{Conn, DISCONNECT};
use super::report::Report;

/// What the storm is told.
pub struct StormPlan {
    /// The broker.
    pub addr: SocketAddr,
    /// Clients.
    pub clients: u32,
    /// Handshakes (or SUBSCRIBEs, or DISCONNECTs) in flight at once.
    pub concurrency: usize,
    /// Keep alive of every client, seconds.
    pub keep_alive: u16,
    /// QoS of the subscriptions.
    pub qos: QoS,
    /// Client ids are `{id_prefix}-{i}`, topics `{topic_prefix}/storm/{i}`.
    pub id_prefix: String,
    /// Topic prefix.
    pub topic_prefix: String,
    /// Longest time one client's step may take before it counts as failed.
    pub step_timeout: Duration,
    /// Progress lines on stderr.
    pub verbose: bool,
    /// Broker process whose memory is sampled before, between and after
    /// the phases (`/proc`).
    pub broker_pid: Option<u32>,
}

/// One phase's outcome.
#[derive(Default)]
struct Phase {
    secs: f64,
    ok: u64,
    failed: u64,
    first_error: Option<String>,
    /// Latency of one client's step, nanoseconds.
    hist: Histogram,
}

impl Phase {
    fn report(&self, r: &mut Report, name: &'static [&'static str; 6]) {
        r.set(name[0], self.secs);
        r.set(name[1], self.ok);
        r.set(name[2], self.failed);
        r.set(name[3], self.ok as f64 / self.secs.max(1e-6));
        r.set(name[4], self.hist.quantile(0.5).map(|v| v as f64 / 1e6));
        r.set(name[5], self.hist.quantile(0.99).map(|v| v as f64 / 1e6));
    }
}

/// Runs `step` on every item, at most `concurrency` at a time; returns what
/// the steps that succeeded gave, in no particular order, and the phase's
/// figures.
async fn phase<I, O, F, Fut>(items: Vec<I>, concurrency: usize, step: F) -> (Vec<O>, Phase)
where
    O: Send + 'static,
    F: Fn(I) -> Fut,
    Fut: std::future::Future<Output = io::Result<O>> + Send + 'static,
{
    let limit = Arc::new(Semaphore::new(concurrency.max(1)));
    let start = Instant::now();
    let mut kept = Vec::new();
    let mut p = Phase::default();
    let mut set = JoinSet::new();
    for item in items {
        // The permit is taken before the task is spawned, so at most
        // `concurrency` steps exist at once (not N tasks waiting).
        let Ok(permit) = limit.clone().acquire_owned().await else {
            break;
        };
        let fut = step(item);
        set.spawn(async move {
            let _permit = permit;
            let t0 = Instant::now();
            let r = fut.await;
            (r, t0.elapsed())
        });
        // Collect what has finished, so the set stays at `concurrency`.
        while let Some(done) = set.try_join_next() {
            collect(done, &mut kept, &mut p);
        }
    }
    while let Some(done) = set.join_next().await {
        collect(done, &mut kept, &mut p);
    }
    p.secs = start.elapsed().as_secs_f64();
    (kept, p)
}

type Joined<T> = Result<(io::Result<T>, Duration), tokio::task::JoinError>;

fn collect<T>(done: Joined<T>, kept: &mut Vec<T>, p: &mut Phase) {
    match done {
        Ok((Ok(item), took)) => {
            p.ok += 1;
            p.hist.record(took.as_nanos() as u64);
            kept.push(item);
        }
        Ok((Err(e), _)) => {
            p.failed += 1;
            p.first_error.get_or_insert_with(|| e.to_string());
        }
        Err(e) => {
            p.failed += 1;
            p.first_error.get_or_insert_with(|| e.to_string());
        }
    }
}

/// Sends DISCONNECT and waits for the broker to close the connection
/// [MQTT-3.14.4-1: the server closes after DISCONNECT].
async fn disconnect(mut conn: Conn, timeout: Duration) -> io::Result<()> {
    let fut = async {
        conn.wr.write_all(&DISCONNECT).await?;
        let mut scratch = [0u8; 256];
        loop {
            if conn.rd.read(&mut scratch).await? == 0 {
                return Ok(());
            }
        }
    };
    tokio::time::timeout(timeout, fut)
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no close after DISCONNECT"))?
}

/// Runs the three phases and reports them.
pub async fn run(plan: StormPlan) -> Report {
    let StormPlan {
        addr,
        clients,
        concurrency,
        keep_alive,
        qos,
        id_prefix,
        topic_prefix,
        step_timeout,
        verbose,
        broker_pid,
    } = plan;
    let rss = || {
        broker_pid
            .and_then(|p| sample(&p.to_string()))
            .map(|s| s.rss_kb)
    };
    let rss_before = rss();
    let mut errors = Vec::new();

    let ids: Vec<u32> = (0..clients).collect();
    let (conns, connect) = phase(ids, concurrency, |i| {
        let id = format!("{id_prefix}-{i}");
        async move {
            let conn = Conn::connect(addr, &id, keep_alive, true, step_timeout).await?;
            Ok((i, conn))
        }
    })
    .await;
    errors.extend(connect.first_error.clone());
    if verbose {
        eprintln!(
            "[storm] {} connected in {:.2}s, {} failed",
            connect.ok, connect.secs, connect.failed
        );
    }

    let (conns, subscribe) = phase(conns, concurrency, |(i, mut conn)| {
        let filter = format!("{topic_prefix}/storm/{i}");
        async move {
            conn.subscribe(&filter, qos, step_timeout).await?;
            Ok((i, conn))
        }
    })
    .await;
    errors.extend(subscribe.first_error.clone());
    if verbose {
        eprintln!(
            "[storm] {} subscribed in {:.2}s, {} failed",
            subscribe.ok, subscribe.secs, subscribe.failed
        );
    }

    let rss_subscribed = rss();
    let (_, close) = phase(conns, concurrency, |(i, conn)| async move {
        disconnect(conn, step_timeout).await?;
        Ok(i)
    })
    .await;
    errors.extend(close.first_error.clone());
    if verbose {
        eprintln!(
            "[storm] {} disconnected in {:.2}s, {} failed",
            close.ok, close.secs, close.failed
        );
    }

    let mut r = Report::default();
    r.set("scenario", "storm");
    r.set("broker", addr.to_string());
    r.set("clients", u64::from(clients));
    r.set("concurrency", concurrency as u64);
    connect.report(
        &mut r,
        &[
            "connect_s",
            "connected",
            "connect_failed",
            "connects_per_s",
            "connect_p50_ms",
            "connect_p99_ms",
        ],
    );
    subscribe.report(
        &mut r,
        &[
            "subscribe_s",
            "subscribed",
            "subscribe_failed",
            "subscribes_per_s",
            "subscribe_p50_ms",
            "subscribe_p99_ms",
        ],
    );
    close.report(
        &mut r,
        &[
            "disconnect_s",
            "disconnected",
            "disconnect_failed",
            "disconnects_per_s",
            "disconnect_p50_ms",
            "disconnect_p99_ms",
        ],
    );
    r.set("total_s", connect.secs + subscribe.secs + close.secs);
    r.set("broker_rss_kb_before", rss_before);
    r.set("broker_rss_kb_subscribed", rss_subscribed);
    // Let the broker finish closing (and freeing) before the last sample.
    tokio::time::sleep(Duration::from_millis(500)).await;
    r.set("broker_rss_kb_end", rss());
    r.set("errors", errors.len() as u64);
    r.set("first_error", errors.first().cloned());
    r
}
