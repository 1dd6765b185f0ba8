//! What the connection writes: packets encoded into the write buffer (a
//! large payload spliced in from the message, `splice.rs`), and
//! acknowledgements held back until the store has synced what their
//! packets changed (`durability = "always"`) and the cluster has stored
//! the messages, released in order by their `Gate`.

use super::*;

/// What held acknowledgements wait for: a store sync, and the cluster
/// storing the messages they acknowledge.
pub(super) struct Gate {
    pub(super) store: Option<oneshot::Receiver<()>>,
    pub(super) cluster: Vec<oneshot::Receiver<bool>>,
    /// The cluster did not store a message: the acknowledgements must not go.
    pub(super) failed: bool,
    /// Incoming QoS 2 packet identifiers whose PUBREC waits here: forgotten
    /// if the gate fails, so the client's resent PUBLISH is taken as new
    /// (and sent to the cluster) rather than as a duplicate.
    qos2: Vec<u16>,
}

impl Gate {
    /// Waits for everything (cancel-safe: what completed is removed).
    async fn wait(&mut self) {
        if let Some(rx) = self.store.as_mut() {
            let _ = rx.await;
            self.store = None;
        }
        while let Some(rx) = self.cluster.last_mut() {
            let stored = rx.await.unwrap_or(false);
            self.cluster.pop();
            if !stored {
                self.failed = true;
                return;
            }
        }
    }

    /// `Some(true)` when everything is done, `Some(false)` when the cluster
    /// failed, `None` while something is pending.
    fn check(&mut self) -> Option<bool> {
        if self.failed {
            return Some(false);
        }
        if let Some(rx) = self.store.as_mut() {
            match rx.try_recv() {
                Ok(()) | Err(oneshot::error::TryRecvError::Closed) => self.store = None,
                Err(oneshot::error::TryRecvError::Empty) => return None,
            }
        }
        while let Some(rx) = self.cluster.last_mut() {
            match rx.try_recv() {
                Ok(true) => {
                    self.cluster.pop();
                }
                Ok(false) | Err(oneshot::error::TryRecvError::Closed) => {
                    self.failed = true;
                    return Some(false);
                }
                Err(oneshot::error::TryRecvError::Empty) => return None,
            }
        }
        Some(true)
    }
}

/// Completes when the oldest held acknowledgement's gate is done.
pub(super) async fn wait_front(waiting: &mut std::collections::VecDeque<(Gate, BytesMut)>) {
    match waiting.front_mut() {
        Some((gate, _)) => gate.wait().await,
        None => std::future::pending().await,
    }
}

impl Conn {
    /// Puts what `held` collected behind one store barrier, if the packets
    /// handled since `mark` (see `store::ops_sent_on_this_thread`) wrote to
    /// the store. If they did not (clean sessions, no retained message),
    /// nothing needs a sync: the packets only keep their place behind those
    /// already waiting. A barrier costs a wake-up of the writer thread and
    /// one back, per read.
    pub(super) fn seal_held(&mut self, out: &mut BytesMut, mark: u64) {
        if self.held.is_empty() {
            return;
        }
        let store = match &self.broker.store {
            Some(store) if crate::store::ops_sent_on_this_thread() != mark => Some(store.barrier()),
            _ => None,
        };
        let cluster = std::mem::take(&mut self.cluster_waits);
        let qos2 = std::mem::take(&mut self.cluster_qos2);
        if store.is_some() || !cluster.is_empty() {
            let gate = Gate {
                store,
                // `Gate` takes them from the back: the last one first.
                cluster,
                failed: false,
                qos2,
            };
            self.durable_acks.push_back((gate, self.held.split()));
        } else if let Some((_, waiting)) = self.durable_acks.back_mut() {
            waiting.unsplit(self.held.split());
        } else {
            out.unsplit(self.held.split());
        }
    }

    /// Encodes a packet into `held`, to leave once the store has synced.
    pub(super) fn send_held(&mut self, packet: &Packet<'_>) {
        let mut held = std::mem::take(&mut self.held);
        self.send(&mut held, packet);
        self.held = held;
    }

    /// Whether a PUBLISH or PUBREL to this client waits in `held`. With
    /// `durability = "always"` and a stored session, a QoS 2 PUBLISH or a
    /// PUBREL (`needs_store`) leaves only once the store has its new state:
    /// else a restart could send the message again under another packet
    /// identifier, or send the PUBLISH again after its PUBREL, and the
    /// client would take it for a new message. Whatever follows a held
    /// packet is held too, so the order (and topic aliases) stay as sent.
    pub(super) fn hold_outgoing(&self, st: &SessionState, needs_store: bool) -> bool {
        self.hold_acks
            && st.persistent
            && (needs_store || !self.held.is_empty() || !self.durable_acks.is_empty())
    }

    /// Sends a QoS acknowledgement, or with `durability = "always"` holds it
    /// until the store has synced what the packet changed.
    pub(super) fn send_ack(&mut self, out: &mut BytesMut, packet: &Packet<'_>) {
        if self.hold_acks {
            self.send_held(packet);
        } else {
            self.send(out, packet);
        }
    }

    /// Moves acknowledgements whose sync (and cluster store) has completed
    /// to the write buffer, in order. A message the cluster did not store
    /// closes the connection with its acknowledgement and every later one
    /// unsent, so the client sends them again (MQTT 5: DISCONNECT 0x80).
    pub(super) fn release_acks(&mut self, out: &mut BytesMut) -> Step {
        while let Some((gate, _)) = self.durable_acks.front_mut() {
            match gate.check() {
                Some(true) => {
                    if let Some((_, bytes)) = self.durable_acks.pop_front() {
                        out.extend_from_slice(&bytes);
                    }
                }
                Some(false) => {
                    // None of the held PUBRECs goes out: forget their ids.
                    let pids: Vec<u16> = self
                        .durable_acks
                        .iter()
                        .flat_map(|(g, _)| g.qos2.iter().copied())
                        .collect();
                    for pid in pids {
                        self.forget_incoming(pid);
                    }
                    tracing::warn!(
                        client = %self.client_id,
                        "cluster did not store a QoS 1/2 message in time: closing without acknowledging it"
                    );
                    return Err(Close::Server(
                        ReasonCode::UnspecifiedError,
                        "the cluster could not store the message; send it again",
                    ));
                }
                None => break,
            }
        }
        Ok(())
    }

    pub(super) fn send(&self, out: &mut BytesMut, packet: &Packet<'_>) {
        // Packets the broker builds itself are valid by construction.
        self.send_within(out, packet, usize::MAX);
    }

    /// [`send`](Conn::send) if the packet takes at most `limit` bytes (the
    /// client's Maximum Packet Size); says whether it was sent.
    pub(super) fn send_within(
        &self,
        out: &mut BytesMut,
        packet: &Packet<'_>,
        limit: usize,
    ) -> bool {
        if push_packet(out, self.version, packet, limit).is_err() {
            return false;
        }
        tracing::debug!(target: "mqtt_broker::packets", "{} <- {}", self.client_id, describe(packet));
        self.broker.stats.messages_sent.inc();
        true
    }

    /// Sends a PUBLISH whose large payload is written from the message
    /// (see `splice`): the header goes into `out`, the payload is queued
    /// after it. Says whether it was within the client's Maximum Packet
    /// Size.
    pub(super) fn send_spliced(
        &mut self,
        out: &mut BytesMut,
        publish: Publish<'_>,
        payload: &Bytes,
    ) -> bool {
        let mut head = BytesMut::new();
        let headless = Packet::Publish(Publish {
            payload: &[],
            ..publish
        });
        if push_packet(&mut head, self.version, &headless, usize::MAX).is_err() {
            return false;
        }
        let limit = self.client_max_packet as usize;
        if crate::splice::put_header(out, &head, payload.len(), limit).is_none() {
            return false;
        }
        self.spliced.push(out.len(), payload.clone());
        tracing::debug!(target: "mqtt_broker::packets", "{} <- {}", self.client_id, describe(&Packet::Publish(publish)));
        self.broker.stats.messages_sent.inc();
        true
    }
}
