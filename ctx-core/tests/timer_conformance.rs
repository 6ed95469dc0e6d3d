//! The `Timer` test kit (`timer::conformance`, feature `test-util`): every check
//! run against ctx-core's own backends, and each shown to fail on a backend
//! that breaks the rule it checks.

mod support;

use ctx_core::timer::conformance::{self, Harness};
use ctx_core::timer::{Expiry, Timer, TimerKey};
use std::collections::BTreeMap;
use std::num::NonZeroU64;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The built-in thread timer, in real time.
mod std_timer {
    use ctx_core::timer::StdTimer;
    use ctx_core::timer::conformance::Harness;

    ctx_core::timer_conformance_tests!(Harness::new(StdTimer::new).armed(|t: &StdTimer| t.armed()));
}

/// The tests' manual clock: time passes only when the kit says so, and the
/// firing happens on the kit's own thread.
mod manual_timer {
    use crate::support::ManualTimer;
    use ctx_core::timer::conformance::Harness;

    fn harness() -> Harness<ManualTimer> {
        Harness::new(ManualTimer::new)
            .pass(|timer: &ManualTimer, by| {
                timer.advance(by);
            })
            .armed(ManualTimer::armed)
    }

    ctx_core::timer_conformance_tests!(harness());
}

/// The flawless variant of the broken backends below passes every check, so
/// their failures come from their flaws.
mod flawless {
    use super::{Flaw, Flawed};

    ctx_core::timer_conformance_tests!(Flawed::harness(Flaw::None));
}

/// One rule broken on purpose.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Flaw {
    None,
    /// Fires whatever is armed at the next step, due or not.
    FiresEarly,
    /// Fires a deadline that is already due from inside `arm`.
    FiresInsideArm,
    /// Every 100th `now()` is a millisecond behind.
    ClockGoesBack,
    /// Keys are reused once free (the smallest free one), so a late `disarm`
    /// removes whatever timer holds its key now.
    ReusesKeys,
    /// `arm` drops the expiry.
    NeverFires,
    /// `disarm` keeps the timer.
    KeepsDisarmed,
    /// Deadlines more than a year ahead are taken for due ones.
    FarIsNow,
    /// The backend holds a strong reference to itself.
    HoldsItself,
}

/// A manual-clock backend with a flaw, driven by the kit's `pass`.
#[derive(Debug)]
struct Flawed {
    flaw: Flaw,
    now: Mutex<Instant>,
    reads: Mutex<u64>,
    /// Armed deadlines by key.
    armed: Mutex<BTreeMap<u64, (Instant, Expiry)>>,
    next_key: Mutex<u64>,
    itself: OnceLock<Arc<Flawed>>,
}

impl Flawed {
    fn new(flaw: Flaw) -> Arc<Flawed> {
        let timer = Arc::new(Flawed {
            flaw,
            now: Mutex::new(Instant::now() + Duration::from_secs(3600)),
            reads: Mutex::new(0),
            armed: Mutex::new(BTreeMap::new()),
            next_key: Mutex::new(1),
            itself: OnceLock::new(),
        });
        if flaw == Flaw::HoldsItself {
            let _ = timer.itself.set(timer.clone());
        }
        timer
    }

    fn harness(flaw: Flaw) -> Harness<Flawed> {
        Harness::new(move || Flawed::new(flaw))
            .pass(Flawed::advance)
            .armed(Flawed::armed)
            .watchdog(Duration::from_secs(1))
    }

    fn advance(&self, by: Duration) {
        let now = {
            let mut now = self.now.lock().unwrap();
            *now += by;
            *now
        };
        let due: Vec<Expiry> = {
            let mut armed = self.armed.lock().unwrap();
            let early = self.flaw == Flaw::FiresEarly;
            let keys: Vec<u64> = armed
                .iter()
                .filter(|(_, (at, _))| early || *at <= now)
                .map(|(key, _)| *key)
                .collect();
            keys.iter()
                .map(|key| armed.remove(key).unwrap().1)
                .collect()
        };
        for expiry in due {
            expiry.fire();
        }
    }

    fn armed(&self) -> usize {
        self.armed.lock().unwrap().len()
    }
}

impl Timer for Flawed {
    fn now(&self) -> Instant {
        let now = *self.now.lock().unwrap();
        let mut reads = self.reads.lock().unwrap();
        *reads += 1;
        if self.flaw == Flaw::ClockGoesBack && reads.is_multiple_of(100) {
            return now - Duration::from_millis(1);
        }
        now
    }

    fn arm(&self, deadline: Instant, expiry: Expiry) -> Option<TimerKey> {
        let now = *self.now.lock().unwrap();
        match self.flaw {
            Flaw::NeverFires => return None,
            Flaw::FiresInsideArm if deadline <= now => {
                expiry.fire();
                return None;
            }
            _ => {}
        }
        let deadline = match self.flaw {
            Flaw::FarIsNow if deadline > now + Duration::from_secs(365 * 86_400) => now,
            _ => deadline,
        };
        let mut armed = self.armed.lock().unwrap();
        let key = if self.flaw == Flaw::ReusesKeys {
            (1..).find(|key| !armed.contains_key(key)).unwrap()
        } else {
            let mut next = self.next_key.lock().unwrap();
            *next += 1;
            *next - 1
        };
        armed.insert(key, (deadline, expiry));
        Some(TimerKey::new(NonZeroU64::new(key).unwrap()))
    }

    fn disarm(&self, key: TimerKey) {
        let key = key.get().get();
        // With reused keys, this may be a newer timer that got the key.
        let removed = match self.flaw {
            Flaw::KeepsDisarmed => None,
            _ => self.armed.lock().unwrap().remove(&key),
        };
        // Dropped outside the lock: dropping an expiry may free a context.
        drop(removed);
    }
}

/// Runs `check` against a backend with `flaw`; returns the message it failed
/// with.
fn failure(flaw: Flaw, check: fn(&Harness<Flawed>)) -> String {
    let harness = Flawed::harness(flaw);
    let payload = catch_unwind(AssertUnwindSafe(|| check(&harness)))
        .expect_err("the kit accepted a broken backend");
    match payload.downcast::<String>() {
        Ok(message) => *message,
        Err(payload) => (*payload.downcast::<&str>().unwrap()).to_owned(),
    }
}

/// One test per broken rule: the check that guards it fails on a backend that
/// breaks it, with a message that names the rule.
macro_rules! caught {
    ($($name:ident: $flaw:ident breaks $check:ident, saying $expected:literal;)*) => {$(
        #[test]
        fn $name() {
            let message = failure(Flaw::$flaw, conformance::$check);
            assert!(message.contains($expected), "{message:?} lacks {:?}", $expected);
        }
    )*};
}

caught! {
    an_early_firing_is_caught:
        FiresEarly breaks fires_at_or_after_the_deadline, saying "before it was due";
    a_backend_that_never_fires_is_caught:
        NeverFires breaks fires_at_or_after_the_deadline, saying "never fired";
    a_firing_inside_arm_is_caught:
        FiresInsideArm breaks never_fires_inside_arm, saying "from inside Timer::arm";
    a_clock_going_back_is_caught:
        ClockGoesBack breaks clock_is_monotonic, saying "not monotonic";
    a_late_disarm_that_hits_a_newer_timer_is_caught:
        ReusesKeys breaks late_disarm_is_harmless,
        saying "deadline B, armed before A's late disarm never fired";
    a_disarm_that_keeps_the_timer_is_caught:
        KeepsDisarmed breaks disarm_spares_the_others_and_releases_its_own,
        saying "armed count back to 0";
    a_far_deadline_taken_for_now_is_caught:
        FarIsNow breaks far_deadlines_are_accepted, saying "before it was due";
    a_backend_that_holds_itself_is_caught:
        HoldsItself breaks lives_as_long_as_its_contexts, saying "still alive";
}

#[test]
fn a_pass_that_moves_no_time_is_caught() {
    let harness = Harness::new(|| Flawed::new(Flaw::None)).pass(|_, _| {});
    let payload = catch_unwind(AssertUnwindSafe(|| {
        conformance::clock_is_monotonic(&harness);
    }))
    .unwrap_err();
    let message = payload.downcast_ref::<String>().unwrap();
    assert!(
        message.contains("moved the backend's clock by only"),
        "{message}"
    );
}

#[test]
fn the_harness_debug_names_the_backend() {
    let text = format!("{:?}", Flawed::harness(Flaw::None));
    assert!(
        text.contains("Flawed") && text.contains("armed: true"),
        "{text}"
    );
}
