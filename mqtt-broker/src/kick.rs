//! Telling a connection to stop: taken over by a new connection with its
//! client id, or the server shutting down.
//!
//! The session holds the [`Kicker`], the connection the [`Kicked`]. It is
//! tokio's oneshot cut to what a kick needs: every connected client has
//! one, idle ones included, and tokio's is a 64-byte allocation with a
//! sender that an `Option` makes 16 bytes. Here the shared part is an
//! atomic byte and a waker (48 bytes with the `Arc`'s counts), and an
//! `Option<Kicker>` is one pointer.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::task::AtomicWaker;

use crate::session::Kick;

/// Not kicked yet.
const WAITING: u8 = 0;
const TAKEN_OVER: u8 = 1;
const SHUTDOWN: u8 = 2;
/// The kicker was dropped unused (the session has let the connection go).
const DROPPED: u8 = 3;

#[derive(Debug, Default)]
struct Cell {
    state: AtomicU8,
    waker: AtomicWaker,
}

/// Stops one connection, once.
#[derive(Debug)]
pub struct Kicker(Arc<Cell>);

/// What the connection waits on: ready, for good, once it is kicked.
#[derive(Debug)]
pub struct Kicked(Arc<Cell>);

/// The kicker was dropped without a kick, as a oneshot's sender can be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gone;

/// A kicker and the connection's end of it.
pub fn channel() -> (Kicker, Kicked) {
    let cell = Arc::new(Cell::default());
    (Kicker(cell.clone()), Kicked(cell))
}

impl Kicker {
    /// Stops the connection with `kick` (the first kick counts).
    pub fn send(self, kick: Kick) {
        let state = match kick {
            Kick::TakenOver => TAKEN_OVER,
            Kick::Shutdown => SHUTDOWN,
        };
        self.set(state);
        // `Drop` finds the state set and does nothing more.
    }

    fn set(&self, state: u8) {
        // Release: what the kicker did before (a new generation, the
        // shutdown flag) is seen by the connection that reads the kick.
        if self
            .0
            .state
            .compare_exchange(WAITING, state, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            self.0.waker.wake();
        }
    }
}

impl Drop for Kicker {
    fn drop(&mut self) {
        self.set(DROPPED);
    }
}

impl Kicked {
    /// The kick, if there was one.
    fn get(&self) -> Option<Result<Kick, Gone>> {
        match self.0.state.load(Ordering::Acquire) {
            WAITING => None,
            TAKEN_OVER => Some(Ok(Kick::TakenOver)),
            SHUTDOWN => Some(Ok(Kick::Shutdown)),
            _ => Some(Err(Gone)),
        }
    }
}

impl Future for Kicked {
    type Output = Result<Kick, Gone>;

    /// Ready with the kick once there is one, as often as it is polled
    /// (unlike a oneshot, polling again after ready is fine: a parked
    /// connection's waker and its resumed task poll the same one).
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<Kick, Gone>> {
        if let Some(kick) = self.get() {
            return Poll::Ready(kick);
        }
        self.0.waker.register(cx.waker());
        // A kick between the check and the registration woke no one.
        match self.get() {
            Some(kick) => Poll::Ready(kick),
            None => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wakeup::tests::Count;
    use std::sync::atomic::AtomicUsize;
    use std::task::Waker;

    fn poll(kicked: &mut Kicked, count: &Arc<Count>) -> Poll<Result<Kick, Gone>> {
        let waker = Waker::from(count.clone());
        Pin::new(kicked).poll(&mut Context::from_waker(&waker))
    }

    #[test]
    fn a_kick_wakes_the_waiting_connection_once_and_stays() {
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let (kicker, mut kicked) = channel();
        assert_eq!(poll(&mut kicked, &count), Poll::Pending);
        kicker.send(Kick::Shutdown);
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
        assert_eq!(poll(&mut kicked, &count), Poll::Ready(Ok(Kick::Shutdown)));
        assert_eq!(poll(&mut kicked, &count), Poll::Ready(Ok(Kick::Shutdown)));
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn a_dropped_kicker_is_told_apart() {
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let (kicker, mut kicked) = channel();
        assert_eq!(poll(&mut kicked, &count), Poll::Pending);
        drop(kicker);
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
        assert_eq!(poll(&mut kicked, &count), Poll::Ready(Err(Gone)));
    }

    #[test]
    fn a_kick_before_the_wait_is_kept() {
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let (kicker, mut kicked) = channel();
        kicker.send(Kick::TakenOver);
        assert_eq!(poll(&mut kicked, &count), Poll::Ready(Ok(Kick::TakenOver)));
        assert_eq!(count.0.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn the_session_keeps_a_kicker_in_one_pointer() {
        assert_eq!(std::mem::size_of::<Option<Kicker>>(), 8);
        // With the `Arc`'s two counts: mimalloc's 48-byte class.
        assert!(std::mem::size_of::<Cell>() + 16 <= 48);
    }
}
