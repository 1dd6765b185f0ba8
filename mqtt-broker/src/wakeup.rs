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

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::sync::atomic::{AtomicU8, Ordering};
use std::task::{Context, Poll, Waker};

use futures_util::task::AtomicWaker;

thread_local! {
    /// Open [`Batch`]es on this thread.
    static BATCH_DEPTH: Cell<u32> = const { Cell::new(0) };
    /// Wakers whose wake-ups wait for the outermost batch to end.
    static DEFERRED: RefCell<Vec<Waker>> = const { RefCell::new(Vec::new()) };
}

/// While one is alive on a thread, the wake-ups its notifies cause wait
/// until it is dropped. A publisher's connection holds one while it handles
/// the packets of one read: a subscriber then wakes once the whole read is
/// in its queue, and writes it with one `send`, instead of waking for the
/// first message and racing the rest (with 16 subscribers on two cores, 70
/// messages per `send` instead of hundreds: the kernel's per-call cost was
/// a third of the broker's CPU). The delay is the time to handle one read.
pub struct Batch(());

impl Batch {
    pub fn begin() -> Batch {
        BATCH_DEPTH.with(|d| d.set(d.get() + 1));
        Batch(())
    }
}

impl Drop for Batch {
    fn drop(&mut self) {
        let depth = BATCH_DEPTH.with(|d| {
            let n = d.get() - 1;
            d.set(n);
            n
        });
        if depth == 0 {
            // Taken out first: a wake may run code that notifies again.
            let mut wakers = DEFERRED.with(|q| std::mem::take(&mut *q.borrow_mut()));
            for w in wakers.drain(..) {
                w.wake();
            }
            // The emptied list goes back, so that the next batch (the next
            // read of a publisher with subscribers) does not allocate it
            // again.
            DEFERRED.with(|q| {
                let mut q = q.borrow_mut();
                if q.is_empty() {
                    *q = wakers;
                }
            });
        }
    }
}

#[derive(Debug, Default)]
pub struct Wakeup {
    /// `PENDING`, and the owner's own flags (`flag`, `set_flag`): a byte
    /// of their own would cost every session 8 bytes of padding, and put
    /// it past mimalloc's 224-byte class.
    state: AtomicU8,
    waker: AtomicWaker,
}

/// Set by `notify`, cleared when the waiter sees it.
const PENDING: u8 = 1;

impl Wakeup {
    /// Wakes the registered waker, or the next one to wait, once.
    pub fn notify(&self) {
        // A plain load first: when the flag is already set, leaving its
        // cache line unwritten spares the waiter's core a miss. (Whoever
        // queued took the session's lock first, and the waiter clears the
        // flag before it takes that lock, so a stale `true` cannot hide a
        // message.)
        if self.state.load(Ordering::Acquire) & PENDING != 0 {
            return;
        }
        // Already pending: the notify that set it wakes (or has woken) the
        // waiter, which has not looked yet. So a burst of messages queued
        // for one connection costs one atomic swap each, not a wake each.
        if self.state.fetch_or(PENDING, Ordering::AcqRel) & PENDING == 0 {
            if BATCH_DEPTH.with(|d| d.get()) == 0 {
                self.waker.wake();
            } else if let Some(w) = self.waker.take() {
                DEFERRED.with(|q| q.borrow_mut().push(w));
            }
        }
    }

    /// Ready once `notify` has been called since the last time this was
    /// ready; otherwise `cx`'s waker is the one `notify` wakes.
    pub fn poll_notified(&self, cx: &mut Context<'_>) -> Poll<()> {
        if self.state.fetch_and(!PENDING, Ordering::AcqRel) & PENDING != 0 {
            return Poll::Ready(());
        }
        self.waker.register(cx.waker());
        // A notify between the check and the registration woke no one.
        if self.state.fetch_and(!PENDING, Ordering::AcqRel) & PENDING != 0 {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }

    /// Whether the owner's flag `bit` (any bit but the lowest) is set.
    pub fn flag(&self, bit: u8) -> bool {
        debug_assert!(bit & PENDING == 0);
        self.state.load(Ordering::Acquire) & bit != 0
    }

    /// Sets or clears the owner's flag `bit` (any bit but the lowest).
    pub fn set_flag(&self, bit: u8, on: bool) {
        debug_assert!(bit & PENDING == 0);
        if on {
            self.state.fetch_or(bit, Ordering::AcqRel);
        } else {
            self.state.fetch_and(!bit, Ordering::AcqRel);
        }
    }

    /// Waits for `notify`.
    pub fn notified(&self) -> impl Future<Output = ()> + '_ {
        std::future::poll_fn(move |cx| self.poll_notified(cx))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::sync::Arc;
    use std::task::Wake;

    /// A waker that counts its wakes (also `kick.rs`'s tests).
    pub(crate) struct Count(pub(crate) AtomicUsize);
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

    #[test]
    fn a_batch_holds_its_wake_ups_until_it_ends() {
        let (a, b) = (Wakeup::default(), Wakeup::default());
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = std::task::Waker::from(count.clone());
        let mut cx = Context::from_waker(&waker);
        assert!(a.poll_notified(&mut cx).is_pending());
        assert!(b.poll_notified(&mut cx).is_pending());
        {
            let _outer = Batch::begin();
            {
                let _inner = Batch::begin();
                a.notify();
                a.notify();
            }
            b.notify();
            assert_eq!(count.0.load(Ordering::SeqCst), 0, "woken inside the batch");
        }
        // One wake each, when the outermost batch ended.
        assert_eq!(count.0.load(Ordering::SeqCst), 2);
        assert!(a.poll_notified(&mut cx).is_ready());
        assert!(b.poll_notified(&mut cx).is_ready());
        assert!(a.poll_notified(&mut cx).is_pending());
        a.notify();
        assert_eq!(count.0.load(Ordering::SeqCst), 3, "no batch: woken at once");
    }
}
