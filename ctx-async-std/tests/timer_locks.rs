//! `AsyncIoTimer::arm` must not run foreign code (a waker's `Drop`) while it
//! holds a shard lock.
//!
//! `arm` polls its `async_io::Timer`. That poll calls async-io's
//! `Reactor::insert_timer`, which, when async-io's timer-op queue (1000 slots)
//! is full, drains the queue on the calling thread: it applies queued
//! `Remove`s, dropping the wakers other timers registered. The last reference
//! to such a waker runs its `Drop` there. `arm` used to poll under its shard
//! lock: a `Drop` that cancels a context whose deadline lives in the same
//! shard re-entered `disarm`, which takes the same (non-reentrant) lock, and
//! deadlocked (and with it the reactor, waiting for that shard to expire a
//! deadline).
//!
//! This binary holds a single test: it counts async-io's queued operations,
//! which another test running at once would disturb.

use ctx_async_std::AsyncIoTimer;
use ctx_core::{CancelFunc, Context};
use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, mpsc};
use std::task::{Context as TaskContext, Wake, Waker};
use std::time::Duration;

const HOUR: Duration = Duration::from_secs(3600);
/// async-io's `TIMER_QUEUE_SIZE`.
const QUEUE: usize = 1000;

thread_local! {
    /// Set around the `arm` under test, to check where the hook's drop ran.
    static IN_ARM: Cell<bool> = const { Cell::new(false) };
}

/// A waker whose wake blocks the thread that reacts (async-io's reactor lock
/// is held), so nobody drains the timer-op queue meanwhile.
struct Blocker {
    entered: Mutex<Option<mpsc::Sender<()>>>,
    release: Mutex<mpsc::Receiver<()>>,
}
impl Wake for Blocker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        if let Some(tx) = self.entered.lock().unwrap().take() {
            tx.send(()).unwrap();
            let _ = self.release.lock().unwrap().recv();
        }
    }
}

/// A user waker whose drop cancels a context: ordinary user code.
struct DropHook {
    cancel: Mutex<Option<CancelFunc>>,
    dropped_in_arm: mpsc::Sender<bool>,
}
impl Wake for DropHook {
    fn wake(self: Arc<Self>) {}
}
impl Drop for DropHook {
    fn drop(&mut self) {
        let _ = self.dropped_in_arm.send(IN_ARM.with(Cell::get));
        if let Some(cancel) = self.cancel.lock().unwrap().take() {
            cancel.cancel();
        }
    }
}

fn poll_once(timer: &mut async_io::Timer, waker: &Waker) {
    let polled = Pin::new(timer).poll(&mut TaskContext::from_waker(waker));
    assert!(polled.is_pending());
}

#[test]
fn a_waker_dropped_inside_arm_may_cancel_a_context_of_the_same_shard() {
    let (done_tx, done_rx) = mpsc::channel();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let (hook_tx, hook_rx) = mpsc::channel();
    let body = std::thread::spawn(move || {
        let timer = AsyncIoTimer::new();
        let root = Context::background().with_timer(timer.clone());
        // Keys 1..=16, one per shard; the next arm (key 17) takes key 1's shard.
        let mut keep = Vec::new();
        let (first, first_cancel) = root.with_timeout(HOUR);
        for _ in 1..16 {
            keep.push(root.with_timeout(HOUR));
        }
        assert_eq!(timer.armed(), 16);

        // Hold the reactor inside a wake: it drained the op queue just before.
        let (entered_tx, entered_rx) = mpsc::channel();
        let blocker = Waker::from(Arc::new(Blocker {
            entered: Mutex::new(Some(entered_tx)),
            release: Mutex::new(release_rx),
        }));
        let mut t0 = async_io::Timer::after(Duration::from_millis(1));
        poll_once(&mut t0, &blocker);
        entered_rx
            .recv_timeout(Duration::from_secs(30))
            .expect("the reactor woke the blocker");

        // A user timer with the hook as its waker, dropped: its `Insert` and
        // `Remove` are queued, and the queue holds the waker's last reference.
        let hook = Waker::from(Arc::new(DropHook {
            cancel: Mutex::new(Some(first_cancel)),
            dropped_in_arm: hook_tx,
        }));
        let mut user = async_io::Timer::after(HOUR);
        poll_once(&mut user, &hook);
        drop(hook);
        drop(user);
        // Fill the queue: 2 + 998 = 1000 ops.
        let noop = Waker::noop();
        for _ in 0..(QUEUE - 2) / 2 {
            let mut t = async_io::Timer::after(HOUR);
            poll_once(&mut t, noop);
        }

        // Key 17: shard 1, like `first`. Its poll finds the queue full and
        // drains it, dropping the hook, which cancels `first` (a disarm).
        IN_ARM.with(|c| c.set(true));
        let (_ctx, _cancel) = root.with_timeout(HOUR);
        IN_ARM.with(|c| c.set(false));
        assert!(first.is_done());
        drop(keep);
        done_tx.send(()).unwrap();
    });
    // The setup worked: the hook's drop ran inside the arm.
    let in_arm = hook_rx.recv_timeout(Duration::from_secs(30));
    let finished = done_rx.recv_timeout(Duration::from_secs(30));
    let _ = release_tx.send(());
    assert_eq!(
        in_arm,
        Ok(true),
        "setup: the hook was not dropped inside arm"
    );
    assert!(
        finished.is_ok(),
        "arm deadlocked: a waker dropped under the shard lock re-entered disarm"
    );
    body.join().unwrap();
}
