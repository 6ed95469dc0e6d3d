//! A `Group::spawn` whose thread the OS refuses to create (it panics, as
//! documented) gives back the slot it took under a limit.
//!
//! Alone in its test binary: it makes thread creation fail by lowering the
//! process's address-space limit (`RLIMIT_AS`) for a moment, which would make
//! any test running beside it fail its allocations too.
#![cfg(all(target_os = "linux", not(miri)))]

mod support;

use ctx_blocking::{background, scope_with_limit};
use std::panic::{AssertUnwindSafe, catch_unwind};
use support::within;

/// The process's current address-space size, in bytes.
fn vm_size() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let line = status
        .lines()
        .find(|line| line.starts_with("VmSize:"))
        .expect("a VmSize line");
    let kib: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|kib| kib.parse().ok())
        .expect("VmSize in kB");
    kib * 1024
}

/// Runs `f` while no new thread stack can be mapped (`RLIMIT_AS` just above
/// the current size), then restores the limit.
fn without_new_threads<T>(f: impl FnOnce() -> T) -> T {
    let mut old = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `getrlimit` writes the current limit into `old`, which we own.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_AS, &mut old) }, 0);
    let tight = libc::rlimit {
        rlim_cur: vm_size() + 256 * 1024,
        rlim_max: old.rlim_max,
    };
    // SAFETY: `setrlimit` only reads `tight`, a valid limit below the hard one.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_AS, &tight) }, 0);
    let out = catch_unwind(AssertUnwindSafe(f));
    // SAFETY: as above, with the limit read before.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_AS, &old) }, 0);
    out.unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

#[test]
fn a_spawn_whose_thread_cannot_be_created_gives_its_slot_back() {
    let (refused, try_spawned, spawned) = within("the group with one slot", || {
        let mut outcome = (false, false, false);
        let result = scope_with_limit(&background(), 1, |group| {
            // The OS refuses the thread: `spawn` panics (documented).
            outcome.0 = without_new_threads(|| {
                catch_unwind(AssertUnwindSafe(|| {
                    group.spawn(|_ctx| Ok::<(), std::io::Error>(()))
                }))
                .is_err()
            });
            // Threads can be created again and nothing runs in the group: its
            // one slot is free, for `try_spawn`, then for a `spawn` (which
            // blocks until the thread `try_spawn` started gives it back). With
            // the slot lost, that `spawn` would block until the group's
            // context ends (never): the group is stopped instead.
            outcome.1 = group.try_spawn(|_ctx| Ok::<(), std::io::Error>(()));
            if outcome.1 {
                outcome.2 = group.spawn(|_ctx| Ok::<(), std::io::Error>(()));
            } else {
                group.stop();
            }
        });
        assert!(result.is_ok(), "the group failed: {result:?}");
        outcome
    });
    assert!(
        refused,
        "the spawn under a tight address-space limit did not panic"
    );
    assert!(
        try_spawned,
        "try_spawn refused: the failed spawn kept the only slot"
    );
    assert!(spawned, "spawn refused");
}
