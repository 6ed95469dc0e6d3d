//! The README's quick-start example: a library function that takes a context,
//! and an application that gives it a deadline.

use ctx_core::{Cause, Context, Error};
use std::time::Duration;

/// A library function: the context comes first, and the function gives up as
/// soon as the caller no longer wants the answer.
fn fetch_report(ctx: &Context, pages: u32) -> Result<u32, Error> {
    let mut done = 0;
    for _ in 0..pages {
        ctx.check()?; // Err(Canceled) or Err(DeadlineExceeded) once it is over
        std::thread::sleep(Duration::from_millis(10)); // one page of work
        done += 1;
    }
    Ok(done)
}

fn main() {
    // The application decides the budget: 100 ms for the whole request.
    let (ctx, _cancel) = Context::background().with_timeout(Duration::from_millis(100));
    match fetch_report(&ctx, 50) {
        Ok(pages) => println!("fetched {pages} pages"),
        Err(err) => println!("gave up: {err}"), // "context deadline exceeded"
    }

    // Cancel with a cause, and every function below sees why.
    let (request, cancel) = Context::background().with_cancel_cause();
    cancel.cancel(Cause::msg("client disconnected"));
    println!(
        "{} because {}",
        request.err().unwrap(),
        request.cause().unwrap()
    );
}
