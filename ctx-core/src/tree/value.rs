//! Value nodes, and the key summary that ends a lookup that misses early.
//!
//! `value::<T>()` walks up from a context, comparing each node's value type
//! with `T`: O(depth). Most lookups of a deep chain that miss (optional
//! values, middleware asking "is there a request id?") would walk to the root.
//! So each value node also carries [`Keys`]: a 64-bit summary of the value
//! types at and above it, one bit per type, picked by the type's id. A
//! lookup that meets a value node whose summary lacks `T`'s bit knows that
//! no node above holds a `T`, and stops there.
//!
//! Types share bits (a Bloom filter with one hash), so a set bit only says
//! "maybe", and the walk goes on as it would without summaries. Only the
//! first value node's summary is read: it covers every node above, and
//! reading each one on the way costs a walk that finds its value more than
//! the rare shared bit saves.
//!
//! A new value node takes its summary from the nearest value node above, found
//! within [`LOOK_UP`] steps; a root above means nothing more is there. Further
//! up, or past a value node whose summary cannot be read (a value type
//! aligned to more than the header, whose payload does not start right after
//! it), it assumes every bit: that node's lookups then walk as far as they
//! would without summaries, never less far than they must.

use super::node::{Header, Kind, Node, NodeRef};
use std::any::TypeId;
use std::hash::{Hash, Hasher};

/// The payload of a value node: its summary, then the value.
#[repr(C)]
#[derive(Debug)]
pub(crate) struct ValuePart<T> {
    pub(crate) keys: Keys,
    pub(crate) value: T,
}

impl<T: 'static> ValuePart<T> {
    /// Whether the summary of a node carrying this payload starts right after
    /// the header, where [`NodeRef::value_keys`] reads it.
    pub(crate) const KEYS_AFTER_HEADER: bool =
        std::mem::offset_of!(Node<ValuePart<T>>, payload) == std::mem::size_of::<Header>();

    /// The payload of a new value node below `parent`.
    pub(crate) fn new(parent: NodeRef, value: T) -> ValuePart<T> {
        ValuePart {
            keys: Keys(Keys::bit::<T>() | Keys::above(parent)),
            value,
        }
    }
}

/// The nearest value of type `T` at or above `node` (`Context::value`).
///
/// The hot walk of the crate: written out rather than through
/// `NodeRef::ancestors`, which costs a few percent here.
#[inline]
pub(crate) fn find<'a, T: 'static>(mut node: Option<NodeRef>) -> Option<&'a T> {
    // Up to the first value node with a summary: if that rules `T` out, done.
    while let Some(current) = node {
        if let Some(value) = held(current) {
            return Some(value);
        }
        node = current.header().parent.real();
        if current.header().vtable.value_keys {
            // SAFETY: `value_keys` is checked first.
            if !unsafe { current.keys_unchecked() }.may_hold(Keys::bit::<T>()) {
                return None;
            }
            break;
        }
    }
    // Then the plain walk (see the module on why no further summary).
    find_plain(node)
}

/// The plain walk of [`find`], from `node` up: kept out of line, where it
/// compiles to the tight loop it was before summaries.
#[inline(never)]
fn find_plain<'a, T: 'static>(mut node: Option<NodeRef>) -> Option<&'a T> {
    while let Some(current) = node {
        if let Some(value) = held(current) {
            return Some(value);
        }
        node = current.header().parent.real();
    }
    None
}

/// `current`'s value, if it is a value node of type `T`.
#[inline(always)]
fn held<'a, T: 'static>(current: NodeRef) -> Option<&'a T> {
    (current.header().vtable.type_id == Some(TypeId::of::<ValuePart<T>>())).then(|| {
        // SAFETY: the vtable's type id says this node carries a
        // `ValuePart<T>`; the caller's handle keeps the whole chain alive for
        // the borrow.
        unsafe { &current.payload::<ValuePart<T>>().value }
    })
}

/// The value types at and above a value node, one bit each (see the module).
#[derive(Clone, Copy, Debug)]
#[repr(transparent)]
pub(crate) struct Keys(u64);

/// How many nodes a new value node looks through for the summary above it.
pub(crate) const LOOK_UP: usize = 8;

impl Keys {
    /// Every type: nothing is ruled out.
    const ALL: u64 = u64::MAX;

    /// `T`'s bit. Folds to a constant: the type id is one.
    #[inline]
    pub(crate) fn bit<T: 'static>() -> u64 {
        let mut hasher = FirstWord(0);
        TypeId::of::<ValuePart<T>>().hash(&mut hasher);
        // A type id is a hash already; the multiply spreads whichever of its
        // bits the `Hash` impl hands over into the top six, which pick the bit.
        1 << (hasher.0.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 58)
    }

    /// The summary of the value types at and above `node`.
    fn above(mut node: NodeRef) -> u64 {
        for _ in 0..LOOK_UP {
            let Some(current) = node.real() else {
                return 0;
            };
            if let Some(keys) = current.value_keys() {
                return keys;
            }
            node = current.header().parent;
        }
        Keys::ALL
    }

    /// Whether a type whose bit is `bit` may be held at or above this node.
    #[inline]
    pub(crate) fn may_hold(self, bit: u64) -> bool {
        self.0 & bit != 0
    }
}

impl NodeRef {
    /// The summary of a value node (every bit if it cannot be read), or
    /// `None` for other kinds.
    fn value_keys(self) -> Option<u64> {
        let vtable = self.header().vtable;
        if vtable.value_keys {
            // SAFETY: just checked; the caller's handle keeps the node alive.
            Some(unsafe { self.keys_unchecked() }.0)
        } else {
            (vtable.kind == Kind::Value).then_some(Keys::ALL)
        }
    }

    /// The summary of a value node whose vtable says it can be read here.
    ///
    /// # Safety
    ///
    /// The node's vtable must have `value_keys` set, and the node must be alive.
    #[inline]
    pub(crate) unsafe fn keys_unchecked(self) -> Keys {
        // SAFETY: by the caller's contract, the payload is a `ValuePart`
        // starting right after the header, and `ValuePart` is `repr(C)` with
        // its `Keys` first.
        unsafe { *self.payload::<Keys>() }
    }
}

/// A `Hasher` that keeps what it is given (a type id's `Hash`).
struct FirstWord(u64);

impl Hasher for FirstWord {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(byte);
        }
    }

    fn write_u64(&mut self, word: u64) {
        self.0 ^= word;
    }
}

#[cfg(all(test, not(ctx_loom)))]
mod tests {
    use super::*;
    use crate::Context;

    struct Wanted(u8);

    #[test]
    fn a_bit_is_one_bit_and_stable() {
        assert_eq!(Keys::bit::<u8>().count_ones(), 1);
        assert_eq!(Keys::bit::<u8>(), Keys::bit::<u8>());
        // 64 bits: among these eight types at least two bits differ.
        let bits = [
            Keys::bit::<u8>(),
            Keys::bit::<u16>(),
            Keys::bit::<u32>(),
            Keys::bit::<u64>(),
            Keys::bit::<i8>(),
            Keys::bit::<i16>(),
            Keys::bit::<String>(),
            Keys::bit::<Wanted>(),
        ];
        assert!(bits.iter().any(|&bit| bit != bits[0]));
    }

    #[test]
    fn summaries_hold_every_type_above() {
        let ctx = Context::background().with_value(1u8).with_cancel().0;
        let ctx = ctx.with_value(2u16).without_cancel().with_value(3u32);
        let keys = ctx.node().unwrap().value_keys().unwrap();
        for bit in [Keys::bit::<u8>(), Keys::bit::<u16>(), Keys::bit::<u32>()] {
            assert!(Keys(keys).may_hold(bit));
        }
        // A root above: nothing else is assumed.
        let alone = Context::background().with_value(Wanted(0));
        assert_eq!(
            alone.node().unwrap().value_keys(),
            Some(Keys::bit::<Wanted>())
        );
    }

    #[test]
    fn far_above_or_unreadable_assumes_every_type() {
        let mut ctx = Context::background().with_value(1u8);
        let mut cancels = Vec::new();
        for _ in 0..LOOK_UP {
            let (child, cancel) = ctx.with_cancel();
            ctx = child;
            cancels.push(cancel);
        }
        let far = ctx.with_value(2u16);
        assert_eq!(far.node().unwrap().value_keys(), Some(u64::MAX));
        assert_eq!(far.value::<u8>(), Some(&1));

        #[repr(align(64))]
        struct Wide(u8);
        const { assert!(!ValuePart::<Wide>::KEYS_AFTER_HEADER) };
        let below_wide = Context::background().with_value(Wide(7)).with_value(2u16);
        assert_eq!(below_wide.node().unwrap().value_keys(), Some(u64::MAX));
        assert_eq!(below_wide.value::<Wide>().map(|w| w.0), Some(7));
    }

    /// One of 24 value types: more types than the summary has bits to spare
    /// in a chain of 30, so bits are shared.
    #[allow(dead_code, reason = "only the type matters")]
    struct Tagged<const N: usize>(u8);
    #[allow(dead_code, reason = "only the type matters")]
    #[repr(align(32))]
    struct Align32(u8);
    #[allow(dead_code, reason = "only the type matters")]
    #[repr(align(64))]
    struct Align64(u8);

    /// Calls `$each!(type, value)` for every test value type.
    macro_rules! each_type {
        ($each:ident) => {
            each_type!(@tags $each 0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23);
            $each!(u128, 7u128);
            $each!((), ());
            $each!(Align32, Align32(3));
            $each!(Align64, Align64(4));
        };
        (@tags $each:ident $($n:literal)*) => {
            $($each!(Tagged<$n>, Tagged::<$n>($n));)*
        };
    }

    /// Random chains of every kind of node: after each step, the lookup with
    /// summaries finds exactly what the plain walk finds, for every type.
    #[test]
    fn random_chains_find_what_the_plain_walk_finds() {
        let mut seed: u64 = 0x5eed_cafe;
        let mut random = move |n: usize| {
            seed = seed
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            usize::try_from(seed >> 33).unwrap() % n
        };
        const TYPES: usize = 28;
        let chains = if cfg!(miri) { 10 } else { 400 };
        for _ in 0..chains {
            let mut cancels = Vec::new();
            let mut others = vec![Context::background()];
            let mut ctx = Context::background();
            for _ in 0..random(30) {
                let pick = random(TYPES + 9);
                let mut index = 0;
                macro_rules! add {
                    ($t:ty, $value:expr) => {
                        if pick == index {
                            ctx = ctx.with_value::<$t>($value);
                        }
                        index += 1;
                    };
                }
                each_type!(add);
                assert_eq!(index, TYPES);
                match pick.checked_sub(TYPES) {
                    None => {}
                    Some(0 | 1) => {
                        let (child, cancel) = ctx.with_cancel();
                        cancels.push(cancel);
                        ctx = child;
                    }
                    Some(2) => ctx = ctx.without_cancel(),
                    Some(3) => ctx = ctx.with_timer(crate::StdTimer::global()),
                    Some(4) => {
                        let (child, cancel) =
                            ctx.with_timeout(std::time::Duration::from_secs(3600));
                        cancels.push(cancel);
                        ctx = child;
                    }
                    Some(5 | 6) => {
                        let other = others[random(others.len())].clone();
                        let parents = if random(2) == 0 {
                            [ctx.clone(), other]
                        } else {
                            [other, ctx.clone()]
                        };
                        let (child, cancel) = Context::with_cancel_any(&parents);
                        cancels.push(cancel);
                        ctx = child;
                    }
                    Some(7) => others.push(ctx.clone()),
                    Some(8) => {
                        // Born done below a canceled node.
                        let (child, cancel) = ctx.with_cancel();
                        cancel.cancel();
                        ctx = child;
                    }
                    _ => {}
                }
                macro_rules! check {
                    ($t:ty, $value:expr) => {
                        let with_summaries = find::<$t>(ctx.node()).map(std::ptr::from_ref);
                        let plain = find_plain::<$t>(ctx.node()).map(std::ptr::from_ref);
                        assert_eq!(with_summaries, plain, "{}", std::any::type_name::<$t>());
                    };
                }
                each_type!(check);
            }
        }
    }

    #[test]
    fn a_lookup_finds_values_past_shared_bits() {
        // Whatever the bits: every value is found, shadowing holds, and a
        // missing type is missing, through chains of every kind of node.
        let ctx = Context::background().with_value(Wanted(1));
        let (ctx, _cancel) = ctx.with_value(5u64).with_cancel();
        let ctx = ctx.with_value(Wanted(2)).with_value(6u32).without_cancel();
        assert_eq!(ctx.value::<Wanted>().map(|w| w.0), Some(2));
        assert_eq!(ctx.value::<u64>(), Some(&5));
        assert_eq!(ctx.value::<u32>(), Some(&6));
        assert!(ctx.value::<u16>().is_none());
        assert!(ctx.value::<String>().is_none());
    }
}
