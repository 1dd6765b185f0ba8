//! Outgoing QoS 1 and QoS 2 flows (MQTT 5.0 sections 4.3.2, 4.3.3, 4.4,
//! 4.9): the state of each message sent and not yet acknowledged, which
//! reply is legal in which state, the inflight window, and the resend with
//! DUP when a session resumes [MQTT-3.1.1/5: 4.4.0-1].
//!
//! [`OutState::on_reply`] is the transition table on its own;
//! [`Inflight`] is the table with the messages, generic over what the
//! caller keeps with each one: the client's completion handle, the
//! broker's `Delivery` (inside the session, under its lock, beside the
//! store's state). Both peers' windows, legal replies and DUP resends are
//! this one type.

use alloc::collections::VecDeque;

use mqtt_codec::{Pid, QoS, ReasonCode};

/// Where an outgoing QoS 1/2 message stands: the acknowledgement it awaits.
// The variants name the packet awaited, as the specification does.
#[allow(clippy::enum_variant_names)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OutState {
    /// QoS 1 PUBLISH sent, PUBACK awaited.
    AwaitPubAck,
    /// QoS 2 PUBLISH sent, PUBREC awaited.
    AwaitPubRec,
    /// PUBREL sent, PUBCOMP awaited.
    AwaitPubComp,
}

/// An acknowledgement of an outgoing message, with its reason code
/// (Success for 3.1.1, which has none).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    /// PUBACK: the end of a QoS 1 exchange.
    PubAck(ReasonCode),
    /// PUBREC: the receiver has a QoS 2 message (or, with an error code,
    /// refused it).
    PubRec(ReasonCode),
    /// PUBCOMP: the end of a QoS 2 exchange.
    PubComp(ReasonCode),
}

/// What a reply does to the message its packet identifier names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// The exchange is over: forget the message. PUBACK, PUBCOMP, or a
    /// PUBREC with an error code (MQTT 5.0 section 4.3.3: no PUBREL follows).
    Done,
    /// PUBREC accepted the message: it now awaits PUBCOMP; send PUBREL.
    Release,
    /// A PUBREC for a message already released (ours crossed one the
    /// receiver resent): send PUBREL again, nothing changes.
    ReleaseAgain,
    /// A PUBREC for an identifier that awaits none (no message, or a QoS 1
    /// message): send PUBREL with 0x92 Packet Identifier not found and
    /// change nothing (MQTT 5.0 section 4.3.3).
    ReleaseNotFound,
    /// A PUBACK or PUBCOMP that matches no message in the state that
    /// awaits it (a late duplicate, or a peer's mistake): nothing happens.
    Ignore,
}

impl OutState {
    /// The state a QoS 1 or 2 PUBLISH starts in; `None` for QoS 0, which
    /// has no flow.
    pub fn after_publish(qos: QoS) -> Option<OutState> {
        match qos {
            QoS::AtMostOnce => None,
            QoS::AtLeastOnce => Some(OutState::AwaitPubAck),
            QoS::ExactlyOnce => Some(OutState::AwaitPubRec),
        }
    }

    /// The transition table: what `reply` does to a message in `state`
    /// (`None`: no message has this packet identifier).
    pub fn on_reply(state: Option<OutState>, reply: Reply) -> Transition {
        use OutState::*;
        match (state, reply) {
            (Some(AwaitPubAck), Reply::PubAck(_)) => Transition::Done,
            (Some(AwaitPubRec), Reply::PubRec(r)) if r.is_error() => Transition::Done,
            (Some(AwaitPubRec), Reply::PubRec(_)) => Transition::Release,
            (Some(AwaitPubComp), Reply::PubRec(_)) => Transition::ReleaseAgain,
            (_, Reply::PubRec(_)) => Transition::ReleaseNotFound,
            (Some(AwaitPubComp), Reply::PubComp(_)) => Transition::Done,
            (_, Reply::PubAck(_) | Reply::PubComp(_)) => Transition::Ignore,
        }
    }

    /// What is sent again for a message in this state when the session
    /// resumes: the PUBLISH (with DUP), or the PUBREL [MQTT-3.1.1/5: 4.4.0-1].
    pub fn resends_publish(self) -> bool {
        self != OutState::AwaitPubComp
    }
}

/// One message in flight.
#[derive(Debug, Clone)]
pub struct InflightEntry<T> {
    /// Its packet identifier.
    pub pid: Pid,
    /// The acknowledgement it awaits.
    pub state: OutState,
    /// The reason code of the PUBREC that released it (QoS 2): where the
    /// receiver tells the outcome; PUBCOMP only closes the exchange.
    pub rec_reason: ReasonCode,
    /// Owed to the peer again after a reconnection, but not sent yet: the
    /// peer's Receive Maximum holds it back [MQTT-5: 3.3.4-9].
    pub unsent: bool,
    /// The caller's message.
    pub item: T,
}

impl<T> InflightEntry<T> {
    /// What is sent again for this message on resume: the PUBLISH (with
    /// DUP) or the PUBREL [MQTT-3.1.1/5: 4.4.0-1].
    pub fn resend(&self) -> Resend<'_, T> {
        if self.state.resends_publish() {
            Resend::Publish(self.pid, &self.item)
        } else {
            Resend::PubRel(self.pid)
        }
    }
}

/// What a reply did, for [`Inflight::on_reply`].
#[derive(Debug)]
pub enum Outcome<T> {
    /// The exchange is over; the message leaves the window. `reason` is
    /// the outcome the peer told: the PUBACK's, the PUBREC's (for QoS 2:
    /// an error PUBREC, or the PUBREC before a PUBCOMP that says Success
    /// or Packet Identifier not found, which answers a PUBREL the peer had
    /// already completed before a reconnection).
    Completed {
        /// The message.
        item: T,
        /// The outcome the peer reported.
        reason: ReasonCode,
    },
    /// PUBREC accepted the message: the message at `index` (for
    /// [`Inflight::get`], until the window changes next) now awaits
    /// PUBCOMP; send PUBREL with Success. (A broker stores the new state.)
    Released {
        /// The message's packet identifier.
        pid: Pid,
        /// Where the message is in the window.
        index: usize,
    },
    /// Send PUBREL with this reason code (Success, or 0x92 for an
    /// identifier that awaits no PUBREC); nothing changed.
    SendPubRel(Pid, ReasonCode),
    /// Nothing to do.
    Ignored,
}

/// What to send again after a reconnection, from [`Inflight::next_resend`].
#[derive(Debug)]
pub enum Resend<'a, T> {
    /// The PUBLISH again, with DUP set, under the same identifier.
    Publish(Pid, &'a T),
    /// The PUBREL again.
    PubRel(Pid),
}

/// The outgoing QoS 1/2 messages awaiting acknowledgement, in send order.
#[derive(Debug, Clone)]
pub struct Inflight<T> {
    entries: VecDeque<InflightEntry<T>>,
    // The two counters are u32, not usize: every session of the broker
    // holds a window, and 8 bytes less kept an idle session in a smaller
    // allocation class (a window is at most 65,535 messages).
    unsent: u32,
    /// No entry before this index is owed again: resends go front to
    /// back, so each looks only past the last one (a resume of a window
    /// of thousands stays linear).
    resend_from: u32,
}

impl<T> Default for Inflight<T> {
    fn default() -> Self {
        Inflight {
            entries: VecDeque::new(),
            unsent: 0,
            resend_from: 0,
        }
    }
}

impl<T> Inflight<T> {
    /// An empty window.
    pub fn new() -> Self {
        Self::default()
    }

    /// Messages in flight (sent or owed again).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is in flight.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether `pid` is in use by a message in flight.
    pub fn contains(&self, pid: u16) -> bool {
        self.entries.iter().any(|e| e.pid.get() == pid)
    }

    /// The messages, oldest first.
    pub fn iter(&self) -> impl Iterator<Item = &InflightEntry<T>> {
        self.entries.iter()
    }

    /// Whether another message may be sent now: fewer than `window`
    /// messages are out (those owed again but held back do not count, as
    /// the peer has not seen them on this connection) [MQTT-5: 3.3.4-7].
    pub fn has_room(&self, window: usize) -> bool {
        self.entries.len() - (self.unsent as usize) < window
    }

    /// Records a QoS 1/2 PUBLISH just sent under `pid`. A QoS 0 message
    /// has no flow and is handed back.
    pub fn push(&mut self, pid: Pid, qos: QoS, item: T) -> Result<(), T> {
        let Some(state) = OutState::after_publish(qos) else {
            return Err(item);
        };
        self.entries.push_back(InflightEntry {
            pid,
            state,
            rec_reason: ReasonCode::Success,
            unsent: false,
            item,
        });
        Ok(())
    }

    /// Puts back a message that was in flight before a restart (read from
    /// a store), in the state it had reached; it is owed again like the
    /// others once [`resume`](Self::resume) is called.
    pub fn restore(&mut self, pid: Pid, state: OutState, item: T) {
        self.entries.push_back(InflightEntry {
            pid,
            state,
            rec_reason: ReasonCode::Success,
            unsent: false,
            item,
        });
    }

    /// The message at `index` (oldest first), as [`Outcome::Released`]
    /// and [`next_resend_index`](Self::next_resend_index) name it.
    pub fn get(&self, index: usize) -> Option<&InflightEntry<T>> {
        self.entries.get(index)
    }

    /// Takes the message at `index` out of the window (one that cannot be
    /// sent again: the peer no longer accepts it).
    pub fn remove(&mut self, index: usize) -> Option<InflightEntry<T>> {
        let e = self.entries.remove(index)?;
        if e.unsent {
            self.unsent -= 1;
        }
        if index < (self.resend_from as usize) {
            self.resend_from -= 1;
        }
        Some(e)
    }

    /// Messages owed again after [`resume`](Self::resume) and not sent yet.
    pub fn unsent(&self) -> usize {
        self.unsent as usize
    }

    /// Applies an acknowledgement from the peer.
    pub fn on_reply(&mut self, pid: Pid, reply: Reply) -> Outcome<T> {
        // Acknowledgements mostly come in order: the match is near the front.
        let pos = self.entries.iter().position(|e| e.pid == pid);
        let state = pos.map(|i| self.entries[i].state);
        match (OutState::on_reply(state, reply), pos) {
            (Transition::Done, Some(i)) => {
                let Some(e) = self.remove(i) else {
                    return Outcome::Ignored;
                };
                let reason = match reply {
                    Reply::PubComp(ReasonCode::Success | ReasonCode::PacketIdentifierNotFound) => {
                        e.rec_reason
                    }
                    Reply::PubAck(r) | Reply::PubRec(r) | Reply::PubComp(r) => r,
                };
                Outcome::Completed {
                    item: e.item,
                    reason,
                }
            }
            (Transition::Release, Some(i)) => {
                let e = &mut self.entries[i];
                e.state = OutState::AwaitPubComp;
                if let Reply::PubRec(r) = reply {
                    e.rec_reason = r;
                }
                Outcome::Released { pid, index: i }
            }
            (Transition::ReleaseAgain, _) => Outcome::SendPubRel(pid, ReasonCode::Success),
            (Transition::ReleaseNotFound, _) => {
                Outcome::SendPubRel(pid, ReasonCode::PacketIdentifierNotFound)
            }
            _ => Outcome::Ignored,
        }
    }

    /// After a reconnection: everything in flight is owed to the peer again
    /// [MQTT-3.1.1/5: 4.4.0-1]. When the peer has no session (Session
    /// Present 0), the exchanges whose PUBREC arrived are complete (the
    /// peer had the message) and are handed back with their PUBREC's
    /// reason; the others are sent again as they were.
    pub fn resume(&mut self, session_present: bool) -> impl Iterator<Item = (T, ReasonCode)> {
        let mut done = VecDeque::new();
        if !session_present {
            let mut kept = VecDeque::with_capacity(self.entries.len());
            for e in self.entries.drain(..) {
                if e.state == OutState::AwaitPubComp {
                    done.push_back((e.item, e.rec_reason));
                } else {
                    kept.push_back(e);
                }
            }
            self.entries = kept;
        }
        for e in self.entries.iter_mut() {
            e.unsent = true;
        }
        self.unsent = u32::try_from(self.entries.len()).unwrap_or(u32::MAX);
        self.resend_from = 0;
        done.into_iter()
    }

    /// The next packet owed again after [`resume`](Self::resume), if the
    /// window (the peer's Receive Maximum) has room for it; marks it sent.
    /// Call until `None`, and again when acknowledgements free the window.
    pub fn next_resend(&mut self, window: usize) -> Option<Resend<'_, T>> {
        let i = self.next_resend_index(window)?;
        self.entries.get(i).map(InflightEntry::resend)
    }

    /// As [`next_resend`](Self::next_resend), but names the message by its
    /// place (for [`get`](Self::get) and [`remove`](Self::remove)), for a
    /// caller that needs the rest of its state beside the message while
    /// it writes it.
    pub fn next_resend_index(&mut self, window: usize) -> Option<usize> {
        if self.unsent == 0 || !self.has_room(window) {
            return None;
        }
        let from = self.resend_from as usize;
        let i = from + self.entries.range(from..).position(|e| e.unsent)?;
        self.entries[i].unsent = false;
        self.unsent -= 1;
        self.resend_from = (i + 1) as u32;
        Some(i)
    }

    /// Takes every message out (the connection is given up for good).
    pub fn drain(&mut self) -> impl Iterator<Item = InflightEntry<T>> + '_ {
        self.unsent = 0;
        self.resend_from = 0;
        self.entries.drain(..)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use OutState::*;

    const OK: ReasonCode = ReasonCode::Success;

    fn pid(n: u16) -> Pid {
        Pid::new(n).unwrap()
    }

    #[test]
    fn qos1_starts_awaiting_puback_and_qos2_awaiting_pubrec() {
        // MQTT 5.0 sections 4.3.2 and 4.3.3.
        assert_eq!(OutState::after_publish(QoS::AtMostOnce), None);
        assert_eq!(OutState::after_publish(QoS::AtLeastOnce), Some(AwaitPubAck));
        assert_eq!(OutState::after_publish(QoS::ExactlyOnce), Some(AwaitPubRec));
    }

    #[test]
    fn every_reply_in_every_state() {
        // The whole table: MQTT 5.0 sections 4.3.2, 4.3.3.
        let err = ReasonCode::QuotaExceeded;
        let table = [
            (Some(AwaitPubAck), Reply::PubAck(OK), Transition::Done),
            (Some(AwaitPubAck), Reply::PubAck(err), Transition::Done),
            (
                Some(AwaitPubAck),
                Reply::PubRec(OK),
                Transition::ReleaseNotFound,
            ),
            (Some(AwaitPubAck), Reply::PubComp(OK), Transition::Ignore),
            (Some(AwaitPubRec), Reply::PubAck(OK), Transition::Ignore),
            (Some(AwaitPubRec), Reply::PubRec(OK), Transition::Release),
            (
                Some(AwaitPubRec),
                Reply::PubRec(ReasonCode::NoMatchingSubscribers),
                Transition::Release,
            ),
            (Some(AwaitPubRec), Reply::PubRec(err), Transition::Done),
            (Some(AwaitPubRec), Reply::PubComp(OK), Transition::Ignore),
            (Some(AwaitPubComp), Reply::PubAck(OK), Transition::Ignore),
            (
                Some(AwaitPubComp),
                Reply::PubRec(OK),
                Transition::ReleaseAgain,
            ),
            (Some(AwaitPubComp), Reply::PubComp(OK), Transition::Done),
            (None, Reply::PubAck(OK), Transition::Ignore),
            (None, Reply::PubRec(OK), Transition::ReleaseNotFound),
            (None, Reply::PubComp(OK), Transition::Ignore),
        ];
        for (state, reply, want) in table {
            assert_eq!(
                OutState::on_reply(state, reply),
                want,
                "{state:?} {reply:?}"
            );
        }
    }

    #[test]
    fn puback_completes_a_qos1_message_with_its_reason() {
        let mut w = Inflight::new();
        w.push(pid(1), QoS::AtLeastOnce, "a").unwrap();
        match w.on_reply(pid(1), Reply::PubAck(ReasonCode::NoMatchingSubscribers)) {
            Outcome::Completed { item, reason } => {
                assert_eq!(item, "a");
                assert_eq!(reason, ReasonCode::NoMatchingSubscribers);
            }
            o => panic!("{o:?}"),
        }
        assert!(w.is_empty());
    }

    #[test]
    fn qos0_has_no_flow() {
        let mut w = Inflight::new();
        assert_eq!(w.push(pid(1), QoS::AtMostOnce, "a"), Err("a"));
        assert!(w.is_empty());
    }

    #[test]
    fn pubrec_releases_then_pubcomp_completes_with_the_pubrec_reason() {
        // MQTT 5.0 section 4.3.3: the PUBREC tells the outcome.
        let mut w = Inflight::new();
        w.push(pid(7), QoS::ExactlyOnce, "m").unwrap();
        assert!(matches!(
            w.on_reply(pid(7), Reply::PubRec(ReasonCode::NoMatchingSubscribers)),
            Outcome::Released { pid: p, index: 0 } if p == pid(7)
        ));
        assert_eq!(w.iter().next().unwrap().state, AwaitPubComp);
        match w.on_reply(pid(7), Reply::PubComp(OK)) {
            Outcome::Completed { reason, .. } => {
                assert_eq!(reason, ReasonCode::NoMatchingSubscribers)
            }
            o => panic!("{o:?}"),
        }
        assert!(w.is_empty());
    }

    #[test]
    fn pubcomp_not_found_after_reconnect_is_a_delivery() {
        // The peer completed the exchange before the connection was lost,
        // and answers the resent PUBREL with 0x92.
        let mut w = Inflight::new();
        w.push(pid(3), QoS::ExactlyOnce, ()).unwrap();
        let _ = w.on_reply(pid(3), Reply::PubRec(OK));
        match w.on_reply(pid(3), Reply::PubComp(ReasonCode::PacketIdentifierNotFound)) {
            Outcome::Completed { reason, .. } => assert_eq!(reason, OK),
            o => panic!("{o:?}"),
        }
    }

    #[test]
    fn error_pubrec_ends_the_exchange_without_pubrel() {
        // MQTT 5.0 section 4.3.3: a PUBREC with a reason code of 0x80 or
        // more ends the exchange.
        let mut w = Inflight::new();
        w.push(pid(2), QoS::ExactlyOnce, ()).unwrap();
        match w.on_reply(pid(2), Reply::PubRec(ReasonCode::NotAuthorized)) {
            Outcome::Completed { reason, .. } => assert_eq!(reason, ReasonCode::NotAuthorized),
            o => panic!("{o:?}"),
        }
        assert!(w.is_empty());
    }

    #[test]
    fn repeated_pubrec_sends_pubrel_again_and_keeps_the_first_reason() {
        let mut w = Inflight::new();
        w.push(pid(4), QoS::ExactlyOnce, ()).unwrap();
        let _ = w.on_reply(pid(4), Reply::PubRec(ReasonCode::NoMatchingSubscribers));
        assert!(matches!(
            w.on_reply(pid(4), Reply::PubRec(OK)),
            Outcome::SendPubRel(_, OK)
        ));
        assert_eq!(
            w.iter().next().unwrap().rec_reason,
            ReasonCode::NoMatchingSubscribers
        );
    }

    #[test]
    fn pubrec_for_a_qos1_message_is_not_found_and_changes_nothing() {
        let mut w = Inflight::new();
        w.push(pid(5), QoS::AtLeastOnce, ()).unwrap();
        assert!(matches!(
            w.on_reply(pid(5), Reply::PubRec(OK)),
            Outcome::SendPubRel(_, ReasonCode::PacketIdentifierNotFound)
        ));
        assert_eq!(w.iter().next().unwrap().state, AwaitPubAck);
    }

    #[test]
    fn puback_for_a_qos2_message_is_ignored() {
        let mut w = Inflight::new();
        w.push(pid(6), QoS::ExactlyOnce, ()).unwrap();
        assert!(matches!(
            w.on_reply(pid(6), Reply::PubAck(OK)),
            Outcome::Ignored
        ));
        assert!(matches!(
            w.on_reply(pid(6), Reply::PubComp(OK)),
            Outcome::Ignored
        ));
        assert!(matches!(
            w.on_reply(pid(9), Reply::PubAck(OK)),
            Outcome::Ignored
        ));
        assert_eq!(w.len(), 1);
    }

    #[test]
    fn window_counts_messages_out() {
        // [MQTT-5: 3.3.4-7] no more than Receive Maximum QoS 1/2 in flight.
        let mut w = Inflight::new();
        assert!(w.has_room(2));
        w.push(pid(1), QoS::AtLeastOnce, ()).unwrap();
        w.push(pid(2), QoS::AtLeastOnce, ()).unwrap();
        assert!(!w.has_room(2));
        let _ = w.on_reply(pid(1), Reply::PubAck(OK));
        assert!(w.has_room(2));
    }

    #[test]
    fn resume_resends_publishes_and_pubrels_in_order() {
        // [MQTT-3.1.1/5: 4.4.0-1] on resume, every unacknowledged PUBLISH
        // (with DUP) and every PUBREL again.
        let mut w = Inflight::new();
        w.push(pid(1), QoS::AtLeastOnce, 'a').unwrap();
        w.push(pid(2), QoS::ExactlyOnce, 'b').unwrap();
        w.push(pid(3), QoS::ExactlyOnce, 'c').unwrap();
        let _ = w.on_reply(pid(2), Reply::PubRec(OK));
        assert_eq!(w.resume(true).count(), 0);
        assert!(matches!(w.next_resend(10), Some(Resend::Publish(p, 'a')) if p == pid(1)));
        assert!(matches!(w.next_resend(10), Some(Resend::PubRel(p)) if p == pid(2)));
        assert!(matches!(w.next_resend(10), Some(Resend::Publish(p, 'c')) if p == pid(3)));
        assert!(w.next_resend(10).is_none());
    }

    #[test]
    fn resume_is_paced_by_the_window() {
        // [MQTT-5: 3.3.4-9] resent messages count against Receive Maximum.
        let mut w = Inflight::new();
        for n in 1..=3 {
            w.push(pid(n), QoS::AtLeastOnce, n).unwrap();
        }
        let _ = w.resume(true).count();
        assert!(w.has_room(1));
        assert!(w.next_resend(1).is_some());
        assert!(w.next_resend(1).is_none());
        assert!(!w.has_room(1));
        let _ = w.on_reply(pid(1), Reply::PubAck(OK));
        assert!(matches!(w.next_resend(1), Some(Resend::Publish(p, _)) if p == pid(2)));
    }

    #[test]
    fn resume_without_session_completes_released_exchanges() {
        // Session Present 0: the peer's half is gone; a message it PUBREC'd
        // was received, the rest are sent again.
        let mut w = Inflight::new();
        w.push(pid(1), QoS::ExactlyOnce, 'a').unwrap();
        w.push(pid(2), QoS::ExactlyOnce, 'b').unwrap();
        let _ = w.on_reply(pid(1), Reply::PubRec(ReasonCode::NoMatchingSubscribers));
        let done: alloc::vec::Vec<_> = w.resume(false).collect();
        assert_eq!(done, [('a', ReasonCode::NoMatchingSubscribers)]);
        assert!(matches!(w.next_resend(10), Some(Resend::Publish(p, 'b')) if p == pid(2)));
    }

    #[test]
    fn acknowledging_an_unsent_message_keeps_the_count() {
        let mut w = Inflight::new();
        w.push(pid(1), QoS::AtLeastOnce, ()).unwrap();
        w.push(pid(2), QoS::AtLeastOnce, ()).unwrap();
        let _ = w.resume(true).count();
        let _ = w.on_reply(pid(2), Reply::PubAck(OK));
        assert!(matches!(w.next_resend(5), Some(Resend::Publish(p, _)) if p == pid(1)));
        assert!(w.next_resend(5).is_none());
        assert!(w.has_room(2));
    }

    #[test]
    fn restored_messages_resume_in_their_stored_state() {
        // A message read back from a store after a restart is owed again
        // like any other [MQTT-3.1.1/5: 4.4.0-1]: PUBLISH or PUBREL as it stood.
        let mut w = Inflight::new();
        w.restore(pid(8), AwaitPubComp, 'x');
        w.restore(pid(9), AwaitPubAck, 'y');
        assert_eq!(w.resume(true).count(), 0);
        assert!(matches!(w.next_resend(10), Some(Resend::PubRel(p)) if p == pid(8)));
        assert!(matches!(w.next_resend(10), Some(Resend::Publish(p, 'y')) if p == pid(9)));
    }

    #[test]
    fn resend_index_names_the_entry_and_removing_it_keeps_the_count() {
        // A caller that cannot send a message again (the peer's limits
        // changed) takes it out; the window then counts the rest right.
        let mut w = Inflight::new();
        for n in 1..=3 {
            w.push(pid(n), QoS::AtLeastOnce, n).unwrap();
        }
        let _ = w.resume(true).count();
        let i = w.next_resend_index(5).unwrap();
        assert_eq!(w.get(i).unwrap().item, 1);
        assert_eq!(w.unsent(), 2);
        // Removing one still owed keeps the owed count true.
        let gone = w.remove(i + 1).unwrap();
        assert_eq!(gone.item, 2);
        assert_eq!(w.unsent(), 1);
        assert_eq!(w.next_resend_index(5), Some(1));
        assert_eq!(w.next_resend_index(5), None);
        assert!(w.has_room(3));
        assert!(!w.has_room(2));
    }

    #[test]
    fn resends_stay_in_order_when_earlier_messages_leave_meanwhile() {
        // Acknowledgements of messages already sent again arrive between
        // resends: the next resend is still the oldest one owed.
        let mut w = Inflight::new();
        for n in 1..=4 {
            w.push(pid(n), QoS::AtLeastOnce, n).unwrap();
        }
        let _ = w.resume(true).count();
        assert!(matches!(w.next_resend(2), Some(Resend::Publish(_, 1))));
        assert!(matches!(w.next_resend(2), Some(Resend::Publish(_, 2))));
        let _ = w.on_reply(pid(1), Reply::PubAck(OK));
        assert!(matches!(w.next_resend(2), Some(Resend::Publish(_, 3))));
        let _ = w.on_reply(pid(2), Reply::PubAck(OK));
        let _ = w.on_reply(pid(3), Reply::PubAck(OK));
        assert!(matches!(w.next_resend(2), Some(Resend::Publish(_, 4))));
        assert!(w.next_resend(2).is_none());
        // A second resume starts from the front again.
        let _ = w.resume(true).count();
        assert!(matches!(w.next_resend(2), Some(Resend::Publish(_, 4))));
    }
}
