//! The broker's clock: every reading of the time that decides something
//! (keep alive, message expiry, the publish-rate window, will and expiry
//! times) goes through [`now`].
//!
//! It reads tokio's clock, as a `std::time::Instant`: the same as
//! `Instant::now()` in a running broker, but under tokio's paused time
//! (`#[tokio::test(start_paused = true)]`) it is the test's virtual clock,
//! which the broker's timers (`tokio::time::sleep`) already follow. So a
//! test of keep alive, will delay or expiry advances time instead of
//! sleeping for it, and cannot fail on a busy machine.
//!
//! The wall clock, [`unix_ms`], is what is stored and compared across a
//! restart (when a message was received, when a session's client left).
//! A test of what expires while the broker is down starts the broker
//! process again with `MQTT_BROKER_TEST_CLOCK_SKEW_MS` set, so that the
//! downtime has passed without waiting for it (`tests/durability.rs`). It
//! is read once, is not a setting, and is never set in production.

use std::sync::OnceLock;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// The current time, as tokio's clock has it.
pub(crate) fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

/// The test-only variable that moves the wall clock forward (see above).
const SKEW_VAR: &str = "MQTT_BROKER_TEST_CLOCK_SKEW_MS";

/// The current Unix time in milliseconds (moved forward by
/// `MQTT_BROKER_TEST_CLOCK_SKEW_MS` in tests of downtime).
pub(crate) fn unix_ms() -> u64 {
    static SKEW: OnceLock<u64> = OnceLock::new();
    let skew = *SKEW.get_or_init(|| {
        std::env::var(SKEW_VAR)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    });
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
        .saturating_add(skew)
}
