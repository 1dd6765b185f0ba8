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

use std::time::Instant;

/// The current time, as tokio's clock has it.
pub(crate) fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}
