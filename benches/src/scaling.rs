//! Scaling beyond this machine's cores: what each implementation writes to shared
//! memory per operation, the thread counts of the `Scaling` bench, and what the
//! counts predict on a machine with more cores.
//!
//! The benchmark machines have 2 cores; users run on 64. A 2-thread benchmark
//! cannot show how an operation behaves when 64 threads do it at once, but the
//! source can: an operation that writes a cache line other threads also write
//! has to get that line from whichever core wrote it last, and those transfers
//! are serialised. [`IMPLEMENTATIONS`] holds, per operation, the atomic
//! read-modify-writes and the writes to shared cache lines, counted by reading
//! each implementation's source; the report (`src/bin/report.rs`) turns them into
//! a table and a prediction with the [`Model`] below, and puts the `Scaling`
//! bench's measurements next to it, so that the prediction can be checked on a
//! bigger machine (`CTX_BENCH_THREADS=1,2,8,32,64`).
//!
//! To add a column (say, ctx-core after a redesign), add one [`Implementation`]
//! to [`IMPLEMENTATIONS`]; the report picks it up everywhere.

/// The operations counted, in table order.
pub const OPS: [Op; 5] = [
    Op::Create,
    Op::Drop,
    Op::CancelPerChild,
    Op::Check,
    Op::FirstWait,
];

/// One operation on a context tree.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// Derive a cancelable child of a shared, live parent.
    Create,
    /// Get rid of a live child: drop its cancel function and handle (Go: call its
    /// `CancelFunc`; the garbage collector does the rest).
    Drop,
    /// A parent's cancel, per live leaf child it reaches (no waiters).
    CancelPerChild,
    /// `err()` (`is_cancelled()`, `Err()`) on a shared, live context.
    Check,
    /// Start waiting for a shared, live context (register a waker or a parked
    /// goroutine) and stop waiting again.
    FirstWait,
}

impl Op {
    /// The row label.
    pub fn label(self) -> &'static str {
        match self {
            Op::Create => "create",
            Op::Drop => "drop",
            Op::CancelPerChild => "cancel, per child",
            Op::Check => "check",
            Op::FirstWait => "first wait",
        }
    }
}

/// What one operation costs in shared-memory traffic.
#[derive(Clone, Copy, Debug)]
pub struct Count {
    /// Atomic read-modify-writes (locked instructions on x86-64: CAS, fetch-add,
    /// swap, and sequentially consistent stores, which compile to `xchg`), a
    /// mutex lock and unlock counting as one each.
    pub rmws: u32,
    /// Writes to cache lines that another thread may also write at the same
    /// time. A lock, its unlock and the writes between them count as one line
    /// acquisition for the lock's line (the line stays put while it is held).
    pub shared_lines: u32,
    /// Which instructions and which lines, for the reader who checks the count.
    pub detail: &'static str,
}

/// One column of the table: an implementation and its counts.
#[derive(Clone, Copy, Debug)]
pub struct Implementation {
    /// The column header.
    pub name: &'static str,
    /// What the counts were read from.
    pub source: &'static str,
    /// The implementation id in benchmark ids (`Scaling/…/ctx-core`) whose
    /// measurements go with these counts, if this crate can measure it.
    pub measured_as: Option<&'static str>,
    /// The counts, in [`OPS`] order.
    pub counts: [Count; 5],
}

impl Implementation {
    /// The count for `op`.
    pub fn count(&self, op: Op) -> Count {
        let index = OPS
            .iter()
            .position(|&o| o == op)
            .expect("every op is in OPS");
        self.counts[index]
    }
}

/// ctx-core's first wait today.
const FIRST_WAIT_NOW: Count = Count {
    rmws: 4,
    shared_lines: 2,
    detail: "the waker slot (`tree/wait.rs`): the claim CAS and the `fetch_and` that ends \
             registering, on the slot's word in the node; the waker's clone (its task's \
             count, +1); the state word's CAS setting `WAITERS` (the node's line); on drop \
             after the cancel took the waker (the canceler keeps the dead slot), one load. \
             A waiter dropped before any cancel releases the slot instead (`fetch_or`, \
             `fetch_and`) and drops its waker (−1). No lock, no allocation; the event's list \
             (`tree/event.rs`: an entry under its lock) only for a second concurrent waiter",
};

/// Every column. The counts are for the common path: a parent that already has
/// children (its child set, map or vector exists and has room), no waiters
/// unless the operation is the wait itself, no contention on the retry loops.
pub const IMPLEMENTATIONS: &[Implementation] = &[
    Implementation {
        name: "ctx-core (now)",
        source: "this tree: `ctx-core/src/tree/` (`register.rs`, `child_set.rs`, `cancel.rs`, \
                 `node.rs`, `drop.rs`, `wait.rs`)",
        measured_as: Some("ctx-core"),
        counts: [
            Count {
                rmws: 3,
                shared_lines: 0,
                detail: "all in this thread's own shard of the parent's set (lines of its own, \
                         128-byte aligned): the child's reference on the parent, counted in \
                         the shard (+1), not in the parent's header; a free-stack pop (CAS) or \
                         a `bump` fetch-add; the slot store (`SeqCst`, an `xchg`). The parent's \
                         line is only read (its state word and count flags). A parent without \
                         a set takes the child in its inline slot instead (a CAS on the \
                         parent's line), and its first set child counts in its header, once",
            },
            Count {
                rmws: 6,
                shared_lines: 0,
                detail: "own node: the handle's strong −1, the close CAS (a leaf is complete \
                         in the same CAS), and the cancel function's strong −1 together with \
                         the slot's weak −1 (one RMW; the strong references' own weak goes \
                         without one when it is the last); in the shard the child was made \
                         in (not shared while the child is dropped on the thread that made \
                         it): the slot's remove CAS, the free-stack push CAS, and the \
                         reference on the parent −1",
            },
            Count {
                rmws: 2,
                shared_lines: 2,
                detail: "the slot's swap (in the creating thread's shard, which its removers \
                         write) and the close CAS on the child's node line: a plain child (one \
                         parent, no timer) whose close the walk wins is closed, and walked if \
                         it has children, under the slot's weak reference alone, and that \
                         reference goes to the child's own drop, which releases it with its \
                         other weak one (no extra RMW). A timer, a merge node or a close \
                         another thread won adds an upgrade CAS and its strong −1; a waiter \
                         adds the waker slot's `fetch_or` that takes its waker (the \
                         canceler keeps the cell: the slot is dead from then on)",
            },
            Count {
                rmws: 0,
                shared_lines: 0,
                detail: "one `Acquire` load of the carrier's state word (a deadline adds a \
                         clock read); no write",
            },
            FIRST_WAIT_NOW,
        ],
    },
    Implementation {
        name: "ctx-core (before)",
        source: "ctx-core before the sharded child set and the waker slot: one free stack \
                 and one slot array per parent, and event-listener 5's `Event` for every \
                 waiter",
        measured_as: None,
        counts: [
            Count {
                rmws: 3,
                shared_lines: 3,
                detail: "parent's strong count +1 (the parent's node line); a free-stack pop \
                         (CAS) or a `bump` fetch-add (the child set's head line); the slot store, \
                         `SeqCst`, an `xchg` (the slot's line; for the first slots, the head's)",
            },
            Count {
                rmws: 8,
                shared_lines: 3,
                detail: "own node: the close CAS (a leaf is complete in the same CAS), strong \
                         −1 twice (handle and cancel function), weak −1 twice (slot and \
                         handles); the slot's remove CAS and the free-stack push CAS (slot and \
                         head lines); parent's strong −1 (the parent's node line, which also \
                         holds its state word whenever the 64-byte node starts in the first \
                         half of a line, so checks of the parent see these writes)",
            },
            Count {
                rmws: 5,
                shared_lines: 2,
                detail: "the slot's swap (a line of 4 slots, which the children's removers \
                         also write); on the child's node line, which its owner also writes: \
                         upgrade CAS, close CAS, weak −1, and strong −1 after the walk. The \
                         child's later drop adds one failing CAS on its slot",
            },
            Count {
                rmws: 0,
                shared_lines: 0,
                detail: "one `Acquire` load of the carrier's state word (a deadline adds a \
                         clock read); no write",
            },
            Count {
                rmws: 9,
                shared_lines: 4,
                detail: "the state word's CAS setting `WAITERS` (the node's line); event-listener: \
                         `Arc` +1, mutex lock + unlock to insert, lock + unlock to store the \
                         waker on the first poll, lock + unlock to remove on drop, `Arc` −1 \
                         (the event's shared block: three acquisitions of its line)",
            },
        ],
    },
    Implementation {
        name: "tokio-util 0.7",
        source: "tokio-util's `sync/cancellation_token/tree_node.rs` (a `Mutex` per node) \
                 and tokio's `sync/notify.rs`",
        measured_as: Some("tokio-util"),
        counts: [
            Count {
                rmws: 4,
                shared_lines: 2,
                detail: "parent's mutex lock + unlock, around: parent's `Arc` +1 (the child's \
                         parent link; same line) and the push onto the parent's `children` \
                         vector (its buffer's line); child's `Arc` +1 (the vector's clone; a \
                         private line)",
            },
            Count {
                rmws: 11,
                shared_lines: 4,
                detail: "child's lock + unlock (handle count), child's lock again; parent's \
                         `Arc` +1, parent's `try_lock`, parent's `Arc` −1 (link cleared), \
                         child's unlock, swap-remove from the parent's vector, parent's unlock, \
                         parent's `Arc` −1; child's `Arc` −1 twice (the vector's and the \
                         token's). Parent lines: before, inside and after its lock, plus the \
                         vector's buffer. When the child is not the vector's last, the child \
                         moved into its place is locked too (+2 RMWs on another thread's node)",
            },
            Count {
                rmws: 7,
                shared_lines: 2,
                detail: "child's lock + unlock; parent's `Arc` −1 (the child's link cleared; \
                         the parent's line, held by the canceler); `Notify::notify_waiters`: \
                         lock, fetch-add of its call count, unlock; child's `Arc` −1. The \
                         child's mutex line and its `Notify` line are also written by its owner",
            },
            Count {
                rmws: 2,
                shared_lines: 1,
                detail: "`is_cancelled` locks and unlocks the node's mutex: every check writes \
                         the node's line",
            },
            Count {
                rmws: 8,
                shared_lines: 4,
                detail: "`is_cancelled` (lock + unlock); `Notified`'s first poll: a CAS taking \
                         a stored notification (fails, still a locked instruction), the waiter \
                         list's lock, CAS `EMPTY`→`WAITING`, unlock; drop: lock + unlock (and a \
                         store when the list empties)",
            },
        ],
    },
    Implementation {
        name: "Go 1.27",
        source: "Go 1.27.3's `src/context/context.go`, `src/sync/atomic/value.go`, \
                 `src/internal/sync/mutex.go` and `src/runtime/chan.go`",
        measured_as: None,
        counts: [
            Count {
                rmws: 2,
                shared_lines: 3,
                detail: "`propagateCancel`: the parent's `mu.Lock` (CAS) and `Unlock` (atomic \
                         add) around the insert into `p.children` (a map: its header's count \
                         and one group written). The parent's `Done()` channel, made on first \
                         use, is read by loads after that",
            },
            Count {
                rmws: 10,
                shared_lines: 3,
                detail: "the child's `CancelFunc` (Go has no drop; the collector frees the \
                         rest): own `mu` lock + unlock; `err.Store` and \
                         `done.Store(closedchan)`, each a first store of an `atomic.Value`: a \
                         CAS and two `xchg`; `removeChild`: the parent's lock + unlock and a \
                         map delete (parent's `mu` line, map header, group)",
            },
            Count {
                rmws: 8,
                shared_lines: 1,
                detail: "the child's lock + unlock and its two first `atomic.Value` stores \
                         (3 RMWs each); a child whose `Done()` was called closes its channel \
                         instead (channel lock + unlock, and the wake-ups). The child's line is \
                         written by its owner too",
            },
            Count {
                rmws: 0,
                shared_lines: 0,
                detail: "`Err()` is an atomic load of `c.err` on a live context (no mutex in \
                         current Go). On a canceled context it also receives from `Done()`: a \
                         blocking receive takes the channel's lock (2 RMWs), and every canceled \
                         context whose `Done()` was never called shares the one global \
                         `closedchan`, a process-wide hot line",
            },
            Count {
                rmws: 4,
                shared_lines: 2,
                detail: "`<-ctx.Done()` in a `select` with another case: lock the channel, \
                         enqueue, unlock (park); when the other case fires: lock, dequeue, \
                         unlock. A context's first `Done()` also takes `mu`, makes the channel \
                         and stores it (5 RMWs, once per context)",
            },
        ],
    },
];

/// The cost model behind the predictions. Deliberately simple: a prediction to
/// check on a bigger machine, not a claim.
#[derive(Clone, Copy, Debug)]
pub struct Model {
    /// An uncontended RMW on a line this core owns, ns.
    pub rmw_ns: f64,
    /// Moving a cache line from the core that wrote it last to this one, ns
    /// (`transfer_low_ns..=transfer_high_ns` is the range assumed).
    pub transfer_ns: f64,
    /// The fast end of the transfer range, ns.
    pub transfer_low_ns: f64,
    /// The slow end of the transfer range (cross-socket, busy interconnect), ns.
    pub transfer_high_ns: f64,
}

/// The model's numbers.
pub const MODEL: Model = Model {
    rmw_ns: 10.0,
    transfer_ns: 75.0,
    transfer_low_ns: 50.0,
    transfer_high_ns: 100.0,
};

/// The core counts the report predicts for.
pub const PREDICT_AT: [usize; 3] = [8, 32, 64];

impl Model {
    /// The aggregate ceiling, ops/s, when every thread works on the same shared
    /// lines: `shared_lines` transfers per operation, serialised at `transfer`
    /// ns each. `None` for an operation that writes no shared line.
    pub fn ceiling(&self, shared_lines: u32, transfer_ns: f64) -> Option<f64> {
        (shared_lines > 0).then(|| 1e9 / (f64::from(shared_lines) * transfer_ns))
    }

    /// One thread's throughput, ops/s, as the model sees it when nothing was
    /// measured: `rmws` uncontended RMWs per operation and nothing else (so an
    /// upper bound).
    pub fn one_thread(&self, rmws: u32) -> Option<f64> {
        (rmws > 0).then(|| 1e9 / (f64::from(rmws) * self.rmw_ns))
    }

    /// Predicted aggregate throughput at `threads` threads on as many cores:
    /// linear in the threads from one thread's `single` ops/s, up to the ceiling.
    pub fn predict(&self, single: f64, threads: usize, shared_lines: u32) -> f64 {
        let linear = single * threads as f64;
        self.ceiling(shared_lines, self.transfer_ns)
            .map_or(linear, |ceiling| linear.min(ceiling))
    }

    /// Predicted ns per child of a cancel whose children were created (and are
    /// cached) on other cores: each RMW, plus a transfer per shared line.
    pub fn per_child_ns(&self, count: Count) -> f64 {
        f64::from(count.rmws) * self.rmw_ns + f64::from(count.shared_lines) * self.transfer_ns
    }
}

/// A workload of the `Scaling` bench and the operations it is made of.
#[derive(Clone, Copy, Debug)]
pub struct Workload {
    /// The benchmark id's first part (`Scaling/<name>/threads=T/<implementation>`).
    pub name: &'static str,
    /// What one operation of the workload is.
    pub what: &'static str,
    /// The counted operations one workload operation performs.
    pub ops: &'static [Op],
}

impl Workload {
    /// The shared-line writes per workload operation of `imp`.
    pub fn shared_lines(&self, imp: &Implementation) -> u32 {
        self.ops.iter().map(|&op| imp.count(op).shared_lines).sum()
    }

    /// The RMWs per workload operation of `imp`.
    pub fn rmws(&self, imp: &Implementation) -> u32 {
        self.ops.iter().map(|&op| imp.count(op).rmws).sum()
    }
}

/// The `Scaling` bench's workloads. Every thread works on one shared context.
pub const WORKLOADS: [Workload; 4] = [
    Workload {
        name: "create+drop",
        what: "derive a child of the shared live parent and drop it",
        ops: &[Op::Create, Op::Drop],
    },
    Workload {
        name: "create+cancel",
        what: "derive a child of the shared live parent, cancel it, drop it",
        ops: &[Op::Create, Op::Drop],
    },
    Workload {
        name: "check",
        what: "`err()` (tokio-util: `is_cancelled()`) on the shared live context",
        ops: &[Op::Check],
    },
    Workload {
        name: "first-wait",
        what: "poll a fresh `done_ref()` (tokio-util: `cancelled()`) of the shared live \
               context once, so that it registers, and drop it",
        ops: &[Op::FirstWait],
    },
];

/// The benchmark group name.
pub const GROUP: &str = "Scaling";

/// The benchmark id of a workload at a thread count for an implementation.
pub fn bench_id(workload: &str, threads: usize, implementation: &str) -> String {
    format!("{GROUP}/{workload}/threads={threads}/{implementation}")
}

/// The thread counts to run: `CTX_BENCH_THREADS` (a comma-separated list, e.g.
/// `1,2,8,32,64`) if set, else 1, 2 and this machine's available parallelism.
/// Sorted, without duplicates or zeros.
pub fn thread_counts() -> Vec<usize> {
    let available = std::thread::available_parallelism().map_or(1, |n| n.get());
    parse_thread_counts(
        std::env::var("CTX_BENCH_THREADS").ok().as_deref(),
        available,
    )
}

/// [`thread_counts`] without the environment: `list` as the variable's value.
pub fn parse_thread_counts(list: Option<&str>, available: usize) -> Vec<usize> {
    let mut counts: Vec<usize> = match list {
        Some(list) if !list.trim().is_empty() => list
            .split(',')
            .map(|s| {
                s.trim().parse::<usize>().unwrap_or_else(|_| {
                    panic!("CTX_BENCH_THREADS: `{s}` is not a thread count (e.g. `1,2,8,32,64`)")
                })
            })
            .collect(),
        _ => vec![1, 2, available],
    };
    counts.retain(|&n| n > 0);
    counts.sort_unstable();
    counts.dedup();
    counts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thread_counts_parse() {
        assert_eq!(parse_thread_counts(None, 2), vec![1, 2]);
        assert_eq!(parse_thread_counts(None, 64), vec![1, 2, 64]);
        assert_eq!(parse_thread_counts(Some(""), 8), vec![1, 2, 8]);
        assert_eq!(
            parse_thread_counts(Some("64, 1,2,8,32,0,2"), 2),
            vec![1, 2, 8, 32, 64]
        );
    }

    #[test]
    fn every_implementation_has_every_op() {
        for imp in IMPLEMENTATIONS {
            for op in OPS {
                assert!(!imp.count(op).detail.is_empty(), "{} {op:?}", imp.name);
            }
        }
    }

    #[test]
    fn the_model_caps_at_the_ceiling() {
        // 2 lines at 75 ns: 6.67 M ops/s, whatever the thread count.
        let ceiling = MODEL.ceiling(2, MODEL.transfer_ns).unwrap();
        assert!((ceiling - 1e9 / 150.0).abs() < 1e-6);
        assert_eq!(MODEL.predict(1e6, 4, 2), 4e6);
        assert_eq!(MODEL.predict(1e7, 64, 2), ceiling);
        // No shared line: linear.
        assert_eq!(MODEL.predict(1e9, 64, 0), 64e9);
    }
}
