//! A randomized model test: random sequences of operations run on the real tree
//! and on a small reference model written for obviousness rather than speed, and
//! the two are compared after every single step.
//!
//! The operations are: deriving every kind of context (cancel, cancel with cause,
//! values, `without_cancel`, deadlines in the future and the past, with and
//! without cause, `with_cancel_any` over random handles), cloning and dropping
//! handles, canceling through cancel functions with or without a cause, dropping
//! cancel functions, registering, stopping and dropping `after_func` callbacks,
//! and moving a manual clock forward so that deadlines fire.
//!
//! After every step the test compares, for every live handle: `err()`, `cause()`
//! (by identity), `deadline()`, both value lookups, `live_children()` and the
//! printed name; and globally: how many timers are armed and how often every
//! callback ran.
//!
//! The random generator is seeded; a failure names the seed and the step, and the
//! operations that led there, so it can be replayed.

mod support;

use ctx_core::{AfterFunc, CancelCauseFunc, CancelFunc, Cause, Context, Error};
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::{Calls, ManualTimer, Rng, scaled};

#[derive(Debug)]
struct V1(u32);
#[derive(Debug)]
struct V2(u32);

// ===== The reference model =====

/// What kind of node a model node is.
#[derive(Debug, Clone)]
enum Kind {
    /// `background().with_timer(..)`: the root every test tree grows from.
    Root,
    Cancel,
    CancelCause,
    /// A node with a deadline of its own (armed unless born done).
    Deadline {
        at: Instant,
        cause: Option<Cause>,
    },
    /// `with_cancel_any` over several parents.
    Merge,
    Value1(u32),
    Value2(u32),
    WithoutCancel,
}

#[derive(Debug)]
struct Node {
    kind: Kind,
    /// The first parent, then the others (merge nodes only).
    parents: Vec<usize>,
    /// The nearest cancelable node at or above, as ctx-core defines it.
    carrier: Option<usize>,
    /// The deadline `deadline()` reports.
    deadline: Option<Instant>,
    /// Why the node is done, for cancelable nodes.
    done: Option<(Error, Cause)>,
    /// Child registrations in this node's set (one per parent link).
    children: Vec<usize>,
    /// Whether the node's timer is armed.
    armed: bool,
}

/// The state of one `after_func` registration in the model.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Reg {
    /// Registered with this carrier, not yet run or stopped.
    Pending(usize),
    /// On a context that can never end: never runs, but can be stopped once.
    Never,
    Ran,
    Stopped,
}

#[derive(Debug)]
struct Model {
    nodes: Vec<Node>,
    regs: Vec<Reg>,
    runs: Vec<usize>,
    now: Instant,
}

impl Model {
    fn new(now: Instant) -> Model {
        Model {
            nodes: vec![Node {
                kind: Kind::Root,
                parents: Vec::new(),
                carrier: None,
                deadline: None,
                done: None,
                children: Vec::new(),
                armed: false,
            }],
            regs: Vec::new(),
            runs: Vec::new(),
            now,
        }
    }

    fn is_cancelable(&self, id: usize) -> bool {
        matches!(
            self.nodes[id].kind,
            Kind::Cancel | Kind::CancelCause | Kind::Deadline { .. } | Kind::Merge
        )
    }

    /// `err()` and `cause()` of a handle on node `id`.
    fn reason(&self, id: usize) -> Option<(Error, Cause)> {
        self.nodes[id]
            .carrier
            .and_then(|c| self.nodes[c].done.clone())
    }

    fn live_children(&self, id: usize) -> usize {
        let Some(carrier) = self.nodes[id].carrier else {
            return 0;
        };
        let pending = self
            .regs
            .iter()
            .filter(|r| **r == Reg::Pending(carrier))
            .count();
        self.nodes[carrier].children.len() + pending
    }

    fn value1(&self, id: usize) -> Option<u32> {
        let mut at = Some(id);
        while let Some(node) = at {
            if let Kind::Value1(v) = self.nodes[node].kind {
                return Some(v);
            }
            at = self.nodes[node].parents.first().copied();
        }
        None
    }

    fn value2(&self, id: usize) -> Option<u32> {
        let mut at = Some(id);
        while let Some(node) = at {
            if let Kind::Value2(v) = self.nodes[node].kind {
                return Some(v);
            }
            at = self.nodes[node].parents.first().copied();
        }
        None
    }

    /// The printed name of a handle on node `id`, as ctx-core's `Display` writes it.
    fn name(&self, id: usize) -> String {
        let mut chain = Vec::new();
        let mut at = Some(id);
        while let Some(node) = at {
            chain.push(node);
            at = self.nodes[node].parents.first().copied();
        }
        let mut name = String::from("context.Background");
        for node in chain.into_iter().rev() {
            match &self.nodes[node].kind {
                Kind::Root => name.push_str(".WithTimer"),
                Kind::Cancel => name.push_str(".WithCancel"),
                Kind::CancelCause => name.push_str(".WithCancelCause"),
                Kind::Deadline { at, .. } => {
                    if *at >= self.now {
                        write!(name, ".WithDeadline(in {:?})", *at - self.now).unwrap();
                    } else {
                        write!(name, ".WithDeadline({:?} ago)", self.now - *at).unwrap();
                    }
                }
                Kind::Merge => write!(
                    name,
                    ".WithCancelAny(+{})",
                    self.nodes[node].parents.len() - 1
                )
                .unwrap(),
                Kind::Value1(_) => {
                    write!(name, ".WithValue({})", std::any::type_name::<V1>()).unwrap()
                }
                Kind::Value2(_) => {
                    write!(name, ".WithValue({})", std::any::type_name::<V2>()).unwrap()
                }
                Kind::WithoutCancel => name.push_str(".WithoutCancel"),
            }
        }
        name
    }

    fn armed(&self) -> usize {
        self.nodes.iter().filter(|n| n.armed).count()
    }

    fn push(&mut self, kind: Kind, parents: Vec<usize>) -> usize {
        let id = self.nodes.len();
        let first = parents[0];
        let (carrier, deadline) = match kind {
            Kind::Value1(_) | Kind::Value2(_) => {
                (self.nodes[first].carrier, self.nodes[first].deadline)
            }
            Kind::WithoutCancel => (None, None),
            Kind::Deadline { at, .. } => (Some(id), Some(at)),
            Kind::Merge => (
                Some(id),
                parents.iter().filter_map(|&p| self.nodes[p].deadline).min(),
            ),
            Kind::Cancel | Kind::CancelCause => (Some(id), self.nodes[first].deadline),
            Kind::Root => unreachable!(),
        };
        self.nodes.push(Node {
            kind,
            parents,
            carrier,
            deadline,
            done: None,
            children: Vec::new(),
            armed: false,
        });
        id
    }

    /// Registers a fresh cancelable node with the carriers of its parents, in
    /// order; if one of them is done, the node is born done with its reason.
    fn link(&mut self, id: usize) {
        let parents = self.nodes[id].parents.clone();
        for parent in parents {
            let Some(carrier) = self.nodes[parent].carrier else {
                continue;
            };
            if let Some(reason) = self.nodes[carrier].done.clone() {
                self.cancel(id, reason);
                return;
            }
            self.nodes[carrier].children.push(id);
        }
    }

    fn with_cancel(&mut self, parent: usize, cause_kind: bool) -> usize {
        let kind = if cause_kind {
            Kind::CancelCause
        } else {
            Kind::Cancel
        };
        let id = self.push(kind, vec![parent]);
        self.link(id);
        id
    }

    fn with_deadline(&mut self, parent: usize, at: Instant, cause: Option<Cause>) -> usize {
        if self.nodes[parent].deadline.is_some_and(|d| d <= at) {
            return self.with_cancel(parent, false);
        }
        let id = self.push(
            Kind::Deadline {
                at,
                cause: cause.clone(),
            },
            vec![parent],
        );
        self.link(id);
        if self.nodes[id].done.is_none() {
            if self.now >= at {
                let cause = cause.unwrap_or_else(|| Cause::new(Error::DeadlineExceeded));
                self.cancel(id, (Error::DeadlineExceeded, cause));
            } else {
                self.nodes[id].armed = true;
            }
        }
        id
    }

    fn with_cancel_any(&mut self, parents: Vec<usize>) -> usize {
        if parents.len() == 1 {
            return self.with_cancel(parents[0], false);
        }
        let id = self.push(Kind::Merge, parents);
        self.link(id);
        id
    }

    /// Removes every registration of `id` from the sets of its parents' carriers.
    fn unregister(&mut self, id: usize) {
        for parent in self.nodes[id].parents.clone() {
            if let Some(carrier) = self.nodes[parent].carrier {
                self.nodes[carrier].children.retain(|&c| c != id);
            }
        }
    }

    /// Cancels `id` and its subtree with `reason`, unless it is done already.
    /// A canceled node leaves every parent it was registered with.
    fn cancel(&mut self, id: usize, reason: (Error, Cause)) {
        if self.nodes[id].done.is_some() {
            return;
        }
        let mut work = vec![id];
        self.nodes[id].done = Some(reason.clone());
        while let Some(node) = work.pop() {
            self.unregister(node);
            self.nodes[node].armed = false;
            for child in std::mem::take(&mut self.nodes[node].children) {
                if self.nodes[child].done.is_none() {
                    self.nodes[child].done = Some(reason.clone());
                    work.push(child);
                }
            }
            for (reg, runs) in self.regs.iter_mut().zip(self.runs.iter_mut()) {
                if *reg == Reg::Pending(node) {
                    *reg = Reg::Ran;
                    *runs += 1;
                }
            }
        }
    }

    fn after_func(&mut self, id: usize) -> usize {
        let reg = match self.nodes[id].carrier {
            None => Reg::Never,
            Some(carrier) if self.nodes[carrier].done.is_some() => Reg::Ran,
            Some(carrier) => Reg::Pending(carrier),
        };
        self.regs.push(reg);
        self.runs.push(usize::from(reg == Reg::Ran));
        self.regs.len() - 1
    }

    fn stop(&mut self, reg: usize) -> bool {
        match self.regs[reg] {
            Reg::Pending(_) | Reg::Never => {
                self.regs[reg] = Reg::Stopped;
                true
            }
            Reg::Ran | Reg::Stopped => false,
        }
    }

    /// Moves the clock and fires due deadlines, earliest first (creation order
    /// breaks ties, as the manual timer's keys do).
    fn advance(&mut self, by: Duration) {
        self.now += by;
        let mut due: Vec<(Instant, usize)> = self
            .nodes
            .iter()
            .enumerate()
            .filter(|(_, n)| n.armed)
            .filter_map(|(id, n)| match n.kind {
                Kind::Deadline { at, .. } if at <= self.now => Some((at, id)),
                _ => None,
            })
            .collect();
        due.sort();
        for (_, id) in due {
            self.nodes[id].armed = false;
            if let Kind::Deadline { cause, .. } = self.nodes[id].kind.clone() {
                let cause = cause.unwrap_or_else(|| Cause::new(Error::DeadlineExceeded));
                self.cancel(id, (Error::DeadlineExceeded, cause));
            }
        }
    }
}

// ===== The real tree, driven side by side =====

enum Func {
    Plain(CancelFunc),
    WithCause(CancelCauseFunc),
}

impl Func {
    fn context(&self) -> Context {
        match self {
            Func::Plain(f) => f.context(),
            Func::WithCause(f) => f.context(),
        }
    }
}

struct World {
    seed: u64,
    rng: Rng,
    timer: Arc<ManualTimer>,
    model: Model,
    /// Live context handles and the model node each stands for.
    handles: Vec<(usize, Context)>,
    /// Live cancel functions and their model node.
    funcs: Vec<(usize, Func)>,
    /// Every registration: its model index, its handle (until dropped), its counter.
    regs: Vec<(usize, Option<AfterFunc>, Calls)>,
    allow_merge: bool,
    log: Vec<String>,
    next_value: u32,
    next_nanos: u64,
}

impl World {
    fn new(seed: u64, allow_merge: bool) -> World {
        let timer = ManualTimer::new();
        let root = timer.root();
        let model = Model::new(root.now());
        World {
            seed,
            rng: Rng::new(seed),
            timer,
            model,
            handles: vec![(0, root)],
            funcs: Vec::new(),
            regs: Vec::new(),
            allow_merge,
            log: Vec::new(),
            next_value: 0,
            next_nanos: 0,
        }
    }

    fn pick_handle(&mut self) -> usize {
        self.rng.below(self.handles.len())
    }

    fn fresh_cause(&mut self) -> Cause {
        match self.rng.below(6) {
            0 => Cause::new(Error::Canceled),
            1 => Cause::new(Error::DeadlineExceeded),
            _ => {
                self.next_value += 1;
                Cause::msg(format!("cause #{}", self.next_value))
            }
        }
    }

    /// A deadline that no other deadline in this run shares.
    fn future_deadline(&mut self) -> Instant {
        self.next_nanos += 1;
        self.model.now
            + Duration::from_secs(1 + self.rng.below(120) as u64)
            + Duration::from_nanos(self.next_nanos)
    }

    fn past_deadline(&mut self) -> Instant {
        self.model.now - Duration::from_secs(self.rng.below(100) as u64)
    }

    /// Runs one random operation on both sides; returns its description.
    fn step(&mut self) -> String {
        let crowded = self.handles.len() > 40 || self.funcs.len() > 30;
        let roll = if crowded {
            60 + self.rng.below(40)
        } else {
            self.rng.below(100)
        };
        match roll {
            0..=9 => {
                let h = self.pick_handle();
                let (node, ctx) = &self.handles[h];
                let (node, (child, func)) = (*node, ctx.with_cancel());
                let id = self.model.with_cancel(node, false);
                self.handles.push((id, child));
                self.funcs.push((id, Func::Plain(func)));
                format!("with_cancel of node {node} -> {id}")
            }
            10..=16 => {
                let h = self.pick_handle();
                let (node, ctx) = &self.handles[h];
                let (node, (child, func)) = (*node, ctx.with_cancel_cause());
                let id = self.model.with_cancel(node, true);
                self.handles.push((id, child));
                self.funcs.push((id, Func::WithCause(func)));
                format!("with_cancel_cause of node {node} -> {id}")
            }
            17..=24 => {
                let h = self.pick_handle();
                let at = if self.rng.chance(75) {
                    self.future_deadline()
                } else {
                    self.past_deadline()
                };
                let cause = self.rng.chance(50).then(|| self.fresh_cause());
                let (node, ctx) = &self.handles[h];
                let node = *node;
                let (child, func) = match &cause {
                    Some(cause) => ctx.with_deadline_cause(at, cause.clone()),
                    None => ctx.with_deadline(at),
                };
                let id = self.model.with_deadline(node, at, cause);
                self.handles.push((id, child));
                self.funcs.push((id, Func::Plain(func)));
                format!("with_deadline of node {node} -> {id}")
            }
            25..=31 => {
                let h = self.pick_handle();
                self.next_value += 1;
                let value = self.next_value;
                let (node, ctx) = &self.handles[h];
                let node = *node;
                let (child, kind) = if value.is_multiple_of(2) {
                    (ctx.with_value(V1(value)), Kind::Value1(value))
                } else {
                    (ctx.with_value(V2(value)), Kind::Value2(value))
                };
                let id = self.model.push(kind, vec![node]);
                self.handles.push((id, child));
                format!("with_value of node {node} -> {id}")
            }
            32..=34 => {
                let h = self.pick_handle();
                let (node, ctx) = &self.handles[h];
                let (node, child) = (*node, ctx.without_cancel());
                let id = self.model.push(Kind::WithoutCancel, vec![node]);
                self.handles.push((id, child));
                format!("without_cancel of node {node} -> {id}")
            }
            35..=40 if self.allow_merge => {
                let count = 1 + self.rng.below(3);
                let picks: Vec<usize> = (0..count).map(|_| self.pick_handle()).collect();
                let parents: Vec<Context> =
                    picks.iter().map(|&h| self.handles[h].1.clone()).collect();
                let nodes: Vec<usize> = picks.iter().map(|&h| self.handles[h].0).collect();
                let (child, func) = Context::with_cancel_any(&parents);
                let id = self.model.with_cancel_any(nodes.clone());
                self.handles.push((id, child));
                self.funcs.push((id, Func::Plain(func)));
                format!("with_cancel_any of nodes {nodes:?} -> {id}")
            }
            35..=44 => {
                let h = self.pick_handle();
                let (node, ctx) = &self.handles[h];
                let (node, copy) = (*node, ctx.clone());
                self.handles.push((node, copy));
                format!("clone handle of node {node}")
            }
            45..=54 => {
                let h = self.pick_handle();
                let (node, ctx) = &self.handles[h];
                let node = *node;
                let calls = Calls::new();
                let registration = ctx.after_func(calls.callback());
                let reg = self.model.after_func(node);
                self.regs.push((reg, Some(registration), calls));
                format!("after_func on node {node} -> registration {reg}")
            }
            55..=59 => {
                let live: Vec<usize> = (0..self.regs.len())
                    .filter(|&i| self.regs[i].1.is_some())
                    .collect();
                if live.is_empty() {
                    return "nothing to stop".into();
                }
                let i = live[self.rng.below(live.len())];
                let reg = self.regs[i].0;
                let stopped = self.regs[i].1.as_ref().unwrap().stop();
                let expected = self.model.stop(reg);
                assert_eq!(
                    stopped, expected,
                    "seed {}: stop() of registration {reg} returned {stopped}",
                    self.seed
                );
                if self.rng.chance(30) {
                    self.regs[i].1 = None;
                }
                format!("stop registration {reg} -> {stopped}")
            }
            60..=74 => {
                if self.funcs.is_empty() {
                    return "nothing to cancel".into();
                }
                let i = self.rng.below(self.funcs.len());
                let (node, func) = self.funcs.swap_remove(i);
                match func {
                    Func::Plain(func) => {
                        if self.rng.chance(50) {
                            func.cancel();
                        } else {
                            drop(func);
                        }
                        self.model
                            .cancel(node, (Error::Canceled, Cause::new(Error::Canceled)));
                        format!("cancel node {node}")
                    }
                    Func::WithCause(func) => {
                        if self.rng.chance(75) {
                            let cause = self.fresh_cause();
                            func.cancel(cause.clone());
                            self.model.cancel(node, (Error::Canceled, cause.clone()));
                            format!("cancel node {node} with cause {cause}")
                        } else {
                            drop(func);
                            self.model
                                .cancel(node, (Error::Canceled, Cause::new(Error::Canceled)));
                            format!("drop the cause function of node {node}")
                        }
                    }
                }
            }
            75..=89 => {
                if self.handles.len() <= 1 {
                    return "nothing to drop".into();
                }
                // Handle 0 is the root and stays.
                let i = 1 + self.rng.below(self.handles.len() - 1);
                let (node, ctx) = self.handles.swap_remove(i);
                drop(ctx);
                format!("drop a handle of node {node}")
            }
            90..=93 => {
                let live: Vec<usize> = (0..self.regs.len())
                    .filter(|&i| self.regs[i].1.is_some())
                    .collect();
                if live.is_empty() {
                    return "no registration handle to drop".into();
                }
                let i = live[self.rng.below(live.len())];
                self.regs[i].1 = None;
                format!("drop the handle of registration {}", self.regs[i].0)
            }
            _ => {
                let by = Duration::from_secs(self.rng.below(40) as u64);
                let fired = self.timer.advance(by);
                self.model.advance(by);
                format!("advance the clock by {by:?} ({fired} fired)")
            }
        }
    }

    /// Compares everything observable; returns the first difference.
    fn compare(&self) -> Result<(), String> {
        let model = &self.model;
        if self.timer.root().now() != model.now {
            return Err("the clocks disagree".into());
        }
        for (node, ctx) in &self.handles {
            let node = *node;
            let want = model.reason(node);
            let got = ctx.err();
            if got != want.as_ref().map(|r| r.0) {
                return Err(format!(
                    "node {node}: err() is {got:?}, model says {want:?}"
                ));
            }
            if ctx.is_done() != want.is_some() || ctx.check().is_err() != want.is_some() {
                return Err(format!(
                    "node {node}: is_done()/check() disagree with err()"
                ));
            }
            match (ctx.cause(), &want) {
                (None, None) => {}
                (Some(got), Some((_, cause))) if got.same(cause) => {}
                (got, want) => {
                    return Err(format!(
                        "node {node}: cause() is {got:?}, model says {:?}",
                        want.as_ref().map(|r| &r.1)
                    ));
                }
            }
            if ctx.deadline() != model.nodes[node].deadline {
                return Err(format!(
                    "node {node}: deadline() is {:?}, model says {:?}",
                    ctx.deadline(),
                    model.nodes[node].deadline
                ));
            }
            if ctx.value::<V1>().map(|v| v.0) != model.value1(node)
                || ctx.value::<V2>().map(|v| v.0) != model.value2(node)
            {
                return Err(format!("node {node}: a value lookup differs"));
            }
            let (got, want) = (ctx.live_children(), model.live_children(node));
            if got != want {
                return Err(format!(
                    "node {node} (carrier {:?}): live_children() is {got}, model says {want}",
                    model.nodes[node].carrier
                ));
            }
            let (got, want) = (ctx.to_string(), model.name(node));
            if got != want {
                return Err(format!("node {node}: named {got}, model says {want}"));
            }
        }
        for (node, func) in &self.funcs {
            if func.context().err() != model.reason(*node).map(|r| r.0) {
                return Err(format!(
                    "node {node}: the cancel function's context differs"
                ));
            }
        }
        if self.timer.armed() != model.armed() {
            return Err(format!(
                "{} timers armed, model says {}",
                self.timer.armed(),
                model.armed()
            ));
        }
        // Callbacks set free by a timer's expiry run on ctx-core's runner threads,
        // a moment later: give them time before comparing (a watchdog, not a
        // timing assertion; counts only ever grow).
        support::eventually(|| {
            self.regs
                .iter()
                .all(|(reg, _, calls)| calls.get() >= model.runs[*reg])
        });
        for (reg, _, calls) in &self.regs {
            if calls.get() != model.runs[*reg] {
                return Err(format!(
                    "registration {reg} ran {} times, model says {}",
                    calls.get(),
                    model.runs[*reg]
                ));
            }
        }
        Ok(())
    }

    fn run(mut self, steps: usize) {
        for step in 0..steps {
            let op = self.step();
            self.log.push(op);
            if let Err(difference) = self.compare() {
                let recent: Vec<&String> = self.log.iter().rev().take(12).rev().collect();
                panic!(
                    "seed {} diverged at step {step}: {difference}\nlast operations:\n  {}",
                    self.seed,
                    recent
                        .iter()
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join("\n  ")
                );
            }
        }
        // Tear down: every cancel function goes, then the clock runs out.
        let World {
            funcs,
            handles,
            regs,
            timer,
            ..
        } = self;
        drop(funcs);
        for (_, ctx) in &handles {
            assert!(ctx.live_children() == 0 || ctx.err().is_none());
        }
        drop(handles);
        drop(regs);
        assert_eq!(timer.armed(), 0, "a timer outlived every cancel function");
    }
}

const SEEDS: u64 = scaled(40, 1) as u64;
const STEPS: usize = scaled(400, 60);

#[test]
fn random_operations_match_the_model() {
    for seed in 0..SEEDS {
        World::new(seed, true).run(STEPS);
    }
}

#[test]
fn random_operations_without_cancel_any_match_the_model() {
    for seed in 0..SEEDS {
        World::new(1000 + seed, false).run(STEPS);
    }
}

#[test]
fn the_model_itself_agrees_with_a_hand_checked_case() {
    // A fixed sequence with known answers, so that a broken model cannot make
    // the random tests pass vacuously.
    let mut model = Model::new(Instant::now());
    let a = model.with_cancel(0, false);
    let b = model.push(Kind::Value1(1), vec![a]);
    let c = model.with_cancel(b, true);
    let r = model.after_func(c);
    assert_eq!(model.live_children(a), 1);
    assert_eq!(model.live_children(b), 1);
    assert_eq!(model.live_children(c), 1);
    let why = Cause::msg("why");
    model.cancel(a, (Error::Canceled, why.clone()));
    assert!(model.reason(c).unwrap().1.same(&why));
    assert_eq!(model.runs[r], 1);
    assert_eq!(model.live_children(a), 0);
    assert!(!model.stop(r));
    assert_eq!(model.value1(c), Some(1));
    assert_eq!(
        model.name(c),
        format!(
            "context.Background.WithTimer.WithCancel.WithValue({}).WithCancelCause",
            std::any::type_name::<V1>()
        )
    );
    let _ = model.is_cancelable(c);
}
