//! Merge nodes (`with_cancel_any`): one node registered with several carriers.
//!
//! Registration goes through the ordinary protocol once per parent (`register`).
//! Two races are particular to having several parents:
//!
//! * A parent found done part-way: the node is born done. Its cancel (a normal
//!   one) detaches it from the parents it already joined, after its subtree is
//!   complete.
//! * A parent canceled while the node is still joining the others: that parent's
//!   walk closes the node and, when the node is complete, detaches it from every
//!   parent whose slot index it can see (`merge_leaves_parents`). An index stored
//!   after that detach would be missed, so the registrant ends with a `SeqCst`
//!   fence and a re-check of its own state, pairing with the fence in
//!   `merge_leaves_parents`: either the walk's detach sees every index, or the
//!   registrant sees the node done and cancels it itself — as a loser, which waits
//!   for the node to complete — and then detaches it from everything.

use super::cancel;
use super::node::NodeRef;
use super::register::{Outcome, register};
use super::state::{self, Reason};
use super::work::Origin;
use crate::error::Error;
use crate::sync::{Ordering, fence};

/// Registers a fresh merge node with each of its parents' carriers, then settles
/// the races above. The caller holds a strong reference on `node`.
pub(crate) fn register_all(node: NodeRef) {
    let mut born: Option<Reason> = None;
    for (carrier, index) in node.registrations() {
        // Each slot owns a weak reference of its own.
        node.inc_weak();
        match register(carrier, node.as_entry(), Some(index), None) {
            Outcome::Registered { .. } => {}
            Outcome::Done { reason, back } => {
                if back {
                    node.dec_weak();
                }
                born = Some(reason);
                break;
            }
        }
    }
    // SeqCst fence: see the module docs.
    fence(Ordering::SeqCst);
    // Relaxed: ordered by the fence above.
    let done = state::is_done(node.cancel_part().state.load(Ordering::Relaxed));
    if born.is_some() || done {
        let reason = born.unwrap_or_else(|| Reason::plain(Error::Canceled));
        // If a parent's walk closed the node already, this loses (the walk's
        // reason stands) and waits until the node is complete; then it leaves
        // every parent whose slot the walk's detach may have missed.
        cancel::cancel(node, reason, Origin::Explicit);
        super::register::detach(node);
    }
}
