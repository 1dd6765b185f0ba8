//! Counters the broker keeps, published under `$SYS/broker/` and readable
//! from the library. Relaxed atomics, sharded per thread: each is exact on
//! its own, and a snapshot is a consistent-enough view for monitoring.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Shards per counter. Every packet bumps several counters; with one atomic
/// each, every core would write the same cache lines for every packet and
/// they would bounce between cores. Each thread adds to its own shard (up
/// to this many threads without sharing) and a read sums them.
const SHARDS: usize = 16;

/// One shard on its own cache line (128 bytes: adjacent-line prefetch
/// pairs lines on x86).
#[derive(Debug, Default)]
#[repr(align(128))]
struct Shard(AtomicU64);

/// Which shards a thread holds alone. The last shard is never claimed: the
/// threads beyond `SHARDS - 1` share it.
static CLAIMED: [AtomicBool; SHARDS - 1] = [const { AtomicBool::new(false) }; SHARDS - 1];

/// A thread's shard: held alone, it is written with a plain load and store
/// (no locked read-modify-write: several of them per delivered message
/// showed as a third of the time spent writing a PUBLISH); shared, with
/// `fetch_add`. A thread that ends gives its shard back, values kept, for
/// the next thread to continue.
struct ShardClaim {
    index: usize,
    alone: bool,
}

impl ShardClaim {
    fn claim() -> ShardClaim {
        for (index, c) in CLAIMED.iter().enumerate() {
            // Acquire: the previous owner's writes happen before ours.
            if c.compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
            {
                return ShardClaim { index, alone: true };
            }
        }
        ShardClaim {
            index: SHARDS - 1,
            alone: false,
        }
    }
}

impl Drop for ShardClaim {
    fn drop(&mut self) {
        if self.alone {
            // Release: our writes happen before the next owner's.
            CLAIMED[self.index].store(false, Ordering::Release);
        }
    }
}

/// This thread's shard and whether it holds it alone. While the thread is
/// being torn down (its claim already given back), the shared shard.
fn my_shard() -> (usize, bool) {
    thread_local! {
        static SHARD: ShardClaim = ShardClaim::claim();
    }
    SHARD
        .try_with(|s| (s.index, s.alone))
        .unwrap_or((SHARDS - 1, false))
}

/// A monotonic counter (or a gauge when decremented).
#[derive(Debug, Default)]
pub struct Counter(Box<[Shard; SHARDS]>);

impl Counter {
    /// Adds one.
    pub fn inc(&self) {
        self.add(1);
    }

    /// Adds `n`.
    pub fn add(&self, n: u64) {
        let (i, alone) = my_shard();
        let shard = &self.0[i].0;
        if alone {
            shard.store(
                shard.load(Ordering::Relaxed).wrapping_add(n),
                Ordering::Relaxed,
            );
        } else {
            shard.fetch_add(n, Ordering::Relaxed);
        }
    }

    /// Subtracts one (gauges only). A shard may wrap below zero when one
    /// thread counts a connection in and another counts it out; the sum
    /// wraps back.
    pub fn dec(&self) {
        let (i, alone) = my_shard();
        let shard = &self.0[i].0;
        if alone {
            shard.store(
                shard.load(Ordering::Relaxed).wrapping_sub(1),
                Ordering::Relaxed,
            );
        } else {
            shard.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// The current value.
    pub fn get(&self) -> u64 {
        self.0
            .iter()
            .fold(0u64, |sum, s| sum.wrapping_add(s.0.load(Ordering::Relaxed)))
    }
}

/// Everything the broker counts.
#[derive(Debug, Default)]
pub struct Stats {
    /// Clients connected now.
    pub clients_connected: Counter,
    /// Of those, idle ones parked without a task (`park_idle_ms`).
    pub connections_parked: Counter,
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
    /// WebSocket upgrade requests refused (no `mqtt` subprotocol, not an
    /// upgrade, too slow, too large) and WebSocket connections closed for a
    /// framing violation (text frame, oversized or malformed frame).
    pub websocket_errors: Counter,
    /// PUBLISH packets received, by QoS (0, 1, 2).
    pub publish_received_by_qos: [Counter; 3],
    /// PUBLISH packets sent, by QoS (0, 1, 2).
    pub publish_sent_by_qos: [Counter; 3],
    /// Payload bytes of PUBLISH packets received, by QoS.
    pub publish_bytes_received_by_qos: [Counter; 3],
    /// Payload bytes of PUBLISH packets sent, by QoS.
    pub publish_bytes_sent_by_qos: [Counter; 3],
    /// Connections accepted since start (for `$SYS/broker/load/connections`).
    pub connections_total: Counter,
    /// Sessions that ended because their expiry interval ran out (also
    /// while the broker was down).
    pub sessions_expired: Counter,
    /// Highest number of clients connected at once.
    pub clients_maximum: std::sync::atomic::AtomicU64,
}

/// Upper bounds (seconds) of the store commit latency histogram: a synced
/// commit costs 0.2 to 7 ms on an SSD, more on an SD card.
pub const SYNC_BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// A latency histogram with fixed buckets ([`SYNC_BUCKETS`]), written by one
/// thread (the store's writer) and read by the metrics endpoint.
#[derive(Debug, Default)]
pub struct Histogram {
    /// Observations at or below each bound (not cumulative).
    buckets: [AtomicU64; SYNC_BUCKETS.len()],
    /// Observations, all of them (the `+Inf` bucket).
    count: AtomicU64,
    /// Sum of observations in nanoseconds.
    sum_nanos: AtomicU64,
}

impl Histogram {
    /// Records one duration.
    pub fn observe(&self, d: std::time::Duration) {
        let secs = d.as_secs_f64();
        if let Some(i) = SYNC_BUCKETS.iter().position(|b| secs <= *b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_nanos
            .fetch_add(d.as_nanos().min(u64::MAX as u128) as u64, Ordering::Relaxed);
    }

    /// Cumulative counts per bound, the total count, and the sum in seconds.
    pub fn snapshot(&self) -> ([u64; SYNC_BUCKETS.len()], u64, f64) {
        let mut cumulative = [0u64; SYNC_BUCKETS.len()];
        let mut running = 0;
        for (c, b) in cumulative.iter_mut().zip(&self.buckets) {
            running += b.load(Ordering::Relaxed);
            *c = running;
        }
        let count = self.count.load(Ordering::Relaxed).max(running);
        let sum = self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        (cumulative, count, sum)
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Counts from many threads add up, and a gauge counted in on one
    /// thread and out on another returns to zero.
    #[test]
    fn shards_sum_across_threads() {
        let c = std::sync::Arc::new(Counter::default());
        let threads: Vec<_> = (0..40)
            .map(|_| {
                let c = c.clone();
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        c.inc();
                    }
                    c.add(5);
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(c.get(), 40 * 1005);

        let gauge = std::sync::Arc::new(Counter::default());
        gauge.inc();
        let g = gauge.clone();
        std::thread::spawn(move || g.dec()).join().unwrap();
        assert_eq!(gauge.get(), 0);
    }

    /// A shard held alone is handed on when its thread ends, count kept:
    /// threads that come and go one after another (a blocking pool) and
    /// more threads alive at once than there are shards both add up exactly.
    #[test]
    fn shards_handed_on_keep_their_counts() {
        let c = std::sync::Arc::new(Counter::default());
        for _ in 0..3 * SHARDS {
            let c = c.clone();
            std::thread::spawn(move || c.add(100)).join().unwrap();
        }
        assert_eq!(c.get(), 3 * SHARDS as u64 * 100);

        let n = 2 * SHARDS;
        let barrier = std::sync::Arc::new(std::sync::Barrier::new(n));
        let threads: Vec<_> = (0..n)
            .map(|_| {
                let (c, barrier) = (c.clone(), barrier.clone());
                std::thread::spawn(move || {
                    // All alive at once: some share the last shard.
                    barrier.wait();
                    for _ in 0..1000 {
                        c.inc();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(c.get(), 3 * SHARDS as u64 * 100 + n as u64 * 1000);
    }
}
