//! Inputs at and beyond the edges: enormous and zero timeouts, deadlines far in
//! the past and future, garbage timeout headers, `with_cancel_any` with no,
//! one, repeated or already-canceled parents, and cancels arriving from many
//! threads at the same moment.

mod support;

use ctx_core::{Cause, Context, Error, HeaderError, StdTimer, decode_timeout, encode_timeout};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};
use support::{Calls, ManualTimer, real_time_root, scaled};

/// A hundred years: "far in the future" for every assertion below.
const CENTURY: Duration = Duration::from_secs(100 * 365 * 86_400);

#[test]
fn an_endless_timeout_saturates_to_a_far_future_deadline() {
    let root = real_time_root();
    let now = Instant::now();
    let (ctx, cancel) = root.with_timeout(Duration::MAX);
    assert_eq!(ctx.err(), None);
    let deadline = ctx.deadline().expect("a timeout always sets a deadline");
    assert!(deadline > now + CENTURY, "{deadline:?} is not far away");
    assert!(ctx.remaining().unwrap() > CENTURY);
    let (with_cause, _c) = root.with_timeout_cause(Duration::MAX, Cause::msg("never"));
    assert_eq!(with_cause.err(), None);
    // A child asking for a shorter timeout gets its own, nearer deadline.
    let (child, _c2) = ctx.with_timeout(Duration::from_secs(3600));
    assert!(child.deadline().unwrap() < deadline);
    cancel.cancel();
    assert_eq!(child.err(), Some(Error::Canceled));
}

/// A longer timeout never gives an earlier deadline, however long: the
/// longest ones are all cut to the same far deadline, whether or not `Instant`
/// could hold the exact sum.
#[test]
fn a_longer_timeout_never_gives_an_earlier_deadline() {
    let timer = ManualTimer::new();
    let root = timer.root();
    let hours = |n: u64| Duration::from_secs(n * 3600);
    let timeouts = [
        CENTURY,
        Duration::from_secs(1 << 36) - Duration::from_nanos(1),
        Duration::from_secs(1 << 36),
        hours(99_999_999), // the longest `grpc-timeout`
        Duration::from_secs(u64::MAX / 2),
        Duration::MAX,
    ];
    let deadlines: Vec<Instant> = timeouts
        .iter()
        .map(|&timeout| root.with_timeout(timeout).0.deadline().unwrap())
        .collect();
    for (pair, timeouts) in deadlines.windows(2).zip(timeouts.windows(2)) {
        assert!(
            pair[0] <= pair[1],
            "{:?} gave a later deadline than {:?}",
            timeouts[0],
            timeouts[1]
        );
    }
    assert!(
        deadlines[0] - root.now() == CENTURY,
        "a century is kept exactly"
    );
}

#[test]
fn an_endless_timeout_on_a_private_std_timer_is_disarmed_on_cancel() {
    if cfg!(miri) {
        // The private timer's thread would still be running when Miri checks for
        // leftover threads at exit; the clock arithmetic is covered above.
        return;
    }
    let timer = StdTimer::new();
    let root = Context::background().with_timer(timer.clone());
    let (ctx, cancel) = root.with_timeout(Duration::MAX);
    let (far, cancel_far) = root.with_deadline(Instant::now() + CENTURY);
    assert_eq!(timer.armed(), 2);
    assert_eq!(ctx.err(), None);
    assert_eq!(far.err(), None);
    cancel.cancel();
    cancel_far.cancel();
    assert_eq!(timer.armed(), 0);
}

#[test]
fn a_far_future_deadline_is_kept_exactly() {
    let timer = ManualTimer::new();
    let root = timer.root();
    let at = root.now() + CENTURY;
    let (ctx, _cancel) = root.with_deadline(at);
    assert_eq!(ctx.deadline(), Some(at));
    assert_eq!(ctx.err(), None);
    assert_eq!(timer.armed(), 1);
    assert!(ctx.timeout_header().is_some());
}

#[test]
fn an_expired_deadline_is_born_done_and_arms_no_timer() {
    // Creating a private timer starts no thread until something is armed.
    let timer = StdTimer::new();
    let root = Context::background().with_timer(timer.clone());
    let now = Instant::now();
    let long_ago = now.checked_sub(Duration::from_secs(86_400)).unwrap_or(now);
    for at in [long_ago, now] {
        let (ctx, _cancel) = root.with_deadline(at);
        assert_eq!(ctx.err(), Some(Error::DeadlineExceeded));
        assert_eq!(ctx.deadline(), Some(at));
        assert_eq!(ctx.remaining(), Some(Duration::ZERO));
    }
    let (zero, _cancel) = root.with_timeout(Duration::ZERO);
    assert_eq!(zero.err(), Some(Error::DeadlineExceeded));
    let (zero_cause, _cancel) = root.with_timeout_cause(Duration::ZERO, Cause::msg("instantly"));
    assert_eq!(zero_cause.cause().unwrap().to_string(), "instantly");
    assert_eq!(timer.armed(), 0);
}

#[test]
fn an_expired_deadline_below_a_live_deadline_is_born_done_alone() {
    let timer = ManualTimer::new();
    let (parent, _cancel) = timer.root().with_timeout(Duration::from_secs(60));
    let (child, _c) = parent.with_timeout(Duration::ZERO);
    assert_eq!(child.err(), Some(Error::DeadlineExceeded));
    assert_eq!(parent.err(), None);
    assert_eq!(
        parent.live_children(),
        0,
        "the born-done child did not stay registered"
    );
    assert_eq!(timer.armed(), 1, "only the parent's timer");
}

#[test]
fn a_plain_error_given_as_a_cause_is_kept_even_if_it_differs_from_err() {
    let (ctx, cancel) = Context::background().with_cancel_cause();
    cancel.cancel(Error::DeadlineExceeded);
    assert_eq!(ctx.err(), Some(Error::Canceled));
    assert_eq!(
        ctx.cause().unwrap().as_error(),
        Some(Error::DeadlineExceeded)
    );

    let (ctx, _c) =
        Context::background().with_deadline_cause(Instant::now(), Error::DeadlineExceeded);
    assert_eq!(ctx.err(), Some(Error::DeadlineExceeded));
    assert!(ctx.cause().unwrap() == Error::DeadlineExceeded);
}

#[test]
fn odd_value_types_are_stored_and_found() {
    #[derive(Debug, PartialEq)]
    struct Zst;
    let ctx = Context::background()
        .with_value(())
        .with_value(Zst)
        .with_value(String::new())
        .with_value([0u8; 4096])
        .with_value(Box::new(5u64));
    assert_eq!(ctx.value::<()>(), Some(&()));
    assert_eq!(ctx.value::<Zst>(), Some(&Zst));
    assert_eq!(ctx.value::<String>().map(String::as_str), Some(""));
    assert_eq!(ctx.value::<[u8; 4096]>().map(|a| a.len()), Some(4096));
    assert_eq!(ctx.value::<Box<u64>>().map(|b| **b), Some(5));
    assert_eq!(ctx.value::<u64>(), None, "a Box<u64> is not a u64");
}

#[test]
fn cancel_from_many_threads_at_once_ends_everything_once() {
    for round in 0..scaled(50, 2) {
        let (root, cancel_root) = Context::background().with_cancel_cause();
        let (a, cancel_a) = root.with_cancel_cause();
        let (b, cancel_b) = a.with_value(1u8).with_cancel_cause();
        let (target, cancel_target) = b.with_cancel_cause();
        let (other, cancel_other) = Context::background().with_cancel_cause();
        let (merged, cancel_merged) = Context::with_cancel_any(&[target.clone(), other.clone()]);
        let calls = Calls::new();
        let _registrations: Vec<_> = [&root, &a, &b, &target, &merged]
            .iter()
            .map(|ctx| ctx.after_func(calls.callback()))
            .collect();
        let causes: Vec<Cause> = (0..5).map(|i| Cause::msg(format!("thread {i}"))).collect();
        let barrier = Arc::new(Barrier::new(7));
        let mut threads = Vec::new();
        let funcs = vec![cancel_root, cancel_a, cancel_b, cancel_target, cancel_other];
        for (func, cause) in funcs.into_iter().zip(causes.iter().cloned()) {
            let barrier = barrier.clone();
            threads.push(thread::spawn(move || {
                barrier.wait();
                func.cancel(cause);
            }));
        }
        {
            let barrier = barrier.clone();
            threads.push(thread::spawn(move || {
                barrier.wait();
                drop(cancel_merged);
            }));
        }
        let readers = {
            let (target, merged) = (target.clone(), merged.clone());
            let barrier = barrier.clone();
            thread::spawn(move || {
                barrier.wait();
                for _ in 0..scaled(100, 3) {
                    let _ = (target.err(), merged.cause(), target.with_cancel());
                }
            })
        };
        for thread in threads {
            thread.join().unwrap();
        }
        readers.join().unwrap();
        for ctx in [&root, &a, &b, &target, &other, &merged] {
            assert_eq!(ctx.err(), Some(Error::Canceled), "round {round}: {ctx}");
            let cause = ctx.cause().unwrap();
            assert!(
                causes.iter().any(|c| cause.same(c)) || cause == Error::Canceled,
                "round {round}: unexpected cause {cause}"
            );
        }
        assert!(
            root.cause().unwrap().same(&causes[0]),
            "nothing else can cancel the root"
        );
        // Every callback was claimed once; each runs on the runner.
        calls.wait_for(5);
        assert_eq!(root.live_children(), 0);
        assert_eq!(target.live_children(), 0);
    }
}

#[test]
fn garbage_timeout_headers_are_rejected() {
    let cases: [(&str, HeaderError); 12] = [
        ("", HeaderError::Empty),
        ("   ", HeaderError::Empty),
        ("S", HeaderError::Empty),
        ("abc", HeaderError::UnknownUnit('c')),
        ("10", HeaderError::UnknownUnit('0')),
        ("10d", HeaderError::UnknownUnit('d')),
        ("10é", HeaderError::UnknownUnit('é')),
        ("-1S", HeaderError::NotANumber),
        ("+1S", HeaderError::NotANumber),
        ("1.5S", HeaderError::NotANumber),
        ("１S", HeaderError::NotANumber),
        ("123456789S", HeaderError::TooLong),
    ];
    for (value, want) in cases {
        assert_eq!(decode_timeout(value), Err(want), "{value:?}");
        assert!(!want.to_string().is_empty());
    }
    let (parent, _cancel) = Context::background().with_cancel();
    assert!(parent.with_timeout_header("soon").is_err());
    assert_eq!(
        parent.live_children(),
        0,
        "no child is made for a bad header"
    );
}

#[test]
fn extreme_but_valid_timeout_headers_are_accepted() {
    assert_eq!(decode_timeout("0n"), Ok(Duration::ZERO));
    assert_eq!(decode_timeout(" 5S "), Ok(Duration::from_secs(5)));
    assert_eq!(decode_timeout("00000001m"), Ok(Duration::from_millis(1)));
    let largest = decode_timeout("99999999H").unwrap();
    assert_eq!(largest, Duration::from_secs(99_999_999 * 3600));
    assert_eq!(encode_timeout(Duration::MAX), "99999999H");
    assert_eq!(encode_timeout(Duration::ZERO), "0n");
    let timer = ManualTimer::new();
    let (ctx, _cancel) = timer.root().with_timeout_header("99999999H").unwrap();
    assert_eq!(ctx.err(), None);
    assert!(ctx.remaining().unwrap() > CENTURY);
    let (now, _cancel) = timer.root().with_timeout_header("0S").unwrap();
    assert_eq!(now.err(), Some(Error::DeadlineExceeded));
}

#[test]
fn with_cancel_any_of_no_parents_is_a_fresh_cancelable_root() {
    let (ctx, cancel) = Context::with_cancel_any(&[]);
    assert_eq!(ctx.err(), None);
    assert_eq!(ctx.deadline(), None);
    assert_eq!(ctx.to_string(), "context.Background.WithCancel");
    let (child, _c) = ctx.with_cancel();
    assert_eq!(ctx.live_children(), 1);
    cancel.cancel();
    assert_eq!(child.err(), Some(Error::Canceled));
}

#[test]
fn with_cancel_any_of_one_parent_is_a_plain_child() {
    let (parent, cancel) = Context::background().with_value(3u8).with_cancel_cause();
    let (ctx, _c) = Context::with_cancel_any(std::slice::from_ref(&parent));
    assert_eq!(ctx.value::<u8>(), Some(&3));
    assert_eq!(parent.live_children(), 1);
    cancel.cancel(Cause::msg("only parent"));
    assert_eq!(ctx.cause().unwrap().to_string(), "only parent");
    assert_eq!(parent.live_children(), 0);
}

#[test]
fn with_cancel_any_of_repeated_parents_ends_once_and_leaves_cleanly() {
    let (a, cancel_a) = Context::background().with_cancel();
    let layer = a.with_value(1u8);
    let parents = [a.clone(), a.clone(), layer];
    let (ctx, cancel) = Context::with_cancel_any(&parents);
    let calls = Calls::new();
    let _registration = ctx.after_func(calls.callback());
    assert!(a.live_children() >= 1);
    cancel.cancel();
    assert_eq!(ctx.err(), Some(Error::Canceled));
    assert_eq!(a.live_children(), 0, "every registration is removed");
    calls.wait_for(1);
    assert_eq!(a.err(), None);

    // Repeated parents that cancel: the child ends once, its callback runs once.
    let (ctx, _cancel) = Context::with_cancel_any(&parents);
    let calls = Calls::new();
    let registration = ctx.after_func(calls.callback());
    cancel_a.cancel();
    assert_eq!(ctx.err(), Some(Error::Canceled));
    assert_eq!(a.live_children(), 0);
    // The run was claimed once, whichever parent got there first.
    assert!(!registration.stop());
    calls.wait_for(1);
}

#[test]
fn with_cancel_any_with_an_already_canceled_parent_is_born_canceled() {
    for position in 0..3 {
        let (live1, _c1) = Context::background().with_cancel();
        let (live2, _c2) = Context::background().with_cancel();
        let (dead, cancel_dead) = Context::background().with_cancel_cause();
        let why = Cause::msg("was already gone");
        cancel_dead.cancel(why.clone());
        let mut parents = vec![live1.clone(), live2.clone()];
        parents.insert(position, dead);
        let (ctx, _cancel) = Context::with_cancel_any(&parents);
        assert_eq!(ctx.err(), Some(Error::Canceled), "position {position}");
        assert!(ctx.cause().unwrap().same(&why), "position {position}");
        assert_eq!(
            live1.live_children(),
            0,
            "position {position}: left registered"
        );
        assert_eq!(
            live2.live_children(),
            0,
            "position {position}: left registered"
        );
        let calls = Calls::new();
        let registration = ctx.after_func(calls.callback());
        assert!(
            !registration.stop(),
            "position {position}: not claimed at once"
        );
        calls.wait_for(1);
    }
}

/// Of several parents done already, the first in the slice gives the cause,
/// not the one that ended first (as documented on `with_cancel_any`).
#[test]
fn with_cancel_any_of_several_done_parents_takes_the_first_in_order() {
    let (early, cancel_early) = Context::background().with_cancel_cause();
    let (late, cancel_late) = Context::background().with_cancel_cause();
    let (early_why, late_why) = (Cause::msg("ended first"), Cause::msg("ended second"));
    cancel_early.cancel(early_why.clone());
    cancel_late.cancel(late_why.clone());
    let (ctx, _cancel) = Context::with_cancel_any(&[late.clone(), early.clone()]);
    assert!(ctx.cause().unwrap().same(&late_why));
    let (ctx, _cancel) = Context::with_cancel_any(&[early, late]);
    assert!(ctx.cause().unwrap().same(&early_why));
}

/// A parent whose deadline passed while its timer is late (and nobody read
/// it) is done as well: first in order, it gives the merge its reason, not a
/// later parent canceled since; as it would had anybody read it before.
#[test]
fn with_cancel_any_takes_a_first_parent_past_its_late_deadline() {
    for shape in ["deadline", "value below", "cancel below"] {
        let timer = ManualTimer::new();
        let root = timer.root();
        let (expired, _cancel) =
            root.with_timeout_cause(Duration::from_secs(1), Cause::msg("late"));
        timer.advance_silently(Duration::from_secs(2));
        let (_keep, first) = match shape {
            "deadline" => (None, expired.clone()),
            "value below" => (None, expired.with_value(7u8)),
            _ => {
                let (child, cancel) = expired.with_cancel();
                (Some(cancel), child)
            }
        };
        let (other, cancel_other) = root.with_cancel_cause();
        cancel_other.cancel(Cause::msg("canceled after the deadline"));
        let (merged, _cancel_merged) = Context::with_cancel_any(&[first, other.clone()]);
        assert_eq!(merged.err(), Some(Error::DeadlineExceeded), "{shape}");
        assert_eq!(merged.cause().unwrap().to_string(), "late", "{shape}");
        assert_eq!(other.live_children(), 0, "{shape}: left registered");
    }
}

#[test]
fn with_cancel_any_of_parents_that_never_end_ends_only_by_its_own_cancel() {
    let (ctx, cancel) = Context::with_cancel_any(&[
        Context::background(),
        Context::todo(),
        Context::background().with_value(1u8).without_cancel(),
    ]);
    assert_eq!(ctx.err(), None);
    assert_eq!(ctx.deadline(), None);
    cancel.cancel();
    assert_eq!(ctx.err(), Some(Error::Canceled));
}

/// More parents than a merge node keeps inline: every one of them still cancels
/// it, and every one lets go of it.
#[test]
fn with_cancel_any_of_many_parents_is_canceled_by_the_last_one() {
    let parents: Vec<_> = (0..6)
        .map(|_| Context::background().with_cancel())
        .collect();
    let contexts: Vec<Context> = parents.iter().map(|(ctx, _)| ctx.clone()).collect();
    let (merged, _cancel) = Context::with_cancel_any(&contexts);
    assert!(contexts.iter().all(|parent| parent.live_children() == 1));
    let mut parents = parents;
    let (_, last) = parents.pop().unwrap();
    last.cancel();
    assert_eq!(merged.err(), Some(Error::Canceled));
    assert!(contexts.iter().all(|parent| parent.live_children() == 0));
}
