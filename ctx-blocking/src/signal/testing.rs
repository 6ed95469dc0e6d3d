//! Test support for real signals, shared by every adapter's signal tests
//! (`ctx-*/tests/signal_raise.rs`): the harness, and the scenarios every adapter
//! runs. Semver-exempt, not part of the API: it is here, in the crate that
//! holds the watcher, so that each adapter's package tests it without a file
//! from outside its own directory. Reached as `ctx_blocking::__private`.
//!
//! A signal's disposition is process-wide, and a scenario may end its process
//! on purpose, so each one runs in a child: the test binary started again to
//! run only that test, with `CTX_SIGNAL_TEST_CHILD` set to its name. The child
//! prints a line per stage it passed; the parent checks how the child ended
//! (killed by which signal, or exited) and the stages it printed. A child whose
//! scenario returns exits with status 0, so a child that should have been
//! killed is seen to survive.

use crate::SignalStop;
use ctx_core::{Context, Error, SignalError};
use std::ffi::c_int;
use std::os::unix::process::CommandExt;
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

/// How long a child or a wait may take before the watchdog calls it hung:
/// generous, so that only a real hang (never a slow machine) fails a test.
pub const WATCHDOG: Duration = Duration::from_secs(60);

/// Set in a child to the name of the test it runs.
const CHILD: &str = "CTX_SIGNAL_TEST_CHILD";

/// The signals the scenarios raise, reset to their default action in every
/// child ([`in_child_with`]).
const DEFAULT_IN_CHILD: [libc::c_int; 5] = [
    libc::SIGINT,
    libc::SIGTERM,
    libc::SIGHUP,
    libc::SIGQUIT,
    libc::SIGUSR1,
];

/// How a child ended.
#[must_use]
#[derive(Debug)]
pub struct Ended {
    test: String,
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

/// In the child started for `test`: runs `scenario`, then exits with status 0.
/// In the parent: starts that child and returns how it ended.
pub fn in_child(test: &str, scenario: impl FnOnce()) -> Ended {
    in_child_with(test, |_| {}, scenario)
}

/// [`in_child`], with `configure` applied to the child's command.
pub fn in_child_with(
    test: &str,
    configure: impl FnOnce(&mut Command),
    scenario: impl FnOnce(),
) -> Ended {
    if std::env::var_os(CHILD).is_some_and(|name| name == test) {
        scenario();
        std::process::exit(0);
    }
    let mut command = Command::new(std::env::current_exe().expect("the test binary"));
    command
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD, test)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // The scenarios start from the default dispositions, whatever this test
    // run inherited: a background job of a non-interactive shell starts with
    // SIGINT ignored, which the watcher keeps ignored (as Go does), so a
    // scenario expecting death by SIGINT would see its child survive.
    // `configure` comes after, so a scenario can still start ignoring one.
    // SAFETY: the closure runs in the forked child before `exec`, and only
    // calls `signal`, which is async-signal-safe.
    unsafe {
        command.pre_exec(|| {
            for signal in DEFAULT_IN_CHILD {
                libc::signal(signal, libc::SIG_DFL);
            }
            Ok(())
        })
    };
    configure(&mut command);
    let child = command.spawn().expect("start the child");
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let Ok(output) = rx.recv_timeout(WATCHDOG) else {
        let pid = libc::pid_t::try_from(pid).expect("a pid");
        // SAFETY: `kill` only sends a signal; `pid` is our child, which has not
        // been reaped (its waiter is still waiting), so the pid is still its.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        panic!("{test}: the child still runs after {WATCHDOG:?}, it hangs");
    };
    let output = output.expect("wait for the child");
    Ended {
        test: test.to_owned(),
        status: output.status,
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

impl Ended {
    /// Asserts that the child printed `stages`, then was killed by `signal`.
    pub fn killed_by(&self, signal: c_int, stages: &[&str]) {
        self.passed(stages);
        assert_eq!(
            self.status.signal(),
            Some(signal),
            "{}: expected death by signal {signal}, got {}\n{self}",
            self.test,
            self.status
        );
    }

    /// Asserts that the child printed `stages`, then exited with status 0.
    pub fn survived(&self, stages: &[&str]) {
        self.passed(stages);
        assert!(
            self.status.success(),
            "{}: expected to survive, got {}\n{self}",
            self.test,
            self.status
        );
    }

    fn passed(&self, stages: &[&str]) {
        for stage in stages {
            assert!(
                // Not at a line's start: libtest's "test name ... " comes first.
                self.stdout.contains(&format!("stage: {stage}\n")),
                "{}: the child did not reach stage {stage:?} ({})\n{self}",
                self.test,
                self.status
            );
        }
    }
}

impl std::fmt::Display for Ended {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "--- stdout ---\n{}--- stderr ---\n{}",
            self.stdout, self.stderr
        )
    }
}

/// Tells the parent that the child passed `stage`.
pub fn stage(stage: &str) {
    println!("stage: {stage}");
}

/// Sends `signal` to the calling thread `times` times. Each one is handled before
/// `raise` returns.
pub fn raise(signal: c_int, times: usize) {
    for _ in 0..times {
        // SAFETY: `raise` only sends a signal to the calling thread.
        assert_eq!(unsafe { libc::raise(signal) }, 0);
    }
}

/// Asserts that `ctx` was canceled by the signal named `name`.
pub fn assert_canceled_by(ctx: &Context, name: &str) {
    assert_eq!(ctx.err(), Some(Error::Canceled));
    let cause = ctx.cause().expect("a done context has a cause");
    let signal = cause.downcast_ref::<SignalError>();
    assert_eq!(signal.map(|s| s.signal), Some(name), "cause: {cause}");
    assert_eq!(cause.to_string(), format!("received {name}"));
}

// ===== the scenarios every adapter runs =====

/// The tests every adapter runs, for its signal contexts: `start` makes its
/// default one, `opted_in` one with `exit_on_second_signal`, whose second
/// signal is `second: (number, name)`; `wait` waits for a context the adapter's
/// way and tells whether it is done within [`WATCHDOG`].
#[doc(hidden)]
#[macro_export]
macro_rules! __every_adapter_runs {
    (
        start: $start:expr,
        opted_in: $opted_in:expr,
        second: $second:expr,
        wait: $wait:expr $(,)?
    ) => {
        #[test]
        fn burst_is_caught_until_stop() {
            $crate::__private::signal_testing::burst_is_caught_until_stop(
                stringify!(burst_is_caught_until_stop),
                $start,
                $wait,
            );
        }

        #[test]
        fn a_second_signal_exits_when_opted_in() {
            $crate::__private::signal_testing::second_signal_exits(
                stringify!(a_second_signal_exits_when_opted_in),
                $second,
                $opted_in,
                $wait,
            );
        }
    };
}

/// A burst of ten SIGINTs is caught while the stop handle lives, also once the
/// context is done; after the stop, SIGINT gets its default action and kills
/// the process.
///
pub fn burst_is_caught_until_stop(
    test: &str,
    start: impl FnOnce() -> (Context, SignalStop),
    wait: impl Fn(&Context) -> bool,
) {
    in_child(test, || {
        let (ctx, stop) = start();
        raise(libc::SIGINT, 10);
        assert!(wait(&ctx), "SIGINT did not cancel the context");
        assert_canceled_by(&ctx, "SIGINT");
        stage("burst caught");
        raise(libc::SIGINT, 10);
        stage("caught after done");
        stop.stop();
        raise(libc::SIGINT, 1);
    })
    .killed_by(libc::SIGINT, &["burst caught", "caught after done"]);
}

/// Opted in: the first `signal` cancels the context, the next one kills the
/// process while the stop handle still lives.
pub fn second_signal_exits(
    test: &str,
    (signal, name): (c_int, &str),
    start: impl FnOnce() -> (Context, SignalStop),
    wait: impl Fn(&Context) -> bool,
) {
    in_child(test, || {
        let (ctx, _stop) = start();
        raise(signal, 1);
        assert!(wait(&ctx), "{name} did not cancel the context");
        assert_canceled_by(&ctx, name);
        stage("first caught");
        raise(signal, 1);
    })
    .killed_by(signal, &["first caught"]);
}
