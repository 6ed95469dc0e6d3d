//! The process-wide signal watcher behind every signal context (unix).
//!
//! All its state sits in [`STATE`], under one lock: the live *listeners* (one per
//! signal context whose `SignalStop` lives) and, for every signal any listener
//! ever asked for, how many listeners *catch* it and the word its handler
//! reads and bumps.
//!
//! A listener catches its signals from `subscribe` to `unsubscribe`; one with
//! `exit_on_second_signal` only until the first of them fired it.
//!
//! Handlers, per signal, installed once and never removed (signal-hook cannot
//! remove them), in this order: first our own (`install`), then the self-pipe
//! of one `Signals` instance, read by the `ctx-signal` thread, which calls
//! `dispatch`. Both run on every delivery, in that order. Ours makes one
//! atomic read-modify-write of the signal's [`Word`]: it counts the delivery
//! and reads the *default-action flag*, and runs the signal's default action
//! if the flag is set. The flag is set exactly while no listener catches the
//! signal (its catcher count is zero); it is only written under the lock, so
//! it always matches the list, except while `subscribe` watches a signal for
//! the first time: it gets its handlers with the flag clear (that call is
//! catching it), and the flag is only set when its catcher count drops to zero
//! again, or when that call fails; no moment of the call runs the default
//! action. A signal the process started out ignoring never runs it.
//!
//! Deliveries are matched to listeners by their count, under the lock:
//! `dispatched` is how many of a signal's deliveries were handed to the
//! listeners so far, and each listener keeps the count of its signals'
//! deliveries from before it was counted as a catcher (`since`), which never
//! fire it. Since the flag and the count share one word, the flag a delivery
//! read and its place in the count agree: a delivery counted after a
//! listener's `since` found the flag clear (no default action) and fires that
//! listener; one counted before a stop's flag change (to "no catcher") was
//! caught, and the stop hands it to the stopping listener itself. So
//! `unsubscribe` first dispatches what was delivered and not yet dispatched,
//! then lets the listener go: a signal caught while a context catches it
//! reaches it, and never a context made after it arrived, whether the watcher
//! thread was quick or not. Nothing waits for the watcher thread: a stop
//! dispatches the pending deliveries itself, so it cannot deadlock on it (on
//! that very thread, or in a forked child, where it does not exist; there, as
//! documented, signals reach no listener, and a stop dispatches nothing).
//!
//! No user code runs on the `ctx-signal` thread: `dispatch` only marks the
//! listeners fired, under the lock, and hands each fired context's cancel (the
//! wakers of its waiters, and the `Drop`s a last reference releases; its
//! `after_func` callbacks run on ctx-core's runner) to a short-lived thread of
//! its own (`cancel`). So a slow or blocking waker or `Drop` delays neither
//! the other contexts of the same signal nor any later signal.
//! Signals are rare and each listener fires once, so a thread per fired
//! context costs little. Only when no thread can be spawned does a cancel run
//! here, late rather than lost. That, and every delivery, runs under
//! [`contain_panic`], which keeps the thread alive through any panic: a dead
//! watcher would lose every later signal (its listeners keep the default action
//! off). A stop cancels its own context with the signal that fired it, if one
//! did, on the stopping thread before it returns, so the stop's own cancel
//! (`Canceled`) cannot overtake that cancel on its way.

use ctx_core::adapter::contain_panic;
use ctx_core::{Canceler, SignalError};
use signal_hook::consts::FORBIDDEN;
use signal_hook::iterator::{Handle, Signals};
use signal_hook::low_level::{emulate_default_handler, signal_name};
use std::ffi::c_int;
use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, mpsc};
use std::thread;

/// Registers a listener for `signals` that `dispatch` cancels through
/// `canceler`. Returns its id for [`unsubscribe`].
pub(super) fn subscribe(
    signals: &[c_int],
    exit_on_second_signal: bool,
    canceler: Canceler,
) -> io::Result<u64> {
    let mut signals = signals.to_vec();
    signals.sort_unstable();
    signals.dedup();
    for &signal in &signals {
        check(signal)?;
    }
    let mut state = lock();
    // The signals this call makes caught, with the count of their deliveries
    // from before: those after are this listener's, as they come during
    // this call (with the flag clear) or after it.
    let mut new = Vec::new();
    for &signal in &signals {
        match state.watch(signal) {
            Ok(Some(since)) => new.push((signal, since)),
            Ok(None) => {}
            Err(err) => {
                // Nobody catches them: their default action is back.
                for (signal, _) in new {
                    state.watched(signal).word.set_flag(true);
                }
                return Err(err);
            }
        }
    }
    let id = state.next_id;
    state.next_id += 1;
    let mut listener = Listener {
        id,
        since: vec![0; signals.len()].into(),
        signals: signals.into(),
        canceler,
        fired: None,
        exit_on_second_signal,
    };
    let counted = count(&mut state.signals, &listener, Catch::Start);
    for ((signal, since), counted) in listener
        .signals
        .iter()
        .zip(&mut listener.since)
        .zip(counted)
    {
        // From the flag's clearing: the deliveries before read it set, or
        // were caught for the listeners before this one.
        *since = new
            .iter()
            .find(|(new, _)| new == signal)
            .map_or(counted, |&(_, since)| since);
    }
    state.listeners.push(listener);
    // A signal watched for the first time had our handler before the
    // self-pipe's: a delivery in between was counted (and caught for this
    // listener) but woke no watcher. Handed out here, as a stop hands out
    // what came before it. (In a forked child nothing dispatches: module
    // docs.)
    let mut fired = Vec::new();
    if state.watcher_pid == Some(std::process::id()) {
        for (signal, _) in new {
            fired.extend(state.dispatch_pending(signal, None));
        }
    }
    drop(state);
    // Outside the lock, as in `dispatch`.
    for (canceler, name) in fired {
        cancel(canceler, name);
    }
    Ok(id)
}

/// Removes the listener `id`: its signals are no longer caught for it. The
/// signals delivered before are dispatched first, to it too; if one of them
/// fired it (now or earlier), its context is canceled with that signal before
/// this returns.
pub(super) fn unsubscribe(id: u64) {
    let (removed, fired) = {
        let mut state = lock();
        let at = state.listeners.iter().position(|l| l.id == id);
        let Some(mut listener) = at.map(|at| state.listeners.swap_remove(at)) else {
            debug_assert!(false, "a listener is removed once");
            return;
        };
        if listener.catches() {
            // Sets the flag of a signal nobody catches any more: what its
            // handler counts from here runs the default action, and what
            // it counted before was caught, so is dispatched below.
            count(&mut state.signals, &listener, Catch::End);
        }
        // In a forked child no watcher thread dispatches (documented): nor
        // does a stop there.
        let mut fired = Vec::new();
        if state.watcher_pid == Some(std::process::id()) {
            for signal in listener.signals.clone() {
                fired.extend(state.dispatch_pending(signal, Some(&mut listener)));
            }
        }
        (listener, fired)
    };
    // Outside the lock: a cancel runs wakers and `Drop`s, and dropping the
    // listener's `Canceler` can release the `Drop`s of values up its chain.
    for (canceler, name) in fired {
        cancel(canceler, name);
    }
    if let Some(name) = removed.fired {
        // Also if `dispatch` fired it earlier: its cancel may still be on the
        // way, and must not lose to the stop's. The first of the two wins.
        let _ = removed.canceler.cancel_with_cause(SignalError::new(name));
    }
    drop(removed);
}

// ===== the state =====

static STATE: Mutex<State> = Mutex::new(State {
    pipe: None,
    watcher_pid: None,
    signals: Vec::new(),
    listeners: Vec::new(),
    next_id: 0,
});

struct State {
    /// Adds signals to the self-pipe that the `ctx-signal` thread reads; `None`
    /// until the first listener.
    pipe: Option<Handle>,
    /// The process the `ctx-signal` thread runs in (a forked child inherits
    /// the pipe, not the thread).
    watcher_pid: Option<u32>,
    /// Every signal a listener asked for, in the order of their first use.
    signals: Vec<Watched>,
    /// The live signal contexts.
    listeners: Vec<Listener>,
    next_id: u64,
}

struct Watched {
    signal: c_int,
    /// Its name, for the [`SignalError`] cause.
    name: &'static str,
    /// How many listeners catch it.
    catchers: usize,
    /// Its deliveries and default-action flag, shared with its handler.
    word: Arc<Word>,
    /// Whether it is in the self-pipe: false while adding it failed (the next
    /// `subscribe` for it tries again).
    piped: bool,
    /// How many of its deliveries were handed to the listeners (the count in
    /// its word when they were).
    dispatched: usize,
}

/// A signal's delivery count and default-action flag, in one atomic word that
/// its handler reads and bumps in one step: bit 0 is the flag, the bits above
/// count the deliveries. The count wraps, so counts are only compared for
/// equality.
struct Word(AtomicUsize);

struct Listener {
    id: u64,
    /// Sorted, without duplicates.
    signals: Box<[c_int]>,
    /// For each of `signals`, the count of its deliveries before this
    /// listener caught it: a dispatch up to that count does not fire it.
    since: Box<[usize]>,
    /// Cancels its context with the signal as the cause.
    canceler: Canceler,
    /// The signal that fired it, once one has.
    fired: Option<&'static str>,
    exit_on_second_signal: bool,
}

/// Whether a listener starts or ends catching its signals.
#[derive(Clone, Copy)]
enum Catch {
    Start,
    End,
}

fn lock() -> MutexGuard<'static, State> {
    at_fork::install();
    STATE.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Holding [`STATE`]'s lock across `fork()`.
///
/// Without it, a thread making or stopping a signal context at the moment
/// another thread forks leaves the lock held in the child for ever (that
/// thread does not exist there): the child's first `signal_context`, or the
/// drop of a `SignalStop` it inherited, waits for ever. Its holders never
/// wait for a forking thread (no user code runs under it, and nothing of ours
/// forks), so the fork waits for it briefly.
mod at_fork {
    use super::{STATE, State};
    use std::cell::RefCell;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{MutexGuard, PoisonError};

    thread_local! {
        /// The guard taken before a fork, on the forking thread (the only
        /// thread the child has, with a copy of this slot).
        static HELD: RefCell<Option<MutexGuard<'static, State>>> = const { RefCell::new(None) };
    }

    /// Whether the handlers were registered (or are being registered).
    static INSTALLED: AtomicBool = AtomicBool::new(false);

    /// Registers the handlers, once per process: before the lock is first
    /// taken. A fork while the first thread registers them goes unguarded, as
    /// every fork did before; a thread that finds them being registered does
    /// not wait (its fork, in that moment, would be unguarded too).
    pub(super) fn install() {
        // Relaxed: only whether to register; the handlers order nothing else.
        if INSTALLED.load(Ordering::Relaxed) || INSTALLED.swap(true, Ordering::Relaxed) {
            return;
        }
        // SAFETY: registers handlers that take and release one mutex that the
        // forking thread does not hold (nothing of ours forks under it); in the
        // child, the release is at most a futex wake. A failure (no memory)
        // leaves forks unguarded, as they were before.
        let _ = unsafe { libc::pthread_atfork(Some(prepare), Some(release), Some(release)) };
    }

    /// Before a fork: takes the lock.
    unsafe extern "C" fn prepare() {
        let guard = STATE.lock().unwrap_or_else(PoisonError::into_inner);
        // A thread whose locals are gone (a fork from a thread-local's
        // destructor) cannot keep the guard: that fork goes unguarded.
        let _ = HELD.try_with(|held| *held.borrow_mut() = Some(guard));
    }

    /// After a fork, in the parent and in the child: releases what `prepare`
    /// took.
    unsafe extern "C" fn release() {
        let guard = HELD
            .try_with(|held| held.borrow_mut().take())
            .ok()
            .flatten();
        drop(guard);
    }
}

/// Rejects what signal-hook would panic on, or could not name.
fn check(signal: c_int) -> io::Result<()> {
    let invalid = |why: &str| {
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("ctx: signal {signal} {why}"),
        ))
    };
    if FORBIDDEN.contains(&signal) {
        return invalid("cannot be watched (signal-hook refuses it)");
    }
    if signal_name(signal).is_none() {
        return invalid("is unknown");
    }
    Ok(())
}

impl State {
    /// Makes `signal` caught from here, unless a listener had it before.
    /// Returns the count of its deliveries before this call made it caught
    /// (they ran its default action, or there was none to run), or `None` if
    /// it was caught already.
    fn watch(&mut self, signal: c_int) -> io::Result<Option<usize>> {
        let (at, since) = match self.signals.iter().position(|w| w.signal == signal) {
            Some(at) if self.signals[at].piped => return Ok(None),
            // Its handler is in, its flag set: a retry after a failed add.
            Some(at) => (at, self.signals[at].word.set_flag(false)),
            None => {
                self.install(signal)?;
                (self.signals.len() - 1, 0)
            }
        };
        match self.pipe().and_then(|pipe| pipe.add_signal(signal)) {
            Ok(()) => {
                self.signals[at].piped = true;
                Ok(Some(since))
            }
            Err(err) => {
                // Nobody catches it: its default action is back.
                self.signals[at].word.set_flag(true);
                Err(err)
            }
        }
    }

    /// Installs our handler for `signal`, with the flag clear: the signal is
    /// caught from here on. Before the self-pipe's, so that the count has
    /// every delivery that wakes the watcher thread.
    fn install(&mut self, signal: c_int) -> io::Result<()> {
        // Read before our handler replaces the disposition.
        let has_default = !started_ignored(signal);
        let word = Arc::new(Word(AtomicUsize::new(0)));
        let handler = Arc::clone(&word);
        let action = move || {
            if handler.deliver() && has_default {
                let _ = emulate_default_handler(signal);
            }
        };
        // SAFETY: the action runs in a signal handler, where it makes one
        // atomic read-modify-write on a word it keeps alive (the action is
        // never unregistered, so its `Arc` is never dropped) and may call `emulate_default_handler`, which is async-signal-safe
        // (signal-hook's own conditional default calls it from its handler).
        // It neither allocates, nor locks, nor touches anything else.
        unsafe { signal_hook::low_level::register(signal, action) }?;
        self.signals.push(Watched {
            signal,
            name: signal_name(signal).expect("checked in `subscribe`"),
            catchers: 0,
            word,
            piped: false,
            dispatched: 0,
        });
        Ok(())
    }

    /// The self-pipe, and the thread that reads it: started on first use.
    fn pipe(&mut self) -> io::Result<&Handle> {
        if self.pipe.is_none() {
            let mut signals = Signals::new::<[c_int; 0], c_int>([])?;
            let handle = signals.handle();
            thread::Builder::new()
                .name("ctx-signal".into())
                .spawn(move || {
                    for signal in signals.forever() {
                        // Each delivery under its own guard: whatever happens in
                        // one, the thread goes on to the next.
                        contain_panic(|| dispatch(signal));
                    }
                })?;
            self.pipe = Some(handle);
            self.watcher_pid = Some(std::process::id());
        }
        Ok(self.pipe.as_ref().expect("set above"))
    }

    fn watched(&self, signal: c_int) -> &Watched {
        self.signals
            .iter()
            .find(|w| w.signal == signal)
            .expect("a listener's signals are watched")
    }

    /// Hands the deliveries of `signal` not handed out yet to the listeners
    /// (and to `stopping`, a listener being removed) that it fires: those
    /// that catch it, were not fired yet, and were caught before the latest
    /// delivery. Marks them fired; returns the cancelers of those in the list.
    fn dispatch_pending(
        &mut self,
        signal: c_int,
        stopping: Option<&mut Listener>,
    ) -> Vec<(Canceler, &'static str)> {
        let State {
            signals, listeners, ..
        } = self;
        let Some(watched) = signals.iter_mut().find(|w| w.signal == signal) else {
            debug_assert!(false, "only watched signals reach the pipe");
            return Vec::new();
        };
        let now = watched.word.count();
        if now == watched.dispatched {
            // Handed out already: by a stop, or with an earlier wake-up.
            return Vec::new();
        }
        watched.dispatched = now;
        let name = watched.name;
        let mut fired = Vec::new();
        for listener in listeners.iter_mut() {
            if listener.fire(signal, now, name) {
                fired.push((listener.canceler.clone(), name));
                if listener.exit_on_second_signal {
                    count(signals, listener, Catch::End);
                }
            }
        }
        if let Some(listener) = stopping {
            // Counted out already; its cancel is the stop's to make.
            listener.fire(signal, now, name);
        }
        fired
    }
}

impl Word {
    /// In the handler: counts a delivery. Returns whether the flag is set.
    fn deliver(&self) -> bool {
        // SeqCst, as every access: the word's own order is all that matters,
        // and the lock orders the rest.
        self.0.fetch_add(2, Ordering::SeqCst) & 1 != 0
    }

    /// Sets the flag (`on`) or clears it. Returns the count of deliveries
    /// before: those that read the flag as it was.
    fn set_flag(&self, on: bool) -> usize {
        let old = if on {
            self.0.fetch_or(1, Ordering::SeqCst)
        } else {
            self.0.fetch_and(!1, Ordering::SeqCst)
        };
        old >> 1
    }

    /// The count of deliveries so far.
    fn count(&self) -> usize {
        self.0.load(Ordering::SeqCst) >> 1
    }
}

/// Counts `listener` in or out of the catchers of each of its signals, and sets
/// their default-action flags to match. Returns, for each signal, the count
/// of its deliveries before the flag was set to match.
fn count(watched: &mut [Watched], listener: &Listener, catch: Catch) -> Vec<usize> {
    listener
        .signals
        .iter()
        .map(|&signal| {
            let watched = watched
                .iter_mut()
                .find(|w| w.signal == signal)
                .expect("a listener's signals are watched");
            match catch {
                Catch::Start => watched.catchers += 1,
                Catch::End => watched.catchers -= 1,
            }
            watched.word.set_flag(watched.catchers == 0)
        })
        .collect()
}

impl Listener {
    /// Whether its signals are caught for it: until it is removed, and with
    /// `exit_on_second_signal` only until the first one fired it.
    fn catches(&self) -> bool {
        self.fired.is_none() || !self.exit_on_second_signal
    }

    /// Fires it with `signal`, whose deliveries are handed out up to the
    /// count `now`, if it waits for that signal and caught one of them.
    /// Returns whether it fired now.
    fn fire(&mut self, signal: c_int, now: usize, name: &'static str) -> bool {
        let Some(at) = self.signals.iter().position(|&s| s == signal) else {
            return false;
        };
        if self.fired.is_some() || self.since[at] == now {
            return false;
        }
        self.fired = Some(name);
        true
    }
}

/// Fires every listener that waits for `signal`, on the `ctx-signal` thread,
/// and hands each one's cancel to [`cancel`].
fn dispatch(signal: c_int) {
    let fired = lock().dispatch_pending(signal, None);
    // Canceled outside the lock: a cancel runs the wakers of the contexts'
    // waiters and the `Drop`s it releases, which may make or stop signal
    // contexts themselves.
    for (canceler, name) in fired {
        cancel(canceler, name);
    }
}

/// Cancels a fired listener's context with the signal `name` as the cause, on a
/// thread of its own (module docs): the wakers and `Drop`s it runs may block.
///
/// If no thread can be spawned, cancels it right here instead: late (after the
/// cancels of the contexts before it) is better than a signal lost.
fn cancel(canceler: Canceler, name: &'static str) {
    // The canceler reaches the thread through a channel, not the closure: a
    // failed spawn drops its closure, and this thread needs the canceler back.
    let (send, receive) = mpsc::sync_channel::<Canceler>(1);
    let spawned = thread::Builder::new()
        .name("ctx-signal-cancel".into())
        .spawn(move || {
            if let Ok(canceler) = receive.recv() {
                cancel_here(canceler, name);
            }
        });
    let canceler = match spawned {
        // Detached: nobody waits for a cancel. The send cannot fail (the thread
        // drops its receiver only after its `recv`); if it did, the canceler
        // comes back with the error and is canceled here.
        Ok(_) => match send.send(canceler) {
            Ok(()) => return,
            Err(mpsc::SendError(canceler)) => canceler,
        },
        Err(_) => canceler,
    };
    cancel_here(canceler, name);
}

/// Cancels with the signal `name` as the cause, on the calling thread, under
/// [`contain_panic`]. The canceler is moved into the guard: dropping it can drop the
/// last reference to the context, and so release user `Drop`s up its chain.
fn cancel_here(canceler: Canceler, name: &'static str) {
    contain_panic(move || {
        // Losing to an earlier cancel (the stop, the parent) is fine.
        let _ = canceler.cancel_with_cause(SignalError::new(name));
    });
}

/// Whether the process started with `signal` ignored (`SIG_IGN`), as a
/// background job of a non-interactive shell does with SIGINT.
fn started_ignored(signal: c_int) -> bool {
    // SAFETY: an all-zero `sigaction` is a valid value of this plain C struct.
    let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
    // SAFETY: with a null new action, `sigaction` only writes the current
    // disposition into `old`, which we own.
    let status = unsafe { libc::sigaction(signal, std::ptr::null(), &mut old) };
    status == 0 && old.sa_sigaction == libc::SIG_IGN
}
