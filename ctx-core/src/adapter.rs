//! Support for runtime adapters: the pieces an adapter crate builds its helpers
//! from, so that every runtime follows the same rules.
//!
//! For authors of adapter crates (ctx-tokio, ctx-async-std and ctx-blocking are
//! built on these) and of helpers for runtimes ctx does not cover; application
//! and library code never needs this module. Timer backends have their own
//! module, [`timer`](crate::timer).
//!
//! * [`GroupCancel`]: the whole rule set of an error group (which tasks are
//!   accepted, the first failure as the cause, panics as
//!   [`PanicError`](crate::PanicError), stop, the result); an adapter adds only
//!   spawning, limiting and joining.

pub use crate::group::GroupCancel;

use std::any::Any;

/// Drops the payload of a caught panic without letting a second panic out.
///
/// A payload can be any value (`std::panic::panic_any`), so its `Drop` is user
/// code too: dropped plainly after a `catch_unwind`, one that panics would
/// unwind out of the code that meant to contain the first panic (a timer's
/// thread, a signal watcher, a group). Such a payload is leaked instead, with
/// the second payload.
///
/// ```
/// let caught = std::panic::catch_unwind(|| panic!("a task failed"));
/// ctx_core::adapter::drop_panic_payload(caught.unwrap_err());
/// ```
pub fn drop_panic_payload(payload: Box<dyn Any + Send>) {
    let dropped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || drop(payload)));
    if let Err(again) = dropped {
        std::mem::forget(again);
    }
}
