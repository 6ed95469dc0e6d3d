//! Registering a waiter: the `WAITERS` bit and why no wake-up is lost.
//!
//! A waiter creates a listener on the carrier's event, then sets the `WAITERS`
//! bit in the state word with a `SeqCst` read-modify-write, and goes to sleep only
//! if that RMW read a live word. The canceler's CAS to done is an RMW on the same
//! word; the walk notifies the event if the done word carries `WAITERS`.
//!
//! RMWs on one atomic are totally ordered. If the waiter's RMW comes after the
//! close, it reads the done word and the waiter does not sleep. If it comes
//! before, the close reads the waiter's `WAITERS` bit (RMWs always read the
//! latest value) and keeps it, and synchronises with the waiter's release, so the
//! listener's registration happens-before the notification, and the notification
//! finds it. This is the "flag, then notify" vs "register, then re-check" race of
//! the tokio-util history: both sides do an RMW on one word, so neither can miss
//! the other. When nobody ever waited, a cancel does not touch the event at all.
//!
//! The event is `event-listener`'s (one primitive for async and blocking waits).
//! Under `--cfg ctx_loom` a small loom-checked stand-in with the same contract
//! (register under a lock; notify wakes all registered) replaces it.

use super::node::NodeRef;
use super::state::{self, WAITERS};
use crate::sync::Ordering;

/// Registers interest in `carrier`'s cancellation: returns a listener, or `None`
/// if the carrier is already done (then there is nothing to wait for).
pub(crate) fn listen(carrier: NodeRef) -> Option<Listener> {
    let part = carrier.cancel_part();
    let listener = part.waiters.listen();
    // Relaxed: only a first guess for the CAS loop; the RMW below decides.
    let mut current = part.state.load(Ordering::Relaxed);
    loop {
        if state::is_done(current) {
            return None;
        }
        let flagged = current.map_addr(|a| a | WAITERS);
        // SeqCst: the waiter's RMW of the lost-wake-up argument (module docs); it
        // is an RMW even when the bit is already set, so it reads the latest word.
        match part.state.compare_exchange_weak(
            current,
            flagged,
            Ordering::SeqCst,
            Ordering::Relaxed,
        ) {
            Ok(_) => return Some(listener),
            Err(actual) => current = actual,
        }
    }
}

#[cfg(not(all(test, ctx_loom)))]
mod imp {
    pub(crate) use event_listener::{Event, EventListener as Listener};

    /// The event a carrier's waiters sleep on.
    #[derive(Debug)]
    pub(crate) struct Waiters(Event);

    impl Waiters {
        pub(crate) fn new() -> Waiters {
            Waiters(Event::new())
        }

        pub(crate) fn listen(&self) -> Listener {
            self.0.listen()
        }

        pub(crate) fn notify_all(&self) {
            self.0.notify(usize::MAX);
        }
    }
}

#[cfg(all(test, ctx_loom))]
mod imp {
    use loom::sync::atomic::{AtomicBool, Ordering};
    use loom::sync::{Arc, Mutex};
    use std::future::Future;
    use std::pin::Pin;
    use std::task::{Context, Poll, Waker};

    #[derive(Debug, Default)]
    struct Entry {
        notified: AtomicBool,
        waker: Mutex<Option<Waker>>,
    }

    /// A loom model of `event_listener::Event`'s contract.
    #[derive(Debug, Default)]
    pub(crate) struct Waiters(Mutex<Vec<Arc<Entry>>>);

    /// A registered listener.
    #[derive(Debug)]
    pub(crate) struct Listener(Arc<Entry>);

    impl Waiters {
        pub(crate) fn new() -> Waiters {
            Waiters::default()
        }

        pub(crate) fn listen(&self) -> Listener {
            let entry = Arc::new(Entry::default());
            self.0.lock().unwrap().push(entry.clone());
            Listener(entry)
        }

        pub(crate) fn notify_all(&self) {
            for entry in self.0.lock().unwrap().drain(..) {
                entry.notified.store(true, Ordering::SeqCst);
                if let Some(waker) = entry.waker.lock().unwrap().take() {
                    waker.wake();
                }
            }
        }
    }

    impl Future for Listener {
        type Output = ();

        fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            if self.0.notified.load(Ordering::SeqCst) {
                return Poll::Ready(());
            }
            *self.0.waker.lock().unwrap() = Some(cx.waker().clone());
            if self.0.notified.load(Ordering::SeqCst) {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        }
    }
}

pub(crate) use imp::{Listener, Waiters};
