//! What the connection writes, owned by one type, [`Outbox`]: the write
//! buffer (a large payload spliced in from the message, `splice.rs`), and
//! the packets held back until the store has synced what their packets
//! changed (`durability = "always"`) and the cluster has stored the
//! messages, released in order by their `Gate`. Every packet the
//! connection sends goes through `Conn::send` with the [`Lane`] it takes.

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
    pub(super) qos2: Vec<u16>,
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

/// Which way a packet leaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Lane {
    /// Into the write buffer now.
    Now,
    /// A QoS acknowledgement (or SUBACK / UNSUBACK of a stored session):
    /// held when acknowledgements wait for the store or the cluster, else now.
    Ack,
    /// Held behind the store sync of the packets being handled.
    Held,
}

/// Everything the connection has to write, in the order it goes out.
pub(super) struct Outbox {
    /// Bytes waiting to be written (it starts with the CONNACK); dropped
    /// whenever it empties, so an idle connection keeps none.
    pub(super) buf: BytesMut,
    /// Large payloads written from the message, between the bytes of
    /// `buf` (see `splice`).
    pub(super) spliced: Spliced,
    /// With `durability = "always"` or in a cluster: acknowledgements wait.
    hold_acks: bool,
    /// Held packets of the packets being handled now.
    held: BytesMut,
    /// Held packets waiting for a sync or the cluster, oldest first.
    pub(super) waiting: LazyDeque<(Gate, BytesMut)>,
}

impl Outbox {
    /// An outbox whose first bytes are `first` (the CONNACK).
    pub(super) fn new(hold_acks: bool, first: BytesMut) -> Self {
        Outbox {
            buf: first,
            spliced: Spliced::default(),
            hold_acks,
            held: BytesMut::new(),
            waiting: Default::default(),
        }
    }

    /// Whether acknowledgements wait for the store or the cluster.
    pub(super) fn hold_acks(&self) -> bool {
        self.hold_acks
    }

    /// Encodes `packet` into its lane if it takes at most `limit` bytes.
    fn push(
        &mut self,
        version: ProtocolVersion,
        packet: &Packet<'_>,
        limit: usize,
        lane: Lane,
    ) -> bool {
        let to = match lane {
            Lane::Held => &mut self.held,
            Lane::Ack if self.hold_acks => &mut self.held,
            Lane::Now | Lane::Ack => &mut self.buf,
        };
        push_packet(to, version, packet, limit).is_ok()
    }

    /// Writes a PUBLISH from the shared head of a fanned-out message (see
    /// `fanout`) into its lane if it takes at most `limit` bytes; a large
    /// payload is spliced only into the write buffer itself.
    pub(super) fn push_shared(
        &mut self,
        head: &[u8],
        d: &crate::fanout::Delivery<'_>,
        limit: usize,
        lane: Lane,
    ) -> bool {
        match lane {
            Lane::Held => crate::fanout::write(&mut self.held, head, d, limit, None),
            Lane::Ack if self.hold_acks => {
                crate::fanout::write(&mut self.held, head, d, limit, None)
            }
            Lane::Ack => crate::fanout::write(&mut self.buf, head, d, limit, None),
            Lane::Now => {
                crate::fanout::write(&mut self.buf, head, d, limit, Some(&mut self.spliced))
            }
        }
    }

    /// Makes room in the write buffer for `messages` queued messages of
    /// `bytes` (topics and payloads) at once, as far as the high water
    /// mark: the buffer is given back whenever it empties, and growing it
    /// again message by message copied it at every doubling (2% of a
    /// fan-out's time). Not for large messages, which are spliced.
    pub(super) fn reserve_for(&mut self, messages: usize, bytes: usize) {
        if messages == 0 || bytes / messages >= SPLICE_MIN {
            return;
        }
        // The fixed header, topic length, packet identifier and property
        // length of a PUBLISH without properties fit in 9 bytes.
        let want = (bytes + messages * 9).min(WRITE_HIGH_WATER.saturating_sub(self.backlog()));
        self.buf.reserve(want);
    }

    /// Bytes written or spliced, not yet on the socket.
    pub(super) fn unwritten(&self) -> usize {
        self.buf.len() + self.spliced.pending()
    }

    /// Everything not on the socket yet, held packets included: what the
    /// high water mark of a queue drain counts.
    pub(super) fn backlog(&self) -> usize {
        let waiting: usize = self.waiting.iter().map(|(_, b)| b.len()).sum();
        self.unwritten() + self.held.len() + waiting
    }

    /// Whether nothing is held back.
    pub(super) fn nothing_held(&self) -> bool {
        self.held.is_empty() && self.waiting.is_empty()
    }

    /// Whether there is something to write.
    pub(super) fn has_output(&self) -> bool {
        self.spliced.has_output(&self.buf)
    }

    /// `n` bytes were written.
    pub(super) fn advance(&mut self, n: usize) {
        self.spliced.advance(&mut self.buf, n);
        self.give_back_if_empty();
    }

    /// Frees the write buffer if nothing is in it: an idle connection
    /// keeps no write buffer.
    pub(super) fn give_back_if_empty(&mut self) {
        if self.buf.is_empty() && self.buf.capacity() > 0 {
            self.buf = BytesMut::new();
        }
    }

    /// Whether a PUBLISH or PUBREL to this client must be held. With
    /// `durability = "always"` and a stored session, a QoS 2 PUBLISH or a
    /// PUBREL (`needs_store`) leaves only once the store has its new state:
    /// else a restart could send the message again under another packet
    /// identifier, or send the PUBLISH again after its PUBREL, and the
    /// client would take it for a new message. Whatever follows a held
    /// packet is held too, so the order (and topic aliases) stay as sent.
    pub(super) fn must_hold(&self, persistent: bool, needs_store: bool) -> bool {
        self.hold_acks && persistent && (needs_store || !self.nothing_held())
    }

    /// Puts what `held` collected behind a gate (a store barrier, the
    /// cluster's answers), or, with nothing to wait for, behind the packets
    /// already waiting (or into the write buffer when none are).
    fn seal(
        &mut self,
        store: Option<oneshot::Receiver<()>>,
        cluster: Vec<oneshot::Receiver<bool>>,
        qos2: Vec<u16>,
    ) {
        if store.is_some() || !cluster.is_empty() {
            let gate = Gate {
                store,
                // `Gate` takes them from the back: the last one first.
                cluster,
                failed: false,
                qos2,
            };
            self.waiting.push_back((gate, self.held.split()));
        } else if let Some((_, waiting)) = self.waiting.back_mut() {
            waiting.unsplit(self.held.split());
        } else {
            self.buf.unsplit(self.held.split());
        }
    }

    /// Moves held packets whose gate has opened to the write buffer, in
    /// order. When the cluster did not store a message, the incoming QoS 2
    /// identifiers of every gate still closed are returned (their PUBRECs
    /// never leave).
    fn release(&mut self) -> Result<(), Vec<u16>> {
        while let Some((gate, _)) = self.waiting.front_mut() {
            match gate.check() {
                Some(true) => {
                    if let Some((_, bytes)) = self.waiting.pop_front() {
                        self.buf.extend_from_slice(&bytes);
                    }
                }
                Some(false) => {
                    return Err(self
                        .waiting
                        .iter()
                        .flat_map(|(g, _)| g.qos2.iter().copied())
                        .collect())
                }
                None => break,
            }
        }
        Ok(())
    }
}

/// Completes when the oldest held packets' gate is done.
pub(super) async fn wait_front(waiting: &mut LazyDeque<(Gate, BytesMut)>) {
    match waiting.front_mut() {
        Some((gate, _)) => gate.wait().await,
        None => std::future::pending().await,
    }
}

impl Conn {
    /// Puts what was held while handling packets behind one store barrier,
    /// if the packets handled since `mark` (see
    /// `store::ops_sent_on_this_thread`) wrote to the store. If they did not
    /// (clean sessions, no retained message), nothing needs a sync: the
    /// packets only keep their place behind those already waiting. A
    /// barrier costs a wake-up of the writer thread and one back, per read.
    pub(super) fn seal_held(&mut self, mark: u64) {
        if self.outbox.held.is_empty() {
            return;
        }
        let wrote = crate::store::ops_sent_on_this_thread() != mark;
        let store = match &self.broker.store {
            Some(store) if wrote => Some(store.barrier()),
            _ => None,
        };
        #[allow(unused_mut)]
        let mut cluster = self.cluster_waits.take();
        // In a cluster the writes may be to the sessions' queues there.
        #[cfg(feature = "cluster")]
        if let (Some(c), true) = (&self.broker.cluster, wrote) {
            cluster.insert(0, c.queue_barrier());
        }
        let qos2 = self.cluster_qos2.take();
        self.outbox.seal(store, cluster, qos2);
    }

    /// Moves held packets whose sync (and cluster store) has completed to
    /// the write buffer, in order. A message the cluster did not store
    /// closes the connection with its acknowledgement and every later one
    /// unsent, so the client sends them again (MQTT 5: DISCONNECT 0x80).
    pub(super) fn release_acks(&mut self) -> Step {
        let Err(pids) = self.outbox.release() else {
            return Ok(());
        };
        // None of the held PUBRECs goes out: forget their ids.
        for pid in pids {
            self.forget_incoming(pid);
        }
        tracing::warn!(
            client = %self.client_id,
            "cluster did not store a QoS 1/2 message in time: closing without acknowledging it"
        );
        Err(Close::Server(
            ReasonCode::UnspecifiedError,
            "the cluster could not store the message; send it again",
        ))
    }

    /// Whether a PUBLISH or PUBREL to this client waits for the store (see
    /// `Outbox::must_hold`).
    pub(super) fn hold_outgoing(&self, st: &SessionState, needs_store: bool) -> bool {
        self.outbox.must_hold(st.persistent, needs_store)
    }

    /// Sends a packet the broker built (valid by construction) by `lane`.
    pub(super) fn send(&mut self, packet: &Packet<'_>, lane: Lane) {
        self.send_within(packet, lane, usize::MAX);
    }

    /// [`send`](Conn::send) if the packet takes at most `limit` bytes (the
    /// client's Maximum Packet Size); says whether it was sent.
    pub(super) fn send_within(&mut self, packet: &Packet<'_>, lane: Lane, limit: usize) -> bool {
        if !self.outbox.push(self.version, packet, limit, lane) {
            return false;
        }
        tracing::debug!(target: "mqtt_broker::packets", "{} <- {}", self.client_id, describe(packet));
        self.broker.stats.messages_sent.inc();
        true
    }

    /// Sends a PUBLISH whose large payload is written from the message
    /// (see `splice`): the header goes into the write buffer, the payload
    /// is queued after it. Says whether it was within the client's Maximum
    /// Packet Size.
    pub(super) fn send_spliced(&mut self, publish: Publish<'_>, payload: &Bytes) -> bool {
        let mut head = BytesMut::new();
        let headless = Packet::Publish(Publish {
            payload: &[],
            ..publish
        });
        if push_packet(&mut head, self.version, &headless, usize::MAX).is_err() {
            return false;
        }
        let limit = self.client_max_packet as usize;
        let out = &mut self.outbox.buf;
        if crate::splice::put_header(out, &head, payload.len(), limit).is_none() {
            return false;
        }
        self.outbox.spliced.push(out.len(), payload.clone());
        tracing::debug!(target: "mqtt_broker::packets", "{} <- {}", self.client_id, describe(&Packet::Publish(publish)));
        self.broker.stats.messages_sent.inc();
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Room for a queue drain is made at once, at most up to the high
    /// water mark, never for messages that are spliced, and not kept when
    /// nothing was written into it.
    #[test]
    fn room_for_a_drain_is_bounded_and_given_back() {
        let mut o = Outbox::new(false, BytesMut::new());
        o.reserve_for(10, 1000);
        assert!(o.buf.capacity() >= 1090);
        o.give_back_if_empty();
        assert_eq!(o.buf.capacity(), 0);

        o.reserve_for(1_000_000, 64_000_000);
        assert!(o.buf.capacity() <= WRITE_HIGH_WATER, "{}", o.buf.capacity());
        o.give_back_if_empty();

        o.reserve_for(2, 2 * SPLICE_MIN);
        o.reserve_for(0, 0);
        assert_eq!(o.buf.capacity(), 0);
    }
}
