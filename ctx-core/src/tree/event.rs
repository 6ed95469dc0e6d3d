//! The list where a carrier's waiters after the first sleep (the first has the
//! inline slot, see `wait`), and the event under `adapter::Event`.
//!
//! A list of entries behind one lock, allocated by the first listener: an
//! entry is a listener's waker, or the mark that a notify took it. A listener
//! is its entry's index. Only the listener frees its entry, so an index is
//! never reused under its owner's feet, whatever notifies came in between.
//!
//! No executor code runs under the lock: a waker is cloned before the lock is
//! taken, an old one dropped after it is released, and a notify only moves the
//! wakers out (into a [`WakeList`]) and wakes them once the lock is released,
//! each guarded, or leaves them to its caller (a walk wakes them once its
//! subtree is complete). So a waker that panics, or one whose `wake` polls
//! the task inline and drops its listener, finds the lock free.
//!
//! Why no wake-up is lost: a listener's entry goes in under the lock before
//! its owner checks the condition again (for a carrier: the waiter's `SeqCst`
//! RMW of the state word, see `wait`); a notify comes after the condition
//! changed (the close) and takes the lock. If the check saw the old condition,
//! the entry was in before the notify's lock, which finds it.
//!
//! The same code runs under loom (`crate::sync`'s `Arc`, `Mutex` and atomics),
//! so the waiter models check this list itself.

use super::wake_list::WakeList;
use super::work::{self, Panic};
use crate::sync::{Arc, AtomicPtr, Mutex, MutexGuard, Ordering, fence};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::ptr;
use std::task::{Context, Poll, Waker};

/// An event: 8 bytes until the first listener allocates its list.
pub(crate) struct Event(AtomicPtr<Shared>);

/// The list, shared by the event and the listeners of `adapter::Event`.
struct Shared {
    list: Mutex<List>,
}

#[derive(Default)]
struct List {
    entries: Vec<Entry>,
    /// The first vacant entry's index + 1; 0 when none is vacant.
    free: u32,
    /// Entries that are not vacant.
    taken: u32,
}

enum Entry {
    /// Free for the next listener; the next vacant entry's index + 1 (0: none).
    Vacant(u32),
    /// A listener waiting, with the waker its last poll gave (`None` before its
    /// first poll).
    Waiting(Option<Waker>),
    /// A notify came after the listener's `listen`, and took its waker.
    Notified,
}

/// A listener's entry in an event's list.
pub(crate) type Key = u32;

/// Entries an empty list keeps room for (384 bytes); a bigger one gives its
/// memory back.
const KEPT: usize = 16;

/// A lock whose poisoning only says that an earlier holder unwound: no user or
/// executor code runs under it, and the list stays whole at every step.
fn lock(mutex: &Mutex<List>) -> MutexGuard<'_, List> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl List {
    /// A new entry for `waker`.
    ///
    /// # Panics
    ///
    /// With 2³² − 1 listeners on one event at once (about 100 GB of entries),
    /// before the list changes.
    fn insert(&mut self, waker: Option<Waker>) -> Key {
        let entry = Entry::Waiting(waker);
        if self.free != 0 {
            let key = self.free - 1;
            let slot = &mut self.entries[key as usize];
            let Entry::Vacant(next) = *slot else {
                unreachable!("the free chain holds vacant entries only");
            };
            self.free = next;
            *slot = entry;
            self.taken += 1;
            return key;
        }
        let key = Key::try_from(self.entries.len())
            .ok()
            .filter(|&key| key < Key::MAX)
            .expect("an event holds at most 2^32 - 1 listeners at once");
        self.entries.push(entry);
        self.taken += 1;
        key
    }

    /// Frees `key`'s entry; returns it (its waker is the caller's to drop,
    /// after the lock). With its last entry the list starts over, and gives
    /// its memory back if it grew past [`KEPT`] entries (a burst of waiters
    /// keeps nothing once it is over; a waiter that comes and goes allocates
    /// once). While any entry is taken, the list keeps the room of the most
    /// entries it held at once, reused by later waiters: keys are indices, so
    /// it cannot shrink under a live one (as a child set keeps its slots; see
    /// `Context`'s "Memory" docs).
    fn remove(&mut self, key: Key) -> (Entry, Vec<Entry>) {
        debug_assert!(!matches!(self.entries[key as usize], Entry::Vacant(_)));
        let entry = std::mem::replace(&mut self.entries[key as usize], Entry::Vacant(self.free));
        self.free = key + 1;
        self.taken -= 1;
        let mut emptied = Vec::new();
        if self.taken == 0 {
            self.free = 0;
            if self.entries.capacity() > KEPT {
                emptied = std::mem::take(&mut self.entries);
            } else {
                self.entries.clear();
            }
        }
        (entry, emptied)
    }

    /// Marks every waiting entry notified and moves its waker into `wakers`.
    fn notify(&mut self, wakers: &mut WakeList) {
        for entry in &mut self.entries {
            if let Entry::Waiting(waker) = entry {
                wakers.extend(waker.take());
                *entry = Entry::Notified;
            }
        }
    }
}

impl Shared {
    fn new() -> Shared {
        Shared {
            list: Mutex::new(List::default()),
        }
    }

    /// A new listener's entry, with `waker` cloned (before the lock).
    fn listen(&self, waker: Option<&Waker>) -> Key {
        let waker = waker.cloned();
        lock(&self.list).insert(waker)
    }

    /// `Ready` if a notify came after `key`'s `listen`; else keeps `waker` for
    /// the next notify (a clone, unless the entry's wakes the same task).
    fn poll(&self, key: Key, waker: &Waker) -> Poll<()> {
        {
            let list = lock(&self.list);
            match &list.entries[key as usize] {
                Entry::Notified => return Poll::Ready(()),
                Entry::Waiting(Some(current)) if current.will_wake(waker) => {
                    return Poll::Pending;
                }
                Entry::Waiting(_) => {}
                Entry::Vacant(_) => unreachable!("a listener's entry is freed only by its owner"),
            }
        }
        // Executor code (the clone, the old waker's drop) outside the lock.
        let fresh = waker.clone();
        let mut list = lock(&self.list);
        let Entry::Waiting(current) = &mut list.entries[key as usize] else {
            // Notified meanwhile.
            drop(list);
            drop(fresh);
            return Poll::Ready(());
        };
        let old = current.replace(fresh);
        drop(list);
        drop(old);
        Poll::Pending
    }

    /// Frees `key`'s entry.
    fn release(&self, key: Key) {
        let (entry, emptied) = lock(&self.list).remove(key);
        // A waker's drop is executor code: after the lock.
        drop(entry);
        drop(emptied);
    }

    fn notify_into(&self, wakers: &mut WakeList) {
        lock(&self.list).notify(wakers);
    }
}

impl Event {
    pub(crate) fn new() -> Event {
        Event(AtomicPtr::new(ptr::null_mut()))
    }

    /// The list, if a listener ever allocated it.
    fn shared(&self) -> Option<&Shared> {
        // Acquire: pairs with the installing CAS, so the list is seen whole.
        let shared = self.0.load(Ordering::Acquire);
        // SAFETY: a non-null pointer came from `Arc::into_raw`, and the event owns
        // that reference until it is dropped, which needs `&mut self`.
        unsafe { shared.as_ref() }
    }

    /// The list, allocated by the first listener.
    fn shared_or_install(&self) -> &Shared {
        // SAFETY: the event's own reference, alive as long as `self` (see `shared`).
        unsafe { &*self.installed() }
    }

    /// The pointer to the list, allocated by the first listener: the one
    /// `Arc::into_raw` gave, whose provenance covers the reference counts (a
    /// `&Shared` covers the list only).
    fn installed(&self) -> *const Shared {
        // Acquire: as in `shared`.
        let current = self.0.load(Ordering::Acquire);
        if !current.is_null() {
            return current;
        }
        let fresh = Arc::into_raw(Arc::new(Shared::new())).cast_mut();
        // AcqRel: releases the fresh list to other listeners and the notifier;
        // acquires the winner's if another listener came first.
        match self
            .0
            .compare_exchange(ptr::null_mut(), fresh, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => fresh,
            Err(winner) => {
                // SAFETY: ours from `into_raw` above, never published.
                drop(unsafe { Arc::from_raw(fresh) });
                winner
            }
        }
    }

    /// Joins the list with `waker` (cloned), for an owner that keeps the event
    /// alive while it holds the key (a waiter on its carrier).
    pub(crate) fn listen_key(&self, waker: &Waker) -> Key {
        self.shared_or_install().listen(Some(waker))
    }

    /// [`Listener`]'s poll, for a key from [`listen_key`](Self::listen_key).
    pub(crate) fn poll_key(&self, key: Key, waker: &Waker) -> Poll<()> {
        self.shared()
            .expect("a key comes from the event's list")
            .poll(key, waker)
    }

    /// Frees a key from [`listen_key`](Self::listen_key).
    pub(crate) fn release_key(&self, key: Key) {
        self.shared()
            .expect("a key comes from the event's list")
            .release(key);
    }

    /// Joins the list: a listener that holds the list itself, for a caller
    /// that checks its condition next and notifies with
    /// [`notify_all_after_change`](Self::notify_all_after_change)
    /// (`adapter::Event`).
    pub(crate) fn listen(&self) -> Listener {
        let installed = self.installed();
        // SAFETY: `installed` is the event's own reference (see `shared`), alive
        // while `self` is; this adds one for the listener.
        let shared = unsafe {
            Arc::increment_strong_count(installed);
            Arc::from_raw(installed)
        };
        let key = shared.listen(None);
        // One side of a Dekker pair with `notify_all_after_change`'s fence: the
        // first listener installs the list with a plain CAS, and a notify that
        // then finds no list must not be one whose condition change the
        // caller's check after this missed. Two fences order the two sides
        // whatever orderings the caller's condition uses (the loom model
        // `loom_adapter_event_listen_check_wait_vs_notify` finds the lost
        // wake-up without them). Later entries go in under the list's lock,
        // which orders them by itself.
        fence(Ordering::SeqCst);
        Listener {
            shared,
            key: Some(key),
        }
    }

    /// [`notify_all`](Self::notify_all) after the caller changed the condition
    /// its listeners check: the other side of [`listen`](Self::listen)'s fence.
    pub(crate) fn notify_all_after_change(&self, panic: &mut Panic) {
        fence(Ordering::SeqCst);
        self.notify_all(panic);
    }

    /// How many listeners are on the list, notified or not (introspection for
    /// tests).
    #[cfg(all(feature = "test-util", not(all(test, ctx_loom))))]
    pub(crate) fn listeners(&self) -> usize {
        self.shared()
            .map_or(0, |shared| lock(&shared.list).taken as usize)
    }

    /// Notifies every listener of the moment, then wakes their wakers, each
    /// guarded, after the lock (the first panic is kept in `panic`).
    pub(crate) fn notify_all(&self, panic: &mut Panic) {
        let mut wakers = WakeList::default();
        self.notify_into(&mut wakers);
        wakers.take_each(|waker| work::catch(panic, || waker.wake()));
    }

    /// Notifies every listener of the moment, and puts their wakers into
    /// `wakers` unwoken.
    pub(crate) fn notify_into(&self, wakers: &mut WakeList) {
        if let Some(shared) = self.shared() {
            shared.notify_into(wakers);
        }
    }
}

impl Drop for Event {
    fn drop(&mut self) {
        let shared = crate::sync::ptr_get_mut(&mut self.0);
        if !shared.is_null() {
            // SAFETY: the event's own reference (see `shared`), given back once.
            drop(unsafe { Arc::from_raw(shared) });
        }
    }
}

impl fmt::Debug for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Event").finish_non_exhaustive()
    }
}

/// A listener that holds its event's list: a future, ready once a notify that
/// came after its `listen` ran. Dropping it leaves the list.
pub(crate) struct Listener {
    shared: Arc<Shared>,
    /// Its entry; `None` once given back (after `Ready`).
    key: Option<Key>,
}

impl Future for Listener {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let Some(key) = self.key else {
            return Poll::Ready(());
        };
        let poll = self.shared.poll(key, cx.waker());
        if poll.is_ready() {
            self.key = None;
            self.shared.release(key);
        }
        poll
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            self.shared.release(key);
        }
    }
}

impl fmt::Debug for Listener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Listener")
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

#[cfg(all(test, not(ctx_loom)))]
mod tests {
    use super::*;
    use crate::tests::waiting::{counter, poll, woken};
    use crate::wake_fn::on_wake;

    #[test]
    fn a_notify_wakes_the_listeners_before_it_not_after() {
        let event = Event::new();
        let (count, waker) = counter();
        let mut before = event.listen();
        assert!(poll(&mut before, &waker).is_pending());
        let mut panic = None;
        event.notify_all(&mut panic);
        assert!(panic.is_none());
        assert_eq!(woken(&count), 1);
        let mut after = event.listen();
        assert!(poll(&mut after, &waker).is_pending());
        assert!(poll(&mut before, &waker).is_ready());
        // Ready for good, and its entry is given back.
        assert!(poll(&mut before, &waker).is_ready());
        assert_eq!(event.shared().map(|s| lock(&s.list).taken), Some(1));
        event.notify_all(&mut panic);
        assert!(poll(&mut after, &waker).is_ready());
    }

    #[test]
    fn entries_are_reused_and_a_big_list_freed_with_the_last() {
        let event = Event::new();
        let (_, waker) = counter();
        let state = |event: &Event| {
            let list = lock(&event.shared().unwrap().list);
            (
                list.taken,
                list.free,
                list.entries.len(),
                list.entries.capacity(),
            )
        };
        let keys: Vec<Key> = (0..5).map(|_| event.listen_key(&waker)).collect();
        assert_eq!(keys, [0, 1, 2, 3, 4]);
        event.release_key(1);
        event.release_key(3);
        // The last freed first.
        assert_eq!(event.listen_key(&waker), 3);
        assert_eq!(event.listen_key(&waker), 1);
        for key in [0, 1, 2, 3, 4] {
            event.release_key(key);
        }
        // Small: emptied, its room kept.
        let (taken, free, len, capacity) = state(&event);
        assert_eq!((taken, free, len), (0, 0, 0));
        assert!(capacity > 0 && capacity <= KEPT);
        assert_eq!(event.listen_key(&waker), 0);
        event.release_key(0);
        // Big: its memory goes with the last entry.
        let keys: Vec<Key> = (0..100).map(|_| event.listen_key(&waker)).collect();
        for key in keys.into_iter().rev() {
            event.release_key(key);
        }
        assert_eq!(state(&event), (0, 0, 0, 0));
    }

    #[test]
    fn a_key_notified_before_its_owner_looks_is_ready_until_released() {
        let event = Event::new();
        let (count, waker) = counter();
        let key = event.listen_key(&waker);
        let mut wakers = WakeList::default();
        event.notify_into(&mut wakers);
        assert_eq!(wakers.len(), 1);
        assert_eq!(woken(&count), 0);
        // A later listener reuses no notified entry.
        let other = event.listen_key(&waker);
        assert_ne!(other, key);
        assert!(event.poll_key(key, &waker).is_ready());
        assert!(event.poll_key(other, &waker).is_pending());
        event.release_key(key);
        event.release_key(other);
        wakers.take_each(Waker::wake);
        assert_eq!(woken(&count), 1);
    }

    #[test]
    fn a_waker_that_drops_its_listener_when_woken_finds_the_lock_free() {
        let event = std::sync::Arc::new(Event::new());
        let slot: std::sync::Arc<std::sync::Mutex<Option<Listener>>> = Default::default();
        let dropper = {
            let slot = slot.clone();
            on_wake(move || drop(slot.lock().unwrap().take()))
        };
        let mut listener = event.listen();
        assert!(poll(&mut listener, &dropper).is_pending());
        *slot.lock().unwrap() = Some(listener);
        let mut panic = None;
        event.notify_all(&mut panic);
        assert!(panic.is_none());
        assert!(slot.lock().unwrap().is_none());
        assert_eq!(event.shared().map(|s| lock(&s.list).taken), Some(0));
    }

    #[test]
    fn a_panicking_waker_costs_no_other_listener_its_wake_up() {
        let event = Event::new();
        let (count, waker) = counter();
        let panicking = on_wake(|| panic!("a waker that panics"));
        let mut first = event.listen();
        let mut second = event.listen();
        let mut third = event.listen();
        assert!(poll(&mut first, &waker).is_pending());
        assert!(poll(&mut second, &panicking).is_pending());
        assert!(poll(&mut third, &waker).is_pending());
        let mut panic = None;
        event.notify_all(&mut panic);
        assert!(panic.is_some());
        work::discard(panic);
        assert_eq!(woken(&count), 2);
        for listener in [&mut first, &mut second, &mut third] {
            assert!(poll(listener, &waker).is_ready());
        }
    }
}
