//! Counters the broker keeps, published under `$SYS/broker/` and readable
//! from the library. Relaxed atomics: each is exact on its own, and a
//! snapshot is a consistent-enough view for monitoring.

use std::sync::atomic::{AtomicU64, Ordering};

/// A monotonic counter (or a gauge when decremented).
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds one.
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    /// Adds `n`.
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    /// Subtracts one (gauges only).
    pub fn dec(&self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }

    /// The current value.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Everything the broker counts.
#[derive(Debug, Default)]
pub struct Stats {
    /// Clients connected now.
    pub clients_connected: Counter,
    /// Control packets received.
    pub messages_received: Counter,
    /// Control packets sent.
    pub messages_sent: Counter,
    /// PUBLISH packets received.
    pub publish_received: Counter,
    /// PUBLISH packets sent.
    pub publish_sent: Counter,
    /// Bytes received.
    pub bytes_received: Counter,
    /// Bytes sent.
    pub bytes_sent: Counter,
    /// Messages dropped because a session queue was full.
    pub dropped_queue_full: Counter,
    /// QoS 0 messages not queued for an offline session.
    pub dropped_offline_qos0: Counter,
    /// Messages whose Message Expiry Interval ran out before delivery.
    pub dropped_expired: Counter,
    /// Messages larger than the receiving client's Maximum Packet Size.
    pub dropped_too_large: Counter,
    /// Connections refused for a bad user name or password, or no right.
    pub auth_failures: Counter,
    /// Messages not delivered because the receiver's ACL denies the topic.
    pub acl_denied: Counter,
    /// Connections closed for a protocol violation or malformed packet.
    pub protocol_errors: Counter,
    /// TLS handshakes that failed or did not finish within the connect
    /// timeout.
    pub tls_handshake_failures: Counter,
}

impl Stats {
    /// Every dropped message, whatever the cause.
    pub fn dropped_total(&self) -> u64 {
        self.dropped_queue_full.get()
            + self.dropped_offline_qos0.get()
            + self.dropped_expired.get()
            + self.dropped_too_large.get()
    }
}
