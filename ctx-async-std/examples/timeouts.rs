//! Timeouts, an error group and a shutdown signal with ctx on smol (async-std works
//! the same way). Exits on its own in well under a second.
//!
//! ```text
//! cargo run -p ctx-async-std --example timeouts
//! ```

use ctx_async_std::{Group, after_func_spawn, run_until_done, signal_context, sleep};
use ctx_core::{Cause, Context, Error};
use std::time::{Duration, Instant};

/// A "remote call" that takes `latency`, unless its context ends first.
async fn call(ctx: &Context, name: &str, latency: Duration) -> Result<String, Error> {
    sleep(ctx, latency).await?;
    Ok(format!("{name}: ok after {latency:?}"))
}

fn main() {
    smol::block_on(async {
        let start = Instant::now();
        // Ctrl-C or SIGTERM cancels everything below; `_stop` stops listening at the end.
        let (root, _stop) = signal_context(&ctx_async_std::background());

        // 1. A per-call timeout.
        let (ctx, _cancel) = root.with_timeout(Duration::from_millis(100));
        println!("{:?}", call(&ctx, "fast", Duration::from_millis(10)).await);
        println!("{:?}", call(&ctx, "slow", Duration::from_secs(5)).await);

        // 2. Any future can be bounded by a context.
        let (ctx, _cancel) =
            root.with_timeout_cause(Duration::from_millis(50), Cause::msg("budget spent"));
        let outcome = run_until_done(&ctx, std::future::pending::<()>()).await;
        println!(
            "pending future: {outcome:?}, cause: {}",
            ctx.cause().unwrap()
        );

        // 3. Cleanup that runs as its own task once a context ends (Go's AfterFunc).
        let (session, end_session) = root.with_cancel();
        let (closed_tx, closed_rx) = smol::channel::bounded(1);
        let _cleanup = after_func_spawn(&session, move || async move {
            let _ = closed_tx.send("session closed").await;
        });
        end_session.cancel();
        println!("{}", closed_rx.recv().await.unwrap());

        // 4. An error group with at most two workers at a time: the first failure
        //    cancels the rest, and is the group's cause.
        let (group, group_ctx) = Group::new(&root);
        let group = group.with_limit(2);
        for (i, latency) in [30u64, 60, 5_000, 5_000].into_iter().enumerate() {
            group.spawn(move |ctx| async move {
                let reply =
                    call(&ctx, &format!("worker {i}"), Duration::from_millis(latency)).await?;
                println!("{reply}");
                if i == 1 {
                    return Err(Cause::msg(format!("worker {i} found a problem")));
                }
                Ok(())
            });
        }
        let result = group.wait().await;
        println!(
            "group: {result:?} (context cause: {})",
            group_ctx.cause().unwrap()
        );

        println!("finished in {:?}", start.elapsed());
    });
}
