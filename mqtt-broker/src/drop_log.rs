//! Warnings for dropped messages, rate-limited per reason.
//!
//! Every message the broker drops (queue full, offline QoS 0, expired, too
//! large for the receiver's Maximum Packet Size [MQTT-3.1.2-25]) is counted
//! in `stats.rs` and reported here as a `WARN` line naming the client, the
//! topic and the reason. A flood of drops must not fill the disk, so each
//! reason has a window of `drop_warning_interval_secs`: the first
//! `drop_warnings_per_interval` drops in it are logged one by one, the rest
//! only counted, and the count is logged as one summary line ("N more
//! drops ... in the last T s") when the window ends: at the next drop of that
//! reason, or at the periodic [`DropLog::flush`], whichever comes first.
//!
//! The decision takes the time as an argument, so its rules are tested on
//! a clock the test controls.

use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::sync::watch;

use crate::broker::BrokerState;

/// Why a message was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// The session's queue was at `max_queued_messages` / `max_queued_bytes`.
    QueueFull,
    /// A QoS 0 message for an offline session (`queue_qos0_messages` off).
    OfflineQos0,
    /// Its Message Expiry Interval ran out before delivery.
    Expired,
    /// Larger than the receiving client's Maximum Packet Size.
    TooLarge,
}

impl DropReason {
    const ALL: [DropReason; 4] = [
        DropReason::QueueFull,
        DropReason::OfflineQos0,
        DropReason::Expired,
        DropReason::TooLarge,
    ];

    /// The words the log line uses.
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::QueueFull => "queue full",
            DropReason::OfflineQos0 => "QoS 0 message for an offline session",
            DropReason::Expired => "message expired",
            DropReason::TooLarge => "larger than the client's maximum packet size",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// What to log for one drop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// A window that ended had this many drops that were not logged one by
    /// one: log a summary first.
    pub summary: Option<Summary>,
    /// Log this drop on its own line.
    pub log_this: bool,
}

/// Drops of one reason not logged one by one during one window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    /// The reason.
    pub reason: DropReason,
    /// How many were not logged.
    pub suppressed: u64,
    /// How long the window lasted.
    pub window: Duration,
}

#[derive(Debug, Default)]
struct Window {
    start: Option<Instant>,
    logged: u32,
    suppressed: u64,
}

impl Window {
    /// Closes the window if it has run for `interval`; returns its summary.
    fn roll(&mut self, reason: DropReason, now: Instant, interval: Duration) -> Option<Summary> {
        let start = self.start?;
        let elapsed = now.saturating_duration_since(start);
        if elapsed < interval {
            return None;
        }
        let summary = (self.suppressed > 0).then_some(Summary {
            reason,
            suppressed: self.suppressed,
            window: elapsed,
        });
        *self = Window::default();
        summary
    }
}

/// The per-reason windows.
#[derive(Debug)]
pub struct DropLog {
    burst: u32,
    interval: Duration,
    windows: [Mutex<Window>; 4],
}

impl DropLog {
    /// At most `burst` lines per reason per `interval`, plus one summary.
    pub fn new(burst: u32, interval: Duration) -> DropLog {
        DropLog {
            burst,
            // A zero interval would make the flush timer spin.
            interval: interval.max(Duration::from_secs(1)),
            windows: Default::default(),
        }
    }

    /// Decides what one drop at `now` logs.
    pub fn decide(&self, reason: DropReason, now: Instant) -> Decision {
        let mut w = self.windows[reason.index()].lock();
        let summary = w.roll(reason, now, self.interval);
        if w.start.is_none() {
            w.start = Some(now);
        }
        let log_this = w.logged < self.burst;
        if log_this {
            w.logged += 1;
        } else {
            w.suppressed += 1;
        }
        Decision { summary, log_this }
    }

    /// Summaries of windows that have ended by `now`, so a flood that
    /// stopped is still reported.
    pub fn due(&self, now: Instant) -> Vec<Summary> {
        DropReason::ALL
            .iter()
            .filter_map(|&r| self.windows[r.index()].lock().roll(r, now, self.interval))
            .collect()
    }

    /// Counts one drop and writes what [`DropLog::decide`] says.
    pub fn record(&self, reason: DropReason, client: &str, topic: &str) {
        let d = self.decide(reason, Instant::now());
        if let Some(s) = d.summary {
            log_summary(s);
        }
        if d.log_this {
            tracing::warn!(client, topic, reason = reason.as_str(), "message dropped");
        }
    }

    /// Writes the summaries that are due (called periodically).
    pub fn flush(&self) {
        for s in self.due(Instant::now()) {
            log_summary(s);
        }
    }

    /// How often [`DropLog::flush`] should run.
    pub fn interval(&self) -> Duration {
        self.interval
    }
}

/// Writes due summaries once per window until shutdown.
pub(crate) async fn run(broker: Arc<BrokerState>, mut shutdown: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(broker.drops.interval());
    loop {
        tokio::select! {
            _ = tick.tick() => broker.drops.flush(),
            _ = shutdown.changed() => return,
        }
    }
}

fn log_summary(s: Summary) {
    tracing::warn!(
        reason = s.reason.as_str(),
        "{} more drops ({}) in the last {} s",
        s.suppressed,
        s.reason.as_str(),
        s.window.as_secs()
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: Duration = Duration::from_secs(1);

    /// The first `burst` drops of a reason in a window are logged, the rest
    /// are counted and reported as one summary when the window ends.
    #[test]
    fn first_burst_logged_then_one_summary() {
        let log = DropLog::new(3, 10 * SEC);
        let t0 = Instant::now();
        let logged: Vec<bool> = (0..100)
            .map(|i| log.decide(DropReason::QueueFull, t0 + i * SEC / 100))
            .map(|d| {
                assert_eq!(d.summary, None);
                d.log_this
            })
            .collect();
        assert_eq!(logged.iter().filter(|l| **l).count(), 3);
        assert!(logged[..3].iter().all(|l| *l));
        // Not due before the window ends, due once after it.
        assert!(log.due(t0 + 9 * SEC).is_empty());
        let due = log.due(t0 + 10 * SEC);
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].suppressed, 97);
        assert_eq!(due[0].reason, DropReason::QueueFull);
        assert!(log.due(t0 + 20 * SEC).is_empty());
    }

    /// A drop after the window ended reports the summary itself and opens a
    /// new window, whose first drops are logged again.
    #[test]
    fn next_drop_after_window_reports_summary_and_logs_again() {
        let log = DropLog::new(1, 10 * SEC);
        let t0 = Instant::now();
        assert!(log.decide(DropReason::Expired, t0).log_this);
        assert!(!log.decide(DropReason::Expired, t0 + SEC).log_this);
        assert!(!log.decide(DropReason::Expired, t0 + 2 * SEC).log_this);
        let d = log.decide(DropReason::Expired, t0 + 11 * SEC);
        assert!(d.log_this);
        let s = d.summary.expect("summary of the first window");
        assert_eq!((s.suppressed, s.window), (2, 11 * SEC));
    }

    /// Reasons have separate windows: a flood of one does not silence
    /// another.
    #[test]
    fn reasons_are_limited_separately() {
        let log = DropLog::new(2, 10 * SEC);
        let t0 = Instant::now();
        for _ in 0..50 {
            log.decide(DropReason::QueueFull, t0);
        }
        assert!(log.decide(DropReason::TooLarge, t0).log_this);
        assert!(log.decide(DropReason::OfflineQos0, t0).log_this);
    }

    /// A window with no suppressed drops ends without a summary line.
    #[test]
    fn no_summary_when_nothing_was_suppressed() {
        let log = DropLog::new(5, 10 * SEC);
        let t0 = Instant::now();
        log.decide(DropReason::QueueFull, t0);
        assert!(log.due(t0 + 30 * SEC).is_empty());
        assert_eq!(
            log.decide(DropReason::QueueFull, t0 + 31 * SEC).summary,
            None
        );
    }
}
