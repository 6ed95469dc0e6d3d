//! The process-wide signal watcher behind every signal context (unix).
//!
//! All its state sits in [`STATE`], under one lock: the live *listeners* (one per
//! signal context whose `SignalStop` lives) and, for every signal any listener
//! ever asked for, how many listeners *catch* it and the flag its conditional
//! default handler reads. The flag is true exactly while no listener catches the
//! signal (the count is zero), and it is only written under the lock, so it
//! always matches the list; only while `subscribe` watches a signal for the
//! first time is it false with the count still zero: the signal is caught from
//! that call, and no moment of it runs the default action.
//!
//! A listener catches its signals from `subscribe` to `unsubscribe`; one with
//! `exit_on_second_signal` only until the first of them fired it (`dispatch`).
//!
//! Handlers, per signal, installed once and never removed (signal-hook cannot
//! remove them): first `register_conditional_default` with the flag, then the
//! self-pipe of one `Signals` instance, read by the `ctx-signal` thread, which
//! calls `dispatch`. Both run on every delivery, in that order; the first ends
//! the process while the flag is set. A signal the process started out ignoring
//! gets no conditional default, so it stays ignored while nobody catches it.
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
//! off).

use ctx_core::adapter::contain_panic;
use ctx_core::{Canceler, SignalError};
use signal_hook::consts::FORBIDDEN;
use signal_hook::iterator::{Handle, Signals};
use signal_hook::low_level::signal_name;
use std::ffi::c_int;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
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
    for (at, &signal) in signals.iter().enumerate() {
        if let Err(err) = state.watch(signal) {
            // Those watched first by this call (their flags clear, no
            // catcher): their default action is back.
            for &signal in &signals[..at] {
                let watched = state.signals.iter().find(|w| w.signal == signal);
                if let Some(Watched {
                    catchers: 0,
                    default_action: Some(flag),
                    ..
                }) = watched
                {
                    flag.store(true, Ordering::SeqCst);
                }
            }
            return Err(err);
        }
    }
    let id = state.next_id;
    state.next_id += 1;
    let listener = Listener {
        id,
        signals: signals.into(),
        canceler,
        fired: false,
        exit_on_second_signal,
    };
    count(&mut state.signals, &listener, Catch::Start);
    state.listeners.push(listener);
    Ok(id)
}

/// Removes the listener `id`: its signals are no longer caught for it.
pub(super) fn unsubscribe(id: u64) {
    let removed = {
        let mut state = lock();
        let at = state.listeners.iter().position(|l| l.id == id);
        let removed = at.map(|at| state.listeners.swap_remove(at));
        debug_assert!(removed.is_some(), "a listener is removed once");
        if let Some(listener) = removed.as_ref().filter(|l| l.catches()) {
            count(&mut state.signals, listener, Catch::End);
        }
        removed
    };
    // Dropped outside the lock: dropping its `Canceler` cancels nothing, but a
    // last reference to a context can release the `Drop`s of values up its chain.
    drop(removed);
}

// ===== the state =====

static STATE: Mutex<State> = Mutex::new(State {
    pipe: None,
    signals: Vec::new(),
    listeners: Vec::new(),
    next_id: 0,
});

struct State {
    /// Adds signals to the self-pipe that the `ctx-signal` thread reads; `None`
    /// until the first listener.
    pipe: Option<Handle>,
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
    /// Read by its conditional default handler: the default action runs while it
    /// is true. `None` if the process started out ignoring the signal.
    default_action: Option<Arc<AtomicBool>>,
}

struct Listener {
    id: u64,
    /// Sorted, without duplicates.
    signals: Box<[c_int]>,
    /// Cancels its context with the signal as the cause.
    canceler: Canceler,
    /// Whether one of its signals has arrived.
    fired: bool,
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
    /// Installs the handlers for `signal`, unless a listener had it before.
    fn watch(&mut self, signal: c_int) -> io::Result<()> {
        if self.signals.iter().any(|w| w.signal == signal) {
            return Ok(());
        }
        // Read before our first handler for `signal` replaces the disposition.
        let conditional_default = if started_ignored(signal) {
            None
        } else {
            // False: caught from here, by this call's listener. Set once
            // `subscribe` has counted it, or if it fails.
            let flag = Arc::new(AtomicBool::new(false));
            let id = signal_hook::flag::register_conditional_default(signal, Arc::clone(&flag))?;
            Some((flag, id))
        };
        if let Err(err) = self.pipe().and_then(|pipe| pipe.add_signal(signal)) {
            if let Some((_, id)) = conditional_default {
                signal_hook::low_level::unregister(id);
            }
            return Err(err);
        }
        let name = signal_name(signal).expect("checked in `subscribe`");
        self.signals.push(Watched {
            signal,
            name,
            catchers: 0,
            default_action: conditional_default.map(|(flag, _)| flag),
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
        }
        Ok(self.pipe.as_ref().expect("set above"))
    }
}

/// Counts `listener` in or out of the catchers of each of its signals, and sets
/// their default-action flags to match.
fn count(watched: &mut [Watched], listener: &Listener, catch: Catch) {
    for &signal in &*listener.signals {
        let watched = watched
            .iter_mut()
            .find(|w| w.signal == signal)
            .expect("a listener's signals are watched");
        match catch {
            Catch::Start => watched.catchers += 1,
            Catch::End => watched.catchers -= 1,
        }
        if let Some(flag) = &watched.default_action {
            // SeqCst: read by the signal handler (signal-hook's conditional
            // default loads it with SeqCst); nothing else is published through
            // it.
            flag.store(watched.catchers == 0, Ordering::SeqCst);
        }
    }
}

impl Listener {
    /// Whether its signals are caught for it: until it is removed, and with
    /// `exit_on_second_signal` only until the first one fired it.
    fn catches(&self) -> bool {
        !self.fired || !self.exit_on_second_signal
    }
}

/// Fires every listener that waits for `signal`, on the `ctx-signal` thread,
/// and hands each one's cancel to [`cancel`].
fn dispatch(signal: c_int) {
    let (name, fired) = {
        let mut state = lock();
        let State {
            signals, listeners, ..
        } = &mut *state;
        let Some(watched) = signals.iter().find(|w| w.signal == signal) else {
            debug_assert!(false, "only watched signals reach the pipe");
            return;
        };
        let name = watched.name;
        let mut fired = Vec::new();
        for listener in listeners.iter_mut() {
            if !listener.signals.contains(&signal) {
                continue;
            }
            if !listener.fired {
                listener.fired = true;
                fired.push(listener.canceler.clone());
                if listener.exit_on_second_signal {
                    count(signals, listener, Catch::End);
                }
            }
        }
        (name, fired)
    };
    // Canceled outside the lock: a cancel runs the wakers of the contexts'
    // waiters and the `Drop`s it releases, which may make or stop signal
    // contexts themselves.
    for canceler in fired {
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
