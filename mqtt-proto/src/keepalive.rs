//! Keep alive (MQTT 5.0 section 3.1.2.10; 3.1.1 section 3.1.2.10).
//!
//! The server closes a connection it has heard nothing from for one and a
//! half times the Keep Alive [MQTT-3.1.1/5: 3.1.2-24]. The client sends
//! PINGREQ when it has sent nothing for the Keep Alive
//! [MQTT-3.1.1: 3.1.2-23] ([MQTT-5: 3.1.2-22]), and gives the connection up
//! when the PINGRESP does not come within another Keep Alive (the
//! specification leaves "a reasonable amount of time" to the client).

use core::time::Duration;

use crate::time::Instant;

/// The server's side: a Keep Alive that is not 0, in seconds (two bytes,
/// not a `Duration`: it lives as long as the connection).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeepAliveTimeout(u16);

impl KeepAliveTimeout {
    /// For a negotiated Keep Alive in seconds; `None` for 0 (off).
    pub fn new(keep_alive_secs: u16) -> Option<Self> {
        (keep_alive_secs > 0).then_some(KeepAliveTimeout(keep_alive_secs))
    }

    /// The Keep Alive in seconds.
    pub fn secs(self) -> u16 {
        self.0
    }

    /// One and a half times the Keep Alive.
    pub fn timeout(self) -> Duration {
        Duration::from_millis(u64::from(self.0) * 1500)
    }

    /// When the connection times out if nothing arrives after `last_rx`.
    pub fn deadline<I: Instant>(self, last_rx: I) -> I {
        last_rx + self.timeout()
    }

    /// Whether, at `now`, the client has been silent too long.
    pub fn expired<I: Instant>(self, last_rx: I, now: I) -> bool {
        now >= self.deadline(last_rx)
    }
}

/// What the client's ping schedule asks for at a deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PingAction {
    /// Nothing yet (woken early).
    Wait,
    /// Send PINGREQ now.
    SendPing,
    /// A PINGREQ went unanswered for a whole Keep Alive: the connection
    /// is dead.
    Dead,
}

/// The client's side: when to send PINGREQ, and when an unanswered one
/// means the connection is gone.
#[derive(Debug, Clone, Copy)]
pub struct PingSchedule<I> {
    keep_alive: Duration,
    last_tx: I,
    ping_sent: Option<I>,
}

impl<I: Instant> PingSchedule<I> {
    /// For the Keep Alive in force (the server's Server Keep Alive if it
    /// sent one); a zero Keep Alive never pings. `now` is when the
    /// connection was made.
    pub fn new(keep_alive: Duration, now: I) -> Self {
        PingSchedule {
            keep_alive,
            last_tx: now,
            ping_sent: None,
        }
    }

    /// Bytes were written at `now`.
    pub fn on_sent(&mut self, now: I) {
        self.last_tx = now;
    }

    /// Bytes arrived: the server is alive, whatever they were.
    pub fn on_received(&mut self) {
        self.ping_sent = None;
    }

    /// Whether a PINGREQ awaits its answer.
    pub fn awaiting_pingresp(&self) -> bool {
        self.ping_sent.is_some()
    }

    /// When [`handle_timeout`](Self::handle_timeout) is due next; `None`
    /// with keep alive off.
    pub fn poll_timeout(&self) -> Option<I> {
        if self.keep_alive.is_zero() {
            return None;
        }
        Some(match self.ping_sent {
            Some(t) => t + self.keep_alive,
            None => self.last_tx + self.keep_alive,
        })
    }

    /// What to do at `now`.
    pub fn handle_timeout(&mut self, now: I) -> PingAction {
        match self.poll_timeout() {
            Some(at) if now >= at => {
                if self.ping_sent.is_some() {
                    PingAction::Dead
                } else {
                    self.ping_sent = Some(now);
                    PingAction::SendPing
                }
            }
            _ => PingAction::Wait,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Millis;

    #[test]
    fn keep_alive_zero_is_off() {
        assert_eq!(KeepAliveTimeout::new(0), None);
        let p = PingSchedule::new(Duration::ZERO, Millis(0));
        assert_eq!(p.poll_timeout(), None);
    }

    #[test]
    fn server_times_out_at_one_and_a_half_keep_alive() {
        // [MQTT-3.1.1/5: 3.1.2-24]
        let k = KeepAliveTimeout::new(10).unwrap();
        assert_eq!(k.deadline(Millis(1_000)), Millis(16_000));
        assert!(!k.expired(Millis(1_000), Millis(15_999)));
        assert!(k.expired(Millis(1_000), Millis(16_000)));
    }

    #[test]
    fn server_deadline_moves_with_each_arrival() {
        let k = KeepAliveTimeout::new(2).unwrap();
        // Heard at 2.9 s: the 3 s deadline from 0 is now 5.9 s.
        assert!(!k.expired(Millis(2_900), Millis(3_000)));
        assert!(k.expired(Millis(2_900), Millis(5_900)));
    }

    #[test]
    fn largest_keep_alive_does_not_overflow() {
        let k = KeepAliveTimeout::new(u16::MAX).unwrap();
        assert_eq!(k.deadline(Millis(0)), Millis(u64::from(u16::MAX) * 1500));
    }

    #[test]
    fn client_pings_after_keep_alive_without_sending() {
        // [MQTT-3.1.1: 3.1.2-23] / [MQTT-5: 3.1.2-22]
        let mut p = PingSchedule::new(Duration::from_secs(5), Millis(0));
        assert_eq!(p.poll_timeout(), Some(Millis(5_000)));
        assert_eq!(p.handle_timeout(Millis(4_999)), PingAction::Wait);
        assert_eq!(p.handle_timeout(Millis(5_000)), PingAction::SendPing);
        assert!(p.awaiting_pingresp());
    }

    #[test]
    fn client_sending_moves_the_ping() {
        let mut p = PingSchedule::new(Duration::from_secs(5), Millis(0));
        p.on_sent(Millis(3_000));
        assert_eq!(p.poll_timeout(), Some(Millis(8_000)));
        assert_eq!(p.handle_timeout(Millis(5_000)), PingAction::Wait);
    }

    #[test]
    fn unanswered_ping_for_a_keep_alive_is_a_dead_connection() {
        let mut p = PingSchedule::new(Duration::from_secs(5), Millis(0));
        assert_eq!(p.handle_timeout(Millis(5_000)), PingAction::SendPing);
        p.on_sent(Millis(5_001));
        assert_eq!(p.poll_timeout(), Some(Millis(10_000)));
        assert_eq!(p.handle_timeout(Millis(9_999)), PingAction::Wait);
        assert_eq!(p.handle_timeout(Millis(10_000)), PingAction::Dead);
    }

    #[test]
    fn any_arrival_answers_the_ping() {
        let mut p = PingSchedule::new(Duration::from_secs(5), Millis(0));
        assert_eq!(p.handle_timeout(Millis(5_000)), PingAction::SendPing);
        p.on_sent(Millis(5_000));
        p.on_received();
        assert!(!p.awaiting_pingresp());
        assert_eq!(p.poll_timeout(), Some(Millis(10_000)));
        assert_eq!(p.handle_timeout(Millis(10_000)), PingAction::SendPing);
    }
}
