//! A request-shaped tree at work: a server context, requests with deadlines and
//! values, workers on threads, causes, `after_func` clean-ups, and a large cancel
//! fan-out, timed.
//!
//! Run it with `cargo xtask demo` (or `cargo run -p ctx-tree --release --example demo`).

use ctx_core::{Cause, Context, Error};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

/// A request-scoped value, keyed by its own type.
#[derive(Debug)]
struct RequestId(u32);

/// A worker that needs `work` of time, checking its context as it goes.
fn worker(ctx: &Context, name: &str, work: Duration) -> Result<(), Error> {
    let id = ctx.value::<RequestId>().map_or(0, |r| r.0);
    if ctx.wait_timeout(work) {
        let err = ctx.err().expect("done");
        println!(
            "  request {id}: {name:<8} stopped early: {err} (cause: {})",
            ctx.cause().expect("done")
        );
        return Err(err);
    }
    println!("  request {id}: {name:<8} finished its {work:?} of work");
    Ok(())
}

fn main() {
    let (server, shutdown) = Context::background().with_cancel_cause();
    println!("server context: {server}");

    // 1. A request with a 150 ms deadline: the fast workers finish, the slow one
    //    is stopped by the deadline, and the clean-up runs once it is over.
    println!("\n1. a request with a 150 ms deadline");
    let request = server.with_value(RequestId(1));
    let (ctx, _cancel) = request.with_timeout(Duration::from_millis(150));
    println!("  context: {ctx}");
    // The callback runs on ctx-core's runner, once the deadline ended the
    // request; the demo waits for it, so that its line stays in this section.
    let (cleaned, cleaned_up) = std::sync::mpsc::channel();
    let _cleanup = ctx.after_func(move || {
        println!("  request 1: after_func: releasing the request's resources");
        let _ = cleaned.send(());
    });
    let started = Instant::now();
    thread::scope(|s| {
        for (name, work) in [("cache", 20), ("database", 80), ("search", 400)] {
            let ctx = ctx.clone();
            s.spawn(move || worker(&ctx, name, Duration::from_millis(work)));
        }
    });
    let _ = cleaned_up.recv_timeout(Duration::from_secs(10));
    println!(
        "  request 1 took {:?}; err = {:?}",
        started.elapsed(),
        ctx.err()
    );

    // 2. A request canceled with a cause: the client went away. Every descendant
    //    reports the same cause.
    println!("\n2. a request canceled with a cause");
    let request = server.with_value(RequestId(2));
    let (ctx, cancel) = request.with_cancel_cause();
    let (step, _step_cancel) = ctx.with_timeout(Duration::from_secs(10));
    thread::scope(|s| {
        s.spawn(|| worker(&step, "upload", Duration::from_secs(5)));
        thread::sleep(Duration::from_millis(30));
        cancel.cancel(Cause::msg("client closed the connection"));
    });

    // 3. Work that must outlive its request: without_cancel keeps the values only.
    println!("\n3. without_cancel: audit logging outlives the request");
    let (ctx, cancel) = server.with_value(RequestId(3)).with_cancel();
    let audit = ctx.without_cancel();
    cancel.cancel();
    println!(
        "  request: {:?}, audit: {:?}, audit sees request {:?}",
        ctx.err(),
        audit.err(),
        audit.value::<RequestId>()
    );

    // 4. Fan-out: one cancel reaches 100,000 children and 1,000 callbacks.
    println!("\n4. fan-out: 100,000 children and 1,000 after_func callbacks");
    let (parent, cancel) = server.with_cancel();
    let children: Vec<_> = (0..100_000).map(|_| parent.with_cancel()).collect();
    let fired = Arc::new(AtomicUsize::new(0));
    let callbacks: Vec<_> = (0..1_000)
        .map(|_| {
            let fired = fired.clone();
            parent.after_func(move || {
                fired.fetch_add(1, Ordering::Relaxed);
            })
        })
        .collect();
    println!(
        "  parent has {} live children and callbacks",
        parent.live_children()
    );
    let started = Instant::now();
    cancel.cancel();
    let took = started.elapsed();
    let all_done = children
        .iter()
        .all(|(child, _)| child.err() == Some(Error::Canceled));
    println!(
        "  one cancel: {took:?}; all children done: {all_done}; live now: {}",
        parent.live_children()
    );
    // The callbacks run on ctx-core's runner threads, each on its own (as Go
    // runs each AfterFunc in a goroutine): the cancel did not wait for them.
    while fired.load(Ordering::Relaxed) < 1_000 {
        thread::yield_now();
    }
    println!(
        "  all 1,000 callbacks ran {:?} after the cancel began",
        started.elapsed()
    );
    drop((children, callbacks));

    // 5. Waiters on threads: 16 threads block in wait(), one cancel wakes them all.
    println!("\n5. 16 threads blocked in wait(), woken by one cancel");
    let (ctx, cancel) = server.with_cancel();
    let woken = AtomicUsize::new(0);
    thread::scope(|s| {
        for _ in 0..16 {
            s.spawn(|| {
                ctx.wait();
                woken.fetch_add(1, Ordering::Relaxed);
            });
        }
        thread::sleep(Duration::from_millis(20));
        let started = Instant::now();
        cancel.cancel();
        while woken.load(Ordering::Relaxed) < 16 {
            thread::yield_now();
        }
        println!("  all 16 woken {:?} after the cancel", started.elapsed());
    });

    // 6. Shutdown: one cancel with a cause ends everything still derived from the server.
    println!("\n6. server shutdown");
    let (long_lived, _keep) = server.with_timeout(Duration::from_secs(3600));
    shutdown.cancel(Cause::msg("SIGTERM received"));
    println!(
        "  long-lived request: {:?}, cause: {}",
        long_lived.err(),
        long_lived.cause().expect("done")
    );
}
