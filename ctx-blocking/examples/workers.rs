//! Worker threads with ctx: a shared deadline, an error group whose first failure
//! stops the rest, and a shutdown signal. Exits on its own in well under a second.
//!
//! ```text
//! cargo run -p ctx-blocking --example workers
//! ```

use ctx_blocking::{scope_with_limit, signal_context, sleep};
use ctx_core::{Cause, Context, Error};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// One unit of work: takes `cost`, unless the context ends first.
fn process(ctx: &Context, item: u32, cost: Duration) -> Result<u32, Error> {
    sleep(ctx, cost)?;
    Ok(item * item)
}

fn main() {
    let start = Instant::now();
    // Ctrl-C or SIGTERM cancels everything below; `_stop` stops listening at the end.
    let (root, _stop) = signal_context(&ctx_blocking::background());

    // 1. Each item gets 70 ms; the first item over budget fails the batch, which
    //    cancels the items still running (and keeps queued ones from starting).
    let results = Mutex::new(Vec::new());
    let outcome = scope_with_limit(&root, 4, |group| {
        for item in 1..=8u32 {
            let results = &results;
            group.spawn(move |ctx| {
                let (ctx, _cancel) = ctx.with_timeout(Duration::from_millis(70));
                let squared = process(&ctx, item, Duration::from_millis(20 * u64::from(item)))?;
                results.lock().unwrap().push(squared);
                Ok::<(), Cause>(())
            });
        }
    });
    let mut results = results.into_inner().unwrap();
    results.sort_unstable();
    println!("batch: {outcome:?}, finished items: {results:?}");

    // 2. The first failure cancels the other workers, and is the group's cause.
    let outcome = scope_with_limit(&root, 4, |group| {
        group.spawn(|ctx| {
            process(&ctx, 1, Duration::from_millis(10))?;
            Err(Cause::msg("item 1 is corrupt"))
        });
        for item in 2..=4 {
            group.spawn(move |ctx| {
                let result = process(&ctx, item, Duration::from_secs(10));
                println!("worker {item}: {result:?}");
                result.map(drop)
            });
        }
    });
    println!("group: {outcome:?}");

    println!("finished in {:?}", start.elapsed());
}
