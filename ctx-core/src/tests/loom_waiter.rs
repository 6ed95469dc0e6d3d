//! Loom models of waiting (`tree::wait`): the `WAITERS` bit, the inline waker
//! slot and the event behind it. A `Done` future polled while the context is
//! canceled always completes. A lost wake-up leaves the waiting thread blocked
//! forever, which loom reports as a deadlock.

use super::model;
use crate::Context;
use loom::future::block_on;
use loom::thread;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll, Waker};

/// One waiter on the canceled context itself.
#[test]
fn loom_waiter_done_vs_cancel() {
    model(|| {
        let (ctx, cancel) = Context::background().with_cancel();
        let waiter = ctx.clone();
        let t = thread::spawn(move || {
            block_on(waiter.done());
            assert!(waiter.is_done());
        });
        cancel.cancel();
        t.join().unwrap();
        assert!(ctx.is_done());
    });
}

/// A waiter on a child, woken by the propagation of its parent's cancel.
#[test]
fn loom_waiter_child_done_vs_parent_cancel() {
    model(|| {
        let (parent, cancel_parent) = Context::background().with_cancel();
        let (child, _cancel_child) = parent.with_cancel();
        let t = thread::spawn(move || {
            block_on(child.done());
            assert!(child.is_done());
        });
        cancel_parent.cancel();
        t.join().unwrap();
    });
}

/// Two waiters on one context: the second sets a `WAITERS` bit that is already
/// set, and neither may be missed.
#[test]
fn loom_waiter_two_waiters_vs_cancel() {
    model(|| {
        let (ctx, cancel) = Context::background().with_cancel();
        let waiter = ctx.clone();
        let t = thread::spawn(move || block_on(waiter.done()));
        let canceler = thread::spawn(move || cancel.cancel());
        block_on(ctx.done());
        t.join().unwrap();
        canceler.join().unwrap();
    });
}

/// Polls `done` once with a waker that does nothing: it registers (or is ready).
fn poll_once(done: &mut crate::Done) -> Poll<()> {
    Pin::new(done).poll(&mut TaskContext::from_waker(Waker::noop()))
}

/// The slot's owner re-polled with another waker (loom's `block_on`) while the
/// context is canceled: the new waker is stored or the poll sees the close, and
/// a notifier that finds the owner storing it does not lose it.
#[test]
fn loom_waiter_slot_new_waker_vs_cancel() {
    model(|| {
        let (ctx, cancel) = Context::background().with_cancel();
        let waiter = ctx.clone();
        let t = thread::spawn(move || {
            let mut done = waiter.done();
            if poll_once(&mut done).is_pending() {
                assert!(done.holds_slot());
                block_on(&mut done);
            }
            assert!(!done.holds_slot());
            assert!(waiter.is_done());
        });
        cancel.cancel();
        t.join().unwrap();
    });
}

/// A `Done` of the live `ctx` that registered and holds its slot.
fn slot_holder(ctx: &Context) -> crate::Done {
    let mut done = ctx.done();
    assert!(poll_once(&mut done).is_pending());
    assert!(done.holds_slot());
    done
}

/// A thread whose waiter registers on `ctx`'s event (its slot is taken), then
/// waits with loom's waker (a new one: the entry's waker is replaced).
fn event_waiter(ctx: &Context) -> thread::JoinHandle<()> {
    let waiter = ctx.clone();
    thread::spawn(move || {
        let mut second = waiter.done();
        if poll_once(&mut second).is_pending() {
            assert!(!second.holds_slot());
        }
        block_on(second);
    })
}

/// A context whose slot is held (by a `Done` registered here) and the threads
/// `others` starts against it, then its cancel: the threads are joined in
/// their order, and the slot's holder is woken last.
fn slot_taken_vs_cancel(
    others: impl Fn(&Context) -> Vec<thread::JoinHandle<()>> + Send + Sync + 'static,
) {
    model(move || {
        let (ctx, cancel) = Context::background().with_cancel();
        let slot = slot_holder(&ctx);
        let threads = others(&ctx);
        cancel.cancel();
        for t in threads {
            t.join().unwrap();
        }
        block_on(slot);
    });
}

/// One waiter in the slot, a second on the event: the cancel wakes both.
#[test]
fn loom_waiter_slot_and_event_vs_cancel() {
    model(|| {
        let (ctx, cancel) = Context::background().with_cancel();
        let first = slot_holder(&ctx);
        let t = event_waiter(&ctx);
        cancel.cancel();
        block_on(first);
        t.join().unwrap();
    });
}

/// The slot's owner is dropped while another waiter registers (claiming the
/// freed slot or listening on the event) and the context is canceled: the
/// second waiter is woken whichever way it registered.
#[test]
fn loom_waiter_slot_release_vs_claim_vs_cancel() {
    model(|| {
        let (ctx, cancel) = Context::background().with_cancel();
        let mut first = ctx.done();
        assert!(poll_once(&mut first).is_pending());
        let dropper = thread::spawn(move || drop(first));
        let waiter = ctx.clone();
        let t = thread::spawn(move || block_on(waiter.done()));
        cancel.cancel();
        dropper.join().unwrap();
        t.join().unwrap();
    });
}

/// A slot freed by a dropped owner is claimed again by the next waiter.
#[test]
fn loom_waiter_slot_reused_after_drop() {
    model(|| {
        let (ctx, cancel) = Context::background().with_cancel();
        let mut first = ctx.done();
        assert!(poll_once(&mut first).is_pending());
        let dropper = thread::spawn(move || drop(first));
        dropper.join().unwrap();
        let mut second = ctx.done();
        assert!(poll_once(&mut second).is_pending());
        assert!(second.holds_slot());
        let t = thread::spawn(move || block_on(second));
        cancel.cancel();
        t.join().unwrap();
    });
}

/// A waker that raises a flag, for models that wait for a wake-up by hand.
struct Flag(loom::sync::atomic::AtomicBool);

impl std::task::Wake for Flag {
    fn wake(self: std::sync::Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &std::sync::Arc<Self>) {
        self.0.store(true, loom::sync::atomic::Ordering::SeqCst);
    }
}

/// The slot's owner re-polled with the waker it registered while the context is
/// canceled: the re-poll stores nothing, and a notifier that finds it holding the
/// cell (and so leaves the cell alone) is not lost: either the waker is woken or
/// the re-poll sees the close.
#[test]
fn loom_waiter_slot_same_waker_vs_cancel() {
    model(|| {
        let (ctx, cancel) = Context::background().with_cancel();
        let waiter = ctx.clone();
        let t = thread::spawn(move || {
            let flag = std::sync::Arc::new(Flag(loom::sync::atomic::AtomicBool::new(false)));
            let waker = Waker::from(flag.clone());
            let mut cx = TaskContext::from_waker(&waker);
            let mut done = waiter.done();
            if Pin::new(&mut done).poll(&mut cx).is_ready() {
                return;
            }
            if Pin::new(&mut done).poll(&mut cx).is_ready() {
                return;
            }
            while !flag.0.load(loom::sync::atomic::Ordering::SeqCst) {
                thread::yield_now();
            }
            assert!(Pin::new(&mut done).poll(&mut cx).is_ready());
        });
        cancel.cancel();
        t.join().unwrap();
    });
}

/// The slot after the close (`tree/wait.rs`): a leaf's slot owner re-polls
/// and then drops its `Done`, its context and its canceler (the node's drop)
/// while its parent's walk takes the slot's waker under the `drained` flag
/// and keeps the cell. The owner's release is one load when it finds the
/// walk's `WAKING`; either way the cell is touched by one side at a time and
/// the node outlives the walk's access.
#[test]
fn loom_waiter_slot_owner_drops_its_node_vs_parent_walk() {
    model(|| {
        let (parent, cancel_parent) = Context::background().with_cancel();
        let (child, cancel_child) = parent.with_cancel();
        let canceler = cancel_child.into_canceler();
        let mut done = child.done();
        assert!(poll_once(&mut done).is_pending());
        let owner = thread::spawn(move || {
            let _ = poll_once(&mut done);
            drop(done);
            drop(child);
            drop(canceler);
        });
        cancel_parent.cancel();
        owner.join().unwrap();
        drop(parent);
    });
}

/// The slot after the close: the slot's owner completes or drops while the
/// cancel takes its waker, then a new waiter arrives on the done context: it
/// is ready at once, whatever the dead slot's word says.
#[test]
fn loom_waiter_new_waiter_after_the_slot_died() {
    model(|| {
        let (ctx, cancel) = Context::background().with_cancel();
        let mut first = ctx.done();
        assert!(poll_once(&mut first).is_pending());
        let again = ctx.clone();
        let owner = thread::spawn(move || {
            let _ = poll_once(&mut first);
            drop(first);
            block_on(again.done());
        });
        cancel.cancel();
        owner.join().unwrap();
        block_on(ctx.done());
    });
}

/// Two waiters on the event (the slot taken by a third): one is dropped while
/// the cancel notifies, the other re-polled with a new waker. The dropped
/// one's entry goes whichever comes first, and the other is woken.
#[test]
fn loom_waiter_event_entry_dropped_vs_notify() {
    slot_taken_vs_cancel(|ctx| {
        let mut dropped = ctx.done();
        assert!(poll_once(&mut dropped).is_pending());
        let t = event_waiter(ctx);
        let dropper = thread::spawn(move || drop(dropped));
        vec![dropper, t]
    });
}

/// The adapters' event: a listener that listens before its last check of a
/// flag, against a notifier that sets the flag and then notifies. The
/// listener either sees the flag or is woken.
#[test]
fn loom_adapter_event_listen_check_wait_vs_notify() {
    use crate::sync::{AtomicBool, Ordering};
    use std::sync::Arc as StdArc;
    model(|| {
        let event = loom::sync::Arc::new(crate::adapter::Event::new());
        let flag = StdArc::new(AtomicBool::new(false));
        let (event2, flag2) = (event.clone(), flag.clone());
        let t = thread::spawn(move || {
            let listener = event2.listen();
            if !flag2.load(Ordering::SeqCst) {
                block_on(listener);
            }
        });
        flag.store(true, Ordering::SeqCst);
        event.notify_all();
        t.join().unwrap();
    });
}

/// Two waiters reach the event of a context whose slot is taken at the same
/// time: both may try to install its list (one CAS wins, the loser frees its
/// own), and the cancel wakes both, wherever their entries went.
#[test]
fn loom_waiter_two_first_listeners_install_the_list_vs_cancel() {
    slot_taken_vs_cancel(|ctx| vec![event_waiter(ctx), event_waiter(ctx)]);
}

/// The slot's owner stores a new waker (its flags change: `REGISTERING` set,
/// then cleared) while a waiter beyond the slot sets `EVENT` in the same word
/// and installs the event's list, and the context is canceled: each side's
/// RMWs keep the other's bits, and the cancel wakes both.
#[test]
fn loom_waiter_event_joined_beside_a_slot_owner_storing_a_new_waker_vs_cancel() {
    model(|| {
        let (ctx, cancel) = Context::background().with_cancel();
        let mut slot = slot_holder(&ctx);
        let owner = thread::spawn(move || block_on(&mut slot));
        let listener = event_waiter(&ctx);
        cancel.cancel();
        owner.join().unwrap();
        listener.join().unwrap();
    });
}
