//! Packet identifier allocation: a new SUBSCRIBE, UNSUBSCRIBE or QoS 1/2
//! PUBLISH takes an identifier that is not in use
//! [MQTT-5: 2.2.1-3] ([MQTT-3.1.1: 2.3.1-2]), and never 0 (MQTT 5.0
//! section 2.2.1).

use mqtt_codec::Pid;

/// Hands out packet identifiers in turn (1, 2, ..., 65535, 1, ...),
/// skipping those the caller says are still in use. In turn rather than
/// lowest-free, so a late acknowledgement of an old exchange is unlikely
/// to meet a new exchange under the same identifier.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PidAllocator {
    last: u16,
}

impl PidAllocator {
    /// An allocator whose first identifier is 1.
    pub const fn new() -> Self {
        PidAllocator { last: 0 }
    }

    /// The next identifier after the last one given for which `in_use` is
    /// false; `None` when all 65,535 are in use.
    pub fn next(&mut self, mut in_use: impl FnMut(u16) -> bool) -> Option<Pid> {
        for _ in 0..u16::MAX {
            self.last = self.last.wrapping_add(1).max(1);
            if !in_use(self.last) {
                return Pid::new(self.last);
            }
        }
        None
    }

    /// The last identifier given (0 before the first).
    pub fn last(&self) -> u16 {
        self.last
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_start_at_one_and_go_in_turn() {
        let mut a = PidAllocator::new();
        assert_eq!(a.next(|_| false).map(Pid::get), Some(1));
        assert_eq!(a.next(|_| false).map(Pid::get), Some(2));
    }

    #[test]
    fn identifier_zero_is_never_given_after_wrapping() {
        // MQTT 5.0 section 2.2.1: a packet identifier is non-zero.
        let mut a = PidAllocator { last: u16::MAX - 1 };
        assert_eq!(a.next(|_| false).map(Pid::get), Some(u16::MAX));
        assert_eq!(a.next(|_| false).map(Pid::get), Some(1));
    }

    #[test]
    fn identifiers_in_use_are_skipped() {
        // [MQTT-5: 2.2.1-3] a new packet takes an unused identifier.
        let mut a = PidAllocator::new();
        assert_eq!(a.next(|p| p <= 3).map(Pid::get), Some(4));
    }

    #[test]
    fn all_identifiers_in_use_gives_none() {
        let mut a = PidAllocator::new();
        assert_eq!(a.next(|_| true), None);
    }
}
