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

use super::node::NodeRef;
use super::state::{self, WAITERS};
use crate::sync::Ordering;
use crate::waiter::Listener;

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
