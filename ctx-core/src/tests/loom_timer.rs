//! Loom models of arming and disarming deadline timers (`timer`): every key a
//! backend hands out is disarmed exactly once, whoever ends the context and
//! whenever.

use super::model;
use crate::sync::{AtomicU64, Ordering};
use crate::{Context, Error, Expiry, Timer, TimerKey};
use loom::sync::Mutex;
use loom::sync::atomic::AtomicBool;
use loom::thread;
use std::fmt;
use std::num::NonZeroU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A timer backend that records what the tree asks of it and never fires by itself.
struct Recorder {
    now: Instant,
    /// Once set, the clock reads an hour past every deadline in these models.
    expired: AtomicBool,
    next_key: AtomicU64,
    armed: Mutex<Vec<(u64, Expiry)>>,
    disarmed: Mutex<Vec<u64>>,
}

impl fmt::Debug for Recorder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Recorder").finish_non_exhaustive()
    }
}

impl Timer for Recorder {
    fn now(&self) -> Instant {
        if self.expired.load(Ordering::SeqCst) {
            self.now + Duration::from_secs(3 * 3600)
        } else {
            self.now
        }
    }

    fn arm(&self, _deadline: Instant, expiry: Expiry) -> Option<TimerKey> {
        let key = self.next_key.fetch_add(1, Ordering::Relaxed);
        self.armed.lock().unwrap().push((key, expiry));
        Some(TimerKey::new(NonZeroU64::new(key).unwrap()))
    }

    fn disarm(&self, key: TimerKey) {
        self.disarmed.lock().unwrap().push(key.get().get());
    }
}

impl Recorder {
    fn new() -> Arc<Recorder> {
        Arc::new(Recorder {
            now: Instant::now(),
            expired: AtomicBool::new(false),
            next_key: AtomicU64::new(1),
            armed: Mutex::new(Vec::new()),
            disarmed: Mutex::new(Vec::new()),
        })
    }

    fn deadline(&self) -> Instant {
        self.now + Duration::from_secs(3600)
    }

    /// Takes the expiry of the one armed timer, as a backend does when it fires.
    fn take_expiry(&self) -> (u64, Expiry) {
        let mut armed = self.armed.lock().unwrap();
        assert_eq!(armed.len(), 1);
        armed.pop().unwrap()
    }

    /// Asserts that every key in `keys` was disarmed exactly once, and no other.
    fn assert_disarmed_once(&self, mut keys: Vec<u64>) {
        let mut disarmed = self.disarmed.lock().unwrap().clone();
        disarmed.sort_unstable();
        keys.sort_unstable();
        assert_eq!(disarmed, keys, "keys disarmed twice, never, or unknown");
    }

    fn armed_keys(&self) -> Vec<u64> {
        self.armed
            .lock()
            .unwrap()
            .iter()
            .map(|(key, _)| *key)
            .collect()
    }
}

/// A deadline child arms its timer while its parent is canceled. The cancel may
/// run before the key is stored: then the arming side sees the done word and
/// disarms. Either way the key is disarmed exactly once (or never armed).
#[test]
fn loom_timer_arm_vs_cancel() {
    model(|| {
        let timer = Recorder::new();
        let root = Context::background().with_timer(timer.clone());
        let (parent, cancel_parent) = root.with_cancel();
        let handle = parent.clone();
        let deadline = timer.deadline();
        let t = thread::spawn(move || handle.with_deadline(deadline));
        cancel_parent.cancel();
        let (ctx, cancel) = t.join().unwrap();

        assert_eq!(ctx.err(), Some(Error::Canceled));
        timer.assert_disarmed_once(timer.armed_keys());
        drop((ctx, cancel, parent, root));
        // The backend still holds the expiries; they keep only weak references.
        timer.armed.lock().unwrap().clear();
    });
}

/// The timer fires while the context is canceled: the first cancel wins, and the
/// key is disarmed exactly once (by whichever cancel finishes the node).
#[test]
fn loom_timer_fire_vs_cancel() {
    model(|| {
        let timer = Recorder::new();
        let root = Context::background().with_timer(timer.clone());
        let (ctx, cancel) = root.with_deadline(timer.deadline());
        let (key, expiry) = timer.take_expiry();
        let t = thread::spawn(move || expiry.fire());
        cancel.cancel();
        t.join().unwrap();

        let err = ctx.err().expect("not done");
        assert!(matches!(err, Error::Canceled | Error::DeadlineExceeded));
        assert_eq!(ctx.err(), Some(err));
        timer.assert_disarmed_once(vec![key]);
    });
}

/// The exact-deadline check: a reader finds the deadline passed (by the timer's
/// clock, before the timer fired) and cancels the context itself, while its
/// cancel function runs. One cancel wins, and the key is disarmed exactly once.
#[test]
fn loom_timer_exact_deadline_vs_cancel() {
    model(|| {
        let timer = Recorder::new();
        let root = Context::background().with_timer(timer.clone());
        let (ctx, cancel) = root.with_deadline(timer.deadline());
        let key = timer.armed_keys();
        timer.expired.store(true, Ordering::SeqCst);
        let reader = ctx.clone();
        let t = thread::spawn(move || reader.err());
        cancel.cancel();
        let seen = t.join().unwrap().expect("the reader saw a live context");

        assert_eq!(ctx.err(), Some(seen));
        timer.assert_disarmed_once(key);
        drop((ctx, root));
        timer.armed.lock().unwrap().clear();
    });
}
