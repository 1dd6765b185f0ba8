//! A session's wake-up for the connection that owns it: a flag set by
//! whoever queues a message and one registered waker.
//!
//! Unlike `tokio::sync::Notify`, whose waiter lives inside the waiting
//! future, the waker here is held by the wake-up itself. So a connection
//! with no task (parked, `connection/park.rs`) can leave a waker of its
//! own here, and a waiting task carries no waiter node in its future.
//! Only one waker is kept: the last to register is the one woken, which
//! is the connection that owns the session now (an old connection being
//! taken over is closing anyway).

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use futures_util::task::AtomicWaker;

#[derive(Debug, Default)]
pub struct Wakeup {
    pending: AtomicBool,
    waker: AtomicWaker,
}

impl Wakeup {
    /// Wakes the registered waker, or the next one to wait, once.
    pub fn notify(&self) {
        // Already pending: the notify that set it wakes (or has woken) the
        // waiter, which has not looked yet. So a burst of messages queued
        // for one connection costs one atomic swap each, not a wake each.
        if !self.pending.swap(true, Ordering::AcqRel) {
            self.waker.wake();
        }
    }

    /// Ready once `notify` has been called since the last time this was
    /// ready; otherwise `cx`'s waker is the one `notify` wakes.
    pub fn poll_notified(&self, cx: &mut Context<'_>) -> Poll<()> {
        if self.pending.swap(false, Ordering::AcqRel) {
            return Poll::Ready(());
        }
        self.waker.register(cx.waker());
        // A notify between the check and the registration woke no one.
        if self.pending.swap(false, Ordering::AcqRel) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }

    /// Waits for `notify`.
    pub fn notified(&self) -> impl Future<Output = ()> + '_ {
        std::future::poll_fn(move |cx| self.poll_notified(cx))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::sync::Arc;
    use std::task::Wake;

    struct Count(AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn a_notify_before_the_wait_is_kept_and_one_after_wakes() {
        let w = Wakeup::default();
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = std::task::Waker::from(count.clone());
        let mut cx = Context::from_waker(&waker);
        w.notify();
        w.notify();
        // Two notifies before a wait are one wake-up.
        assert!(w.poll_notified(&mut cx).is_ready());
        assert!(w.poll_notified(&mut cx).is_pending());
        w.notify();
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
        assert!(w.poll_notified(&mut cx).is_ready());
        assert!(w.poll_notified(&mut cx).is_pending());
    }
}
