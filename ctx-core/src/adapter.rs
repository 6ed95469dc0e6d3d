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
