//! Bridges to other brokers, configured as in Mosquitto (mosquitto.conf(5),
//! "Configuring Bridges"): `config.rs` holds the `[[bridges]]` settings and
//! the `topic` line grammar, `link.rs` one bridge's local session and its
//! connection to the remote, `transport.rs` TCP and TLS to the remote.
//!
//! State shows in `$SYS/broker/connection/<remote_clientid>/state` (`1` or
//! `0`, retained, here and on the remote, as Mosquitto's notifications) and
//! in `$SYS/broker/bridges/<name>/...` (connected, queued, inflight,
//! dropped, messages sent and received) every `sys_interval_secs`.

pub mod config;
mod link;
mod transport;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use mqtt_codec::QoS;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::broker::BrokerState;
use crate::message::Message;
pub use config::{Bridge, BridgeConfig};
use link::Link;
pub use link::LinkStatus;

/// Checks every `[[bridges]]` entry (TLS files are read at start), so a
/// broken bridge stops the start with a message naming the entry and key.
pub fn check(bridges: &[BridgeConfig]) -> Result<(), String> {
    config::check_all(bridges).map(|_| ())
}

/// Starts one task per configured bridge (and one for its `$SYS` topics
/// and drop warnings).
pub(crate) fn start(
    broker: &Arc<BrokerState>,
    shutdown: &watch::Receiver<bool>,
) -> Result<Vec<JoinHandle<()>>, String> {
    let mut tasks = Vec::new();
    for b in config::check_all(&broker.config.bridges)? {
        let tls = match &b.cfg.tls {
            Some(t) => Some(
                transport::tls_config(t).map_err(|e| format!("bridge {:?}: {e}", b.cfg.name))?,
            ),
            None => None,
        };
        tracing::info!(
            bridge = %b.cfg.name,
            remote_clientid = %b.remote_clientid,
            local_clientid = %b.local_clientid,
            lines = b.lines.len(),
            "bridge configured"
        );
        let link = Link::new(broker.clone(), Arc::new(b.clone()), tls);
        broker
            .bridges
            .lock()
            .push((b.cfg.name.clone(), link.status.clone()));
        tasks.push(tokio::spawn(sys_loop(
            broker.clone(),
            b.cfg.name.clone(),
            link.status.clone(),
            shutdown.clone(),
        )));
        tasks.push(tokio::spawn(link.run(shutdown.clone())));
    }
    Ok(tasks)
}

/// How often a bridge's queue drops are looked at and logged.
const DROP_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Publishes one bridge's figures under `$SYS/broker/bridges/<name>/` every
/// `sys_interval_secs`, and logs (at most every 10 s) the messages its full
/// queue dropped.
async fn sys_loop(
    broker: Arc<BrokerState>,
    name: String,
    status: Arc<LinkStatus>,
    mut shutdown: watch::Receiver<bool>,
) {
    let secs = broker.config.sys_interval_secs;
    let mut sys_tick = (secs > 0).then(|| tokio::time::interval(Duration::from_secs(secs)));
    let mut drop_tick = tokio::time::interval(DROP_LOG_INTERVAL);
    let mut dropped_logged = 0u64;
    loop {
        let publish_sys = tokio::select! {
            _ = async {
                match sys_tick.as_mut() {
                    Some(t) => t.tick().await,
                    // `$SYS` off: never.
                    None => std::future::pending().await,
                }
            } => true,
            _ = drop_tick.tick() => false,
            _ = shutdown.changed() => return,
        };
        let (queued, inflight, dropped) = status.depth();
        if dropped > dropped_logged {
            tracing::warn!(
                bridge = %name,
                dropped = dropped - dropped_logged,
                queued,
                "bridge queue full: messages for the remote dropped (max_queued_messages / max_queued_bytes)"
            );
            dropped_logged = dropped;
        }
        if !publish_sys {
            continue;
        }
        let values = [
            (
                "connected",
                u64::from(status.connected.load(Ordering::Acquire)),
            ),
            ("queued", queued as u64),
            ("inflight", inflight as u64),
            ("dropped", dropped),
            ("messages/sent", status.sent.load(Ordering::Relaxed)),
            ("messages/received", status.received.load(Ordering::Relaxed)),
            (
                "messages/echoes_dropped",
                status.echoes_dropped.load(Ordering::Relaxed),
            ),
            ("connects", status.connects.load(Ordering::Relaxed)),
        ];
        for (key, value) in values {
            let topic = format!("$SYS/broker/bridges/{name}/{key}");
            let msg = Message::new(
                &topic,
                Bytes::from(value.to_string()),
                QoS::AtMostOnce,
                true,
            );
            broker.publish(Arc::new(msg));
        }
    }
}
