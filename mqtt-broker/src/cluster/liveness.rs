//! Which nodes of the cluster are alive (issue 18: "a node dies").
//!
//! Every node writes its heartbeat to the `P_nodes` bucket every
//! `heartbeat_ms`: key = node name, value = the node's start nonce (its
//! incarnation: a node restarted under the same name is a new one) and a
//! counter. Every node watches the bucket and keeps, on its own monotonic
//! clock, when it last heard each node; no clocks of two machines are ever
//! compared. A node not heard for `node_timeout_ms` is dead: the node that
//! notices publishes its clients' wills (`wills.rs`, once in the cluster)
//! and lets its sessions expire (`expiry.rs`). A node heard again is alive
//! again; a new nonce under a known name means the old incarnation died.
//!
//! A node that cannot write its own heartbeat (NATS or JetStream out of
//! reach), or does not see it come back through its watch, declares nobody
//! dead: it is the one cut off. When its heartbeats
//! go through again it gives every node a fresh timeout (it may have missed
//! their heartbeats), and if it was cut off for half of `node_timeout_ms`
//! or longer (so the others may have declared it dead: they count from
//! when they last heard it) it writes its session records and wills again,
//! so its still-connected clients are owned and covered again.
//!
//! Bound, from a node's death to its clients' wills: its last heartbeat is
//! at most `heartbeat_ms` old when it dies, another node declares it dead
//! `node_timeout_ms` after hearing it (checked every `heartbeat_ms`), then
//! a will without delay is published after one read and one
//! compare-and-set delete: `node_timeout_ms + heartbeat_ms` plus a few
//! JetStream round trips.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::kv::Operation;
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::watch;
use tokio::time::Instant;

use super::Cluster;
use crate::broker::BrokerState;

const HEARTBEAT_VERSION: u8 = 1;

/// A heartbeat's bytes: version, nonce, counter.
pub(super) fn encode_heartbeat(nonce: u64, count: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(17);
    out.push(HEARTBEAT_VERSION);
    out.extend_from_slice(&nonce.to_be_bytes());
    out.extend_from_slice(&count.to_be_bytes());
    out
}

/// The nonce of a heartbeat; `None` for anything else.
pub(super) fn decode_heartbeat(b: &[u8]) -> Option<u64> {
    if b.len() != 17 || b[0] != HEARTBEAT_VERSION {
        return None;
    }
    Some(u64::from_be_bytes(b[1..9].try_into().ok()?))
}

/// What changed about a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Change {
    /// Heard for the first time.
    Joined { node: String, nonce: u64 },
    /// Heard again after it was declared dead.
    Back { node: String, nonce: u64 },
    /// Not heard for the timeout.
    Dead { node: String, nonce: u64 },
    /// Heard with a new nonce: incarnation `old` is gone (it was dead
    /// already when `was_dead`).
    Restarted {
        node: String,
        old: u64,
        new: u64,
        was_dead: bool,
    },
}

#[derive(Debug)]
struct Peer {
    nonce: u64,
    heard: Instant,
    alive: bool,
}

/// The other nodes as this node knows them. Pure: time is passed in.
#[derive(Debug)]
pub(super) struct Liveness {
    timeout: Duration,
    peers: HashMap<String, Peer>,
}

impl Liveness {
    pub(super) fn new(timeout: Duration) -> Liveness {
        Liveness {
            timeout,
            peers: HashMap::new(),
        }
    }

    /// `node` wrote a heartbeat with `nonce`, seen at `now`.
    pub(super) fn heard(&mut self, node: &str, nonce: u64, now: Instant) -> Option<Change> {
        let Some(peer) = self.peers.get_mut(node) else {
            self.peers.insert(
                node.to_string(),
                Peer {
                    nonce,
                    heard: now,
                    alive: true,
                },
            );
            return Some(Change::Joined {
                node: node.to_string(),
                nonce,
            });
        };
        peer.heard = now;
        if peer.nonce != nonce {
            let change = Change::Restarted {
                node: node.to_string(),
                old: peer.nonce,
                new: nonce,
                was_dead: !peer.alive,
            };
            peer.nonce = nonce;
            peer.alive = true;
            return Some(change);
        }
        if !peer.alive {
            peer.alive = true;
            return Some(Change::Back {
                node: node.to_string(),
                nonce,
            });
        }
        None
    }

    /// The nodes not heard for the timeout by `now` that were alive.
    pub(super) fn check(&mut self, now: Instant) -> Vec<Change> {
        let mut dead = Vec::new();
        for (node, peer) in &mut self.peers {
            if peer.alive && now.saturating_duration_since(peer.heard) >= self.timeout {
                peer.alive = false;
                dead.push(Change::Dead {
                    node: node.clone(),
                    nonce: peer.nonce,
                });
            }
        }
        dead.sort_by(|a, b| match (a, b) {
            (Change::Dead { node: x, .. }, Change::Dead { node: y, .. }) => x.cmp(y),
            _ => std::cmp::Ordering::Equal,
        });
        dead
    }

    /// This node could not hear anyone until `now` (it was cut off): every
    /// node gets a fresh timeout from `now`.
    pub(super) fn restart_clocks(&mut self, now: Instant) {
        for peer in self.peers.values_mut() {
            peer.heard = now;
        }
    }

    /// Whether `node` is known and alive.
    #[cfg(test)]
    fn is_alive(&self, node: &str) -> bool {
        self.peers.get(node).is_some_and(|p| p.alive)
    }

    /// Whether `node` is known and dead.
    pub(super) fn is_dead(&self, node: &str) -> bool {
        self.peers.get(node).is_some_and(|p| !p.alive)
    }

    /// The names of the dead nodes, sorted.
    pub(super) fn dead_nodes(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .peers
            .iter()
            .filter(|(_, p)| !p.alive)
            .map(|(n, _)| n.clone())
            .collect();
        v.sort();
        v
    }

    /// How many other nodes are alive.
    pub(super) fn alive_count(&self) -> usize {
        self.peers.values().filter(|p| p.alive).count()
    }
}

/// The liveness task: writes this node's heartbeat, watches the others',
/// declares nodes dead and alive, and starts what follows a death.
pub(super) async fn run(
    cluster: Arc<Cluster>,
    broker: Arc<BrokerState>,
    mut shutdown: watch::Receiver<bool>,
) {
    let cfg = &cluster.cfg;
    let beat = Duration::from_millis(cfg.heartbeat_ms);
    let timeout = Duration::from_millis(cfg.node_timeout_ms);
    let sweep_every = Duration::from_millis(cfg.sweep_interval_ms);
    let mut count = 0u64;
    // When this node's own heartbeat last went through, and when the watch
    // last brought it back: a node that does not hear itself would not
    // hear the others either, and declares nobody dead.
    let mut own_ok: Option<Instant> = None;
    let mut own_heard: Option<Instant> = None;
    let hearing = 3 * beat;
    let mut next_sweep = Instant::now() + sweep_every;
    let mut tick = tokio::time::interval(beat);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut watch_from = 0u64;
    loop {
        let Some(kv) = super::inbound::bucket(&cluster, &cluster.link.nodes, &mut shutdown).await
        else {
            return;
        };
        let watch = if watch_from == 0 {
            kv.watch_all().await
        } else {
            kv.watch_all_from_revision(watch_from).await
        };
        let mut watch = match watch {
            Ok(w) => w,
            Err(e) => {
                tracing::warn!(error = %e, "cluster: cannot watch node heartbeats; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(beat) => continue,
                    _ = shutdown.changed() => return,
                }
            }
        };
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    count += 1;
                    let value = Bytes::from(encode_heartbeat(cluster.nonce, count));
                    let wrote = tokio::time::timeout(beat.max(Duration::from_millis(200)), kv.put(&cfg.node, value)).await;
                    let now = Instant::now();
                    match wrote {
                        Ok(Ok(_)) => {
                            let gap = own_ok.map(|t| now.saturating_duration_since(t));
                            if gap.is_none_or(|g| g > 2 * beat) {
                                // Cut off (or just started): every node's
                                // heartbeats may have been missed.
                                cluster.liveness.lock().restart_clocks(now);
                            }
                            // The others measure from when they last heard
                            // this node, not from its last acknowledged
                            // write: half the timeout leaves room for that.
                            if let Some(g) = gap.filter(|g| *g >= timeout / 2) {
                                tracing::warn!(node = %cfg.node, cut_off_ms = g.as_millis() as u64, "cluster: heartbeats go through again after half of node_timeout_ms or longer (the others may have declared this node dead); writing this node's session records and wills again");
                                cluster.stats.reasserted.fetch_add(1, Ordering::Relaxed);
                                super::sessions::reassert(&cluster);
                                broker.resave_online_sessions();
                                super::wills::reassert(&cluster).await;
                            }
                            if gap.is_none() {
                                // A previous incarnation of this node left
                                // wills and records behind.
                                tokio::spawn(super::wills::after_death(cluster.clone(), broker.clone(), cfg.node.clone(), None, now));
                            }
                            own_ok = Some(now);
                            if own_heard.is_some_and(|t| now.saturating_duration_since(t) <= hearing) {
                                let changes = cluster.liveness.lock().check(now);
                                for c in changes {
                                    changed(&cluster, &broker, c, now);
                                }
                            }
                        }
                        Ok(Err(e)) => tracing::debug!(error = %e, "cluster: heartbeat not written"),
                        Err(_) => tracing::debug!("cluster: heartbeat not written in time"),
                    }
                    if now >= next_sweep && own_ok == Some(now) {
                        next_sweep = now + sweep_every;
                        tokio::spawn(super::expiry::sweep(cluster.clone()));
                    }
                }
                entry = watch.next() => {
                    let entry = match entry {
                        Some(Ok(e)) => e,
                        Some(Err(e)) => {
                            tracing::warn!(error = %e, "cluster: heartbeat watch interrupted; starting again");
                            break;
                        }
                        None => break,
                    };
                    watch_from = entry.revision + 1;
                    if entry.operation != Operation::Put {
                        continue;
                    }
                    let Some(nonce) = decode_heartbeat(&entry.value) else {
                        continue;
                    };
                    if entry.key == cfg.node {
                        if nonce != cluster.nonce {
                            tracing::error!(node = %cfg.node, "cluster: another broker writes heartbeats under this node's name; node names must be unique");
                            continue;
                        }
                        let now = Instant::now();
                        if own_heard.is_none_or(|t| now.saturating_duration_since(t) > hearing) {
                            // The watch was stalled: the others' heartbeats
                            // may have been missed too.
                            cluster.liveness.lock().restart_clocks(now);
                        }
                        own_heard = Some(now);
                        continue;
                    }
                    let change = cluster.liveness.lock().heard(&entry.key, nonce, Instant::now());
                    if let Some(c) = change {
                        changed(&cluster, &broker, c, Instant::now());
                    }
                }
                _ = shutdown.changed() => return,
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            _ = shutdown.changed() => return,
        }
    }
}

/// Logs and counts a change, and starts the work a death calls for.
fn changed(cluster: &Arc<Cluster>, broker: &Arc<BrokerState>, c: Change, now: Instant) {
    let s = &cluster.stats;
    match c {
        Change::Joined { node, .. } => {
            tracing::info!(%node, "cluster: node alive");
        }
        Change::Back { node, .. } => {
            s.nodes_back.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(%node, "cluster: node declared dead is alive again");
        }
        Change::Dead { node, nonce } => {
            s.nodes_dead.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(%node, timeout_ms = cluster.cfg.node_timeout_ms, "cluster: node not heard for node_timeout_ms: dead; publishing its clients' wills and expiring its sessions");
            tokio::spawn(super::wills::after_death(
                cluster.clone(),
                broker.clone(),
                node,
                Some(nonce),
                now,
            ));
        }
        Change::Restarted {
            node,
            old,
            was_dead,
            ..
        } => {
            if was_dead {
                s.nodes_back.fetch_add(1, Ordering::Relaxed);
            } else {
                s.nodes_dead.fetch_add(1, Ordering::Relaxed);
            }
            tracing::warn!(%node, "cluster: node restarted; publishing the wills its previous run left");
            // Its new run owns its records again as clients reconnect; only
            // the old run's wills are due.
            tokio::spawn(super::wills::after_death(
                cluster.clone(),
                broker.clone(),
                node,
                Some(old),
                now,
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t0() -> Instant {
        Instant::now()
    }

    #[test]
    fn heartbeat_round_trip() {
        assert_eq!(decode_heartbeat(&encode_heartbeat(42, 7)), Some(42));
        assert_eq!(decode_heartbeat(&[]), None);
        assert_eq!(decode_heartbeat(&[2; 17]), None);
        assert_eq!(decode_heartbeat(&encode_heartbeat(1, 1)[..16]), None);
    }

    #[test]
    fn a_node_first_heard_joins_and_is_alive() {
        let mut l = Liveness::new(Duration::from_secs(5));
        let now = t0();
        assert_eq!(
            l.heard("a", 1, now),
            Some(Change::Joined {
                node: "a".into(),
                nonce: 1
            })
        );
        assert!(l.is_alive("a"));
        assert_eq!(l.heard("a", 1, now + Duration::from_secs(1)), None);
        assert_eq!(l.alive_count(), 1);
    }

    #[test]
    fn a_node_not_heard_for_the_timeout_is_dead_once() {
        let mut l = Liveness::new(Duration::from_secs(5));
        let now = t0();
        l.heard("a", 1, now);
        l.heard("b", 2, now);
        l.heard("b", 2, now + Duration::from_secs(3));
        assert!(l.check(now + Duration::from_millis(4999)).is_empty());
        assert_eq!(
            l.check(now + Duration::from_secs(5)),
            vec![Change::Dead {
                node: "a".into(),
                nonce: 1
            }]
        );
        // Declared once, not at every check.
        assert!(l.check(now + Duration::from_secs(6)).is_empty());
        assert!(l.is_dead("a"));
        assert!(l.is_alive("b"));
        assert_eq!(l.dead_nodes(), vec!["a".to_string()]);
        assert_eq!(
            l.check(now + Duration::from_secs(8)),
            vec![Change::Dead {
                node: "b".into(),
                nonce: 2
            }]
        );
    }

    #[test]
    fn a_dead_node_heard_again_is_back() {
        let mut l = Liveness::new(Duration::from_secs(5));
        let now = t0();
        l.heard("a", 1, now);
        l.check(now + Duration::from_secs(5));
        assert_eq!(
            l.heard("a", 1, now + Duration::from_secs(6)),
            Some(Change::Back {
                node: "a".into(),
                nonce: 1
            })
        );
        assert!(l.is_alive("a"));
        assert!(l.check(now + Duration::from_secs(10)).is_empty());
    }

    #[test]
    fn a_new_nonce_is_a_restart_and_ends_the_old_incarnation() {
        let mut l = Liveness::new(Duration::from_secs(5));
        let now = t0();
        l.heard("a", 1, now);
        assert_eq!(
            l.heard("a", 2, now + Duration::from_secs(1)),
            Some(Change::Restarted {
                node: "a".into(),
                old: 1,
                new: 2,
                was_dead: false
            })
        );
        l.check(now + Duration::from_secs(6));
        assert_eq!(
            l.heard("a", 3, now + Duration::from_secs(7)),
            Some(Change::Restarted {
                node: "a".into(),
                old: 2,
                new: 3,
                was_dead: true
            })
        );
        assert!(l.is_alive("a"));
    }

    // A node that was cut off itself must not declare the others dead for
    // the heartbeats it could not hear.
    #[test]
    fn restarted_clocks_give_every_node_a_fresh_timeout() {
        let mut l = Liveness::new(Duration::from_secs(5));
        let now = t0();
        l.heard("a", 1, now);
        l.restart_clocks(now + Duration::from_secs(10));
        assert!(l.check(now + Duration::from_secs(14)).is_empty());
        assert_eq!(l.check(now + Duration::from_secs(15)).len(), 1);
    }
}
