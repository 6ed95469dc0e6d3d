//! The cancellation tree.
//!
//! A context is a handle on a [`node`](node) (or one of the two roots). Cancelable
//! nodes ("carriers") keep their children in a lock-free [`ChildSet`](crate::list);
//! every other node points at the nearest carrier above it, so checking any
//! context is one load of its carrier's state word.
//!
//! # Invariants
//!
//! 1. A node's state word goes from live to done exactly once (a CAS); the reason
//!    stored then never changes ([`state`]).
//! 2. A registered child is in exactly one slot of its parent carrier's set per
//!    parent link, and that slot owns one weak reference on it.
//! 3. A child holds a strong reference on its parent, so a carrier outlives every
//!    registration in its set, and a set outlives every index handed out from it.
//! 4. Whoever empties a slot (canceler's swap, remover's CAS) owns the entry's
//!    reference and releases it exactly once.
//! 5. When a carrier's cancel returns, every carrier registered under it is done:
//!    registration and cancel form a Dekker pair (`list` module docs), and a child
//!    that registers after the cancel sees it and cancels itself.
//! 6. Cancel and drop never recurse on the tree's shape: cancel keeps an explicit
//!    stack, drop walks up the parent chain in a loop.
//!
//! # Synchronization
//!
//! | atomic | written by | ordering | pairs with |
//! |---|---|---|---|
//! | `CancelPart::state` | cancel's CAS | `SeqCst` | readers' `Acquire` load (the record); the registrant's `SeqCst` load (Dekker); the waiter's `SeqCst` RMW (lost wake-up) |
//! | `ChildSet` slots | insert's store, remove's CAS, drain's swap | `SeqCst` / `AcqRel` | each other (`list`) |
//! | `CancelPart::children` | first insert's CAS | `SeqCst` | the canceler's `SeqCst` load |
//! | `Header::strong`/`weak` | clone, drop, upgrade | as `Arc` | as `Arc` |
//! | `Callback::state` | `stop` and fire | `AcqRel` CAS | each other (`after_func`) |

pub(crate) mod cancel;
pub(crate) mod node;
pub(crate) mod state;

pub(crate) use cancel::{cancel, clone_reason, drop_node, register, release_entry};
