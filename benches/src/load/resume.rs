//! `mqtt-bench resume`: how long a persistent session with a backlog takes
//! to come back, possibly on another node of a cluster (issue 18).
//!
//! A subscriber (Clean Session 0) subscribes at QoS 1 on `sub_addr` and
//! leaves; a publisher on `pub_addr` sends `messages` QoS 1 messages (each
//! payload starts with its number) and waits for every PUBACK; then the
//! subscriber connects again on `resume_addr` and acknowledges everything
//! until it has every number (or nothing comes for `idle`). Reported: the
//! time to the CONNACK, the time until the whole backlog arrived, and what
//! was lost or arrived twice.

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Buf;
use mqtt_codec::{decode, Packet, QoS, Status};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::proto::{push_ack, Conn, PublishTemplate, DISCONNECT, OPTS, PUBACK};
use super::report::Report;

/// What to run.
pub struct ResumePlan {
    pub pub_addr: SocketAddr,
    pub sub_addr: SocketAddr,
    pub resume_addr: SocketAddr,
    pub messages: u32,
    pub payload: usize,
    pub topic: String,
    pub client_prefix: String,
    pub keep_alive: u16,
    pub idle: Duration,
    pub verbose: bool,
}

const STEP: Duration = Duration::from_secs(30);
const WINDOW: u32 = 256;

fn bad(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

/// Runs the plan.
pub async fn run(plan: ResumePlan) -> io::Result<Report> {
    let sub_id = format!("{}-sub", plan.client_prefix);
    let mut sub = Conn::connect(plan.sub_addr, &sub_id, plan.keep_alive, false, STEP).await?;
    sub.subscribe(&plan.topic, QoS::AtLeastOnce, STEP).await?;
    sub.wr.write_all(&DISCONNECT).await?;
    drop(sub);

    let t_pub = Instant::now();
    publish_all(&plan).await?;
    let publish_s = t_pub.elapsed().as_secs_f64();
    if plan.verbose {
        eprintln!(
            "[resume] {} messages queued in {publish_s:.2}s",
            plan.messages
        );
    }

    let t0 = Instant::now();
    let mut sub = Conn::connect(plan.resume_addr, &sub_id, plan.keep_alive, false, STEP).await?;
    let connack_ms = t0.elapsed().as_secs_f64() * 1000.0;
    let n = plan.messages as usize;
    let mut seen = vec![false; n];
    let (mut unique, mut received, mut dups) = (0usize, 0u64, 0u64);
    let mut acks = Vec::with_capacity(4096);
    let mut last = Instant::now();
    while unique < n {
        loop {
            match decode(&sub.buf, &OPTS) {
                Ok(Status::Complete((Packet::Publish(p), used))) => {
                    received += 1;
                    let i = p
                        .payload
                        .get(..8)
                        .map(|b| u64::from_be_bytes(b.try_into().unwrap_or_default()) as usize);
                    match i {
                        Some(i) if i < n && !seen[i] => {
                            seen[i] = true;
                            unique += 1;
                        }
                        _ => dups += 1,
                    }
                    if let Some(pid) = p.qos_pid.pid() {
                        push_ack(&mut acks, PUBACK, pid.get());
                    }
                    sub.buf.advance(used);
                }
                Ok(Status::Complete((_, used))) => sub.buf.advance(used),
                Ok(Status::Partial(_)) => break,
                Err(e) => return Err(bad(format!("bad packet: {e}"))),
            }
        }
        if !acks.is_empty() {
            sub.wr.write_all(&acks).await?;
            acks.clear();
        }
        if unique == n {
            break;
        }
        sub.buf.reserve(64 * 1024);
        match tokio::time::timeout(plan.idle, sub.rd.read_buf(&mut sub.buf)).await {
            Ok(Ok(0)) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(Ok(_)) => last = Instant::now(),
            Ok(Err(e)) => return Err(e),
            Err(_) => break,
        }
    }
    let all_ms = last.duration_since(t0).as_secs_f64() * 1000.0;
    let mut r = Report::default();
    r.set("scenario", "resume");
    r.set("publisher", plan.pub_addr.to_string());
    r.set("subscribed_at", plan.sub_addr.to_string());
    r.set("resumed_at", plan.resume_addr.to_string());
    r.set("queued", u64::from(plan.messages));
    r.set("queue_s", publish_s);
    r.set("connack_ms", connack_ms);
    r.set("all_received_ms", all_ms);
    r.set(
        "backlog_msgs_per_s",
        unique as f64 / (all_ms / 1000.0).max(1e-6),
    );
    r.set("received", received);
    r.set("lost", (n - unique) as u64);
    r.set("duplicates", dups);
    Ok(r)
}

/// Publishes every message at QoS 1 and waits for every PUBACK.
async fn publish_all(plan: &ResumePlan) -> io::Result<()> {
    let id = format!("{}-pub", plan.client_prefix);
    let mut p = Conn::connect(plan.pub_addr, &id, plan.keep_alive, true, STEP).await?;
    let tpl = PublishTemplate::new(&plan.topic, QoS::AtLeastOnce, plan.payload.max(20));
    let (mut sent, mut acked) = (0u32, 0u32);
    let mut out = Vec::with_capacity(64 * 1024);
    while acked < plan.messages {
        out.clear();
        while sent < plan.messages && sent - acked < WINDOW {
            let pid = (sent % 65_535 + 1) as u16;
            let range = tpl.push(&mut out, pid);
            out[range.start..range.start + 8].copy_from_slice(&u64::from(sent).to_be_bytes());
            sent += 1;
        }
        if !out.is_empty() {
            p.wr.write_all(&out).await?;
        }
        loop {
            match decode(&p.buf, &OPTS) {
                Ok(Status::Complete((packet, used))) => {
                    if matches!(packet, Packet::PubAck(_)) {
                        acked += 1;
                    }
                    p.buf.advance(used);
                }
                Ok(Status::Partial(_)) => break,
                Err(e) => return Err(bad(format!("bad packet: {e}"))),
            }
        }
        if acked < plan.messages && sent - acked >= WINDOW.min(plan.messages - acked) {
            p.buf.reserve(64 * 1024);
            match tokio::time::timeout(STEP, p.rd.read_buf(&mut p.buf)).await {
                Ok(Ok(0)) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Err(e),
                Err(_) => return Err(bad("no PUBACK for 30 s")),
            }
        }
    }
    p.wr.write_all(&DISCONNECT).await?;
    Ok(())
}
