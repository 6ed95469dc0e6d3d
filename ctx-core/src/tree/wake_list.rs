//! The wakers a cancel owes, kept until its subtree is complete.
//!
//! A walk takes the waiters' wakers out of the nodes it closes and wakes them
//! only at the end ([`Work`](super::work::Work)). A cancel of one context with
//! a waiter keeps one waker; a cancel of a root with 100,000 awaited children
//! keeps 100,000.
//!
//! [`WakeList`] keeps them without ever asking the allocator for a large
//! block: the first waker inline, the others in linked chunks of [`CHUNK`]
//! (under 1 KiB each). One growing `Vec` would ask for blocks of every
//! power-of-two size up to the total (2 MiB for 100,000 wakers), and a large
//! request is where a general-purpose allocator does its deferred
//! housekeeping: glibc's malloc, for one, first merges every small block freed
//! since its last merge (its fast bins), on the canceling thread, in the middle
//! of the cancel. With tasks completing and freeing memory all the while, a
//! cancel of 100,000 children awaited by tokio tasks paid that several times
//! over (the `CancelFanout` benchmark, `waiters=tokio-tasks`).

use smallvec::SmallVec;
use std::task::Waker;

/// Wakers per chunk: 56 × 16 bytes and a link, about 920 bytes, a small
/// request for every common allocator.
const CHUNK: usize = 56;

/// A chunk of wakers, linked to the chunk filled before it.
struct Chunk {
    wakers: SmallVec<[Waker; CHUNK]>,
    next: Option<Box<Chunk>>,
}

impl Drop for Chunk {
    /// Unlinks the chain iteratively: a recursive drop of a long list of chunks
    /// would need stack in proportion to the number of wakers.
    fn drop(&mut self) {
        let mut next = self.next.take();
        while let Some(mut chunk) = next {
            next = chunk.next.take();
        }
    }
}

/// Wakers in the order they were added: the first inline, the rest in chunks.
#[derive(Default)]
pub(crate) struct WakeList {
    /// The first waker; `None` only while the list is empty.
    first: Option<Waker>,
    /// The chunk being filled, linked to the full ones before it.
    last: Option<Box<Chunk>>,
}

impl WakeList {
    /// Adds a waker at the end.
    pub(crate) fn push(&mut self, waker: Waker) {
        if self.first.is_none() {
            self.first = Some(waker);
            return;
        }
        match &mut self.last {
            Some(chunk) if chunk.wakers.len() < CHUNK => chunk.wakers.push(waker),
            last => {
                let mut wakers = SmallVec::new();
                wakers.push(waker);
                let next = last.take();
                *last = Some(Box::new(Chunk { wakers, next }));
            }
        }
    }

    /// Whether the list holds no waker.
    pub(crate) fn is_empty(&self) -> bool {
        self.first.is_none()
    }

    /// How many wakers the list holds (a walk over its chunks: for `Debug`
    /// and tests).
    pub(crate) fn len(&self) -> usize {
        let mut len = usize::from(self.first.is_some());
        let mut chunk = self.last.as_deref();
        while let Some(c) = chunk {
            len += c.wakers.len();
            chunk = c.next.as_deref();
        }
        len
    }

    /// Empties the list, handing each waker to `each` in the order they were
    /// added. If `each` unwinds, the wakers not handed out yet are dropped.
    pub(crate) fn take_each(&mut self, mut each: impl FnMut(Waker)) {
        // Both taken before any waker is handed out: if `each` unwinds, the
        // list is empty, and the rest go with the locals.
        let first = self.first.take();
        let mut newest = self.last.take();
        if let Some(waker) = first {
            each(waker);
        }
        // The chain runs newest first: turn it around.
        let mut oldest: Option<Box<Chunk>> = None;
        while let Some(mut chunk) = newest {
            newest = chunk.next.take();
            chunk.next = oldest;
            oldest = Some(chunk);
        }
        while let Some(mut chunk) = oldest {
            oldest = chunk.next.take();
            for waker in chunk.wakers.drain(..) {
                each(waker);
            }
        }
    }
}

impl Extend<Waker> for WakeList {
    fn extend<I: IntoIterator<Item = Waker>>(&mut self, wakers: I) {
        for waker in wakers {
            self.push(waker);
        }
    }
}

#[cfg(all(test, not(ctx_loom)))]
mod tests {
    use super::*;
    use crate::wake_fn::on_wake;
    use std::sync::{Arc, Mutex};

    /// A list of `n` wakers that each record their number when woken.
    fn numbered(n: usize, woken: &Arc<Mutex<Vec<usize>>>) -> WakeList {
        let mut list = WakeList::default();
        for i in 0..n {
            let woken = woken.clone();
            list.push(on_wake(move || woken.lock().unwrap().push(i)));
        }
        list
    }

    #[test]
    fn wakers_come_out_in_the_order_they_went_in() {
        for n in [0, 1, 2, CHUNK, CHUNK + 1, CHUNK + 2, 3 * CHUNK + 5] {
            let woken = Arc::new(Mutex::new(Vec::new()));
            let mut list = numbered(n, &woken);
            assert_eq!(list.len(), n);
            assert_eq!(list.is_empty(), n == 0);
            list.take_each(Waker::wake);
            assert!(list.is_empty());
            assert_eq!(*woken.lock().unwrap(), (0..n).collect::<Vec<_>>());
            // Emptied, it takes wakers again.
            list.push(on_wake(|| {}));
            assert_eq!(list.len(), 1);
        }
    }

    #[test]
    fn an_unwinding_consumer_drops_the_rest_and_nothing_leaks() {
        let woken = Arc::new(Mutex::new(Vec::new()));
        let mut list = numbered(2 * CHUNK + 3, &woken);
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            list.take_each(|waker| {
                if woken.lock().unwrap().len() == CHUNK + 1 {
                    panic!("a consumer that unwinds");
                }
                waker.wake();
            })
        }));
        assert!(caught.is_err());
        assert_eq!(woken.lock().unwrap().len(), CHUNK + 1);
        // Every waker is gone: woken, or dropped unwoken with the rest.
        assert_eq!(Arc::strong_count(&woken), 1);
    }

    #[test]
    fn a_long_list_drops_without_deep_recursion() {
        let dropped = std::thread::Builder::new()
            .stack_size(64 * 1024)
            .spawn(|| {
                let mut list = WakeList::default();
                let waker = on_wake(|| {});
                // (Miri keeps no real stack: the length there only exercises
                // the unlinking.)
                let n = if cfg!(miri) { 2_000 } else { 200_000 };
                for _ in 0..n {
                    list.push(waker.clone());
                }
                drop(list);
            })
            .unwrap()
            .join();
        assert!(dropped.is_ok());
    }
}
