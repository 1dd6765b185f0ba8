//! Incoming QoS 2, "method A" (MQTT 5.0 section 4.3.3, figure 4.3): the
//! message is delivered when its PUBLISH arrives and its packet identifier
//! is remembered until PUBREL, so a duplicate PUBLISH before the PUBREL
//! gets another PUBREC and is not delivered again [MQTT-5: 4.3.3-10]
//! ([MQTT-3.1.1: 4.3.3-2]).

use alloc::vec::Vec;

use mqtt_codec::{Pid, ReasonCode};

/// What an incoming QoS 2 PUBLISH is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Qos2Arrival {
    /// A new message: deliver it, answer PUBREC.
    New,
    /// Its identifier awaits a PUBREL: the peer missed our PUBREC. Answer
    /// PUBREC again; do not deliver it again.
    Duplicate,
}

/// More QoS 2 messages await PUBREL than this side's Receive Maximum
/// allows: 0x93 Receive Maximum exceeded [MQTT-5: 3.3.4-8], and the
/// connection closes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReceiveMaximumExceeded;

impl ReceiveMaximumExceeded {
    /// The DISCONNECT reason code.
    pub fn reason_code(self) -> ReasonCode {
        ReasonCode::ReceiveMaximumExceeded
    }
}

/// Identifiers of incoming QoS 2 messages awaiting PUBREL.
///
/// A sorted vector: the set is at most the Receive Maximum, usually a few
/// entries, and a binary search over them beats hashing (SipHash showed in
/// the broker's profiles).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IncomingQos2 {
    ids: Vec<u16>,
}

impl IncomingQos2 {
    /// An empty set.
    pub const fn new() -> Self {
        IncomingQos2 { ids: Vec::new() }
    }

    /// A QoS 2 PUBLISH under `pid` arrived. New identifiers are remembered
    /// while fewer than `receive_maximum` are; a duplicate is recognised
    /// whatever the count.
    pub fn on_publish(
        &mut self,
        pid: Pid,
        receive_maximum: u16,
    ) -> Result<Qos2Arrival, ReceiveMaximumExceeded> {
        match self.ids.binary_search(&pid.get()) {
            Ok(_) => Ok(Qos2Arrival::Duplicate),
            Err(_) if self.ids.len() >= usize::from(receive_maximum) => Err(ReceiveMaximumExceeded),
            Err(at) => {
                self.ids.insert(at, pid.get());
                Ok(Qos2Arrival::New)
            }
        }
    }

    /// A PUBREL arrived: the exchange ends. The reason code of the PUBCOMP
    /// to answer: Success, or 0x92 Packet Identifier not found for an
    /// identifier that awaited none (MQTT 5.0 section 4.3.3).
    pub fn on_pubrel(&mut self, pid: Pid) -> ReasonCode {
        if self.remove(pid.get()) {
            ReasonCode::Success
        } else {
            ReasonCode::PacketIdentifierNotFound
        }
    }

    /// Remembers an identifier (restored from a store); whether it is new.
    pub fn insert(&mut self, pid: u16) -> bool {
        match self.ids.binary_search(&pid) {
            Ok(_) => false,
            Err(at) => {
                self.ids.insert(at, pid);
                true
            }
        }
    }

    /// Forgets an identifier (a PUBREC with an error code ends the
    /// exchange); whether it was there.
    pub fn remove(&mut self, pid: u16) -> bool {
        match self.ids.binary_search(&pid) {
            Ok(at) => {
                self.ids.remove(at);
                true
            }
            Err(_) => false,
        }
    }

    /// Whether `pid` awaits a PUBREL.
    pub fn contains(&self, pid: u16) -> bool {
        self.ids.binary_search(&pid).is_ok()
    }

    /// How many identifiers await a PUBREL.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether none does.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// The identifiers, in increasing order.
    pub fn iter(&self) -> impl Iterator<Item = u16> + '_ {
        self.ids.iter().copied()
    }

    /// Forgets all (the session ended).
    pub fn clear(&mut self) {
        self.ids = Vec::new();
    }
}

impl FromIterator<u16> for IncomingQos2 {
    fn from_iter<I: IntoIterator<Item = u16>>(iter: I) -> Self {
        let mut ids: Vec<u16> = iter.into_iter().collect();
        ids.sort_unstable();
        ids.dedup();
        IncomingQos2 { ids }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pid(n: u16) -> Pid {
        Pid::new(n).unwrap()
    }

    #[test]
    fn first_publish_is_new_and_a_repeat_before_pubrel_is_a_duplicate() {
        // [MQTT-5: 4.3.3-10] not delivered again before PUBREL.
        let mut s = IncomingQos2::new();
        assert_eq!(s.on_publish(pid(1), 10), Ok(Qos2Arrival::New));
        assert_eq!(s.on_publish(pid(1), 10), Ok(Qos2Arrival::Duplicate));
        assert_eq!(s.len(), 1);
    }

    #[test]
    fn after_pubrel_the_identifier_is_a_new_message() {
        // [MQTT-5: 4.3.3-12] after PUBREL, a PUBLISH with the same
        // identifier is a new message.
        let mut s = IncomingQos2::new();
        let _ = s.on_publish(pid(9), 10);
        assert_eq!(s.on_pubrel(pid(9)), ReasonCode::Success);
        assert_eq!(s.on_publish(pid(9), 10), Ok(Qos2Arrival::New));
    }

    #[test]
    fn pubrel_for_an_unknown_identifier_is_not_found() {
        // MQTT 5.0 section 4.3.3: PUBCOMP 0x92.
        let mut s = IncomingQos2::new();
        assert_eq!(s.on_pubrel(pid(4)), ReasonCode::PacketIdentifierNotFound);
    }

    #[test]
    fn more_than_receive_maximum_awaiting_pubrel_is_refused() {
        // [MQTT-5: 3.3.4-8] 0x93 Receive Maximum exceeded.
        let mut s = IncomingQos2::new();
        assert_eq!(s.on_publish(pid(1), 2), Ok(Qos2Arrival::New));
        assert_eq!(s.on_publish(pid(2), 2), Ok(Qos2Arrival::New));
        assert_eq!(s.on_publish(pid(3), 2), Err(ReceiveMaximumExceeded));
        assert_eq!(
            ReceiveMaximumExceeded.reason_code(),
            ReasonCode::ReceiveMaximumExceeded
        );
        // A duplicate at the limit is still a duplicate.
        assert_eq!(s.on_publish(pid(2), 2), Ok(Qos2Arrival::Duplicate));
    }

    #[test]
    fn restored_identifiers_are_sorted_and_unique() {
        let s: IncomingQos2 = [5, 1, 5, 3].into_iter().collect();
        assert_eq!(s.iter().collect::<Vec<_>>(), [1, 3, 5]);
        assert!(s.contains(3) && !s.contains(2));
    }
}
