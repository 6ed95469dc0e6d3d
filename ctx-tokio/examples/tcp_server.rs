//! A TCP echo server where every connection gets a context with a deadline,
//! derived from a server context that Ctrl-C / SIGTERM cancels (and, so that the
//! demo ends on its own, a timer after one second). When the server context is
//! canceled, every connection sees it at once, says goodbye with the reason, and
//! closes; the server waits for all of them before it exits.
//!
//! The example starts its own clients on the loopback interface, prints what
//! happens, and exits within about two seconds:
//!
//! ```text
//! cargo run -p ctx-tokio --example tcp_server
//! ```

use ctx_core::{Cause, Context};
use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// How long one connection may live.
const CONNECTION_DEADLINE: Duration = Duration::from_millis(600);
/// When the demo shuts the server down (a signal does it earlier).
const DEMO_LENGTH: Duration = Duration::from_secs(1);
/// Upper bound for any single client read, so the demo can never hang.
const CLIENT_PATIENCE: Duration = Duration::from_secs(3);

#[tokio::main]
async fn main() -> io::Result<()> {
    let start = Instant::now();
    let root = ctx_tokio::background();
    // Ctrl-C or SIGTERM stops the server; so does the end of the demo.
    let (signals, _stop_signals) = ctx_tokio::signal_context(&root);
    let (server_ctx, shutdown) = signals.with_cancel_cause();

    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    log(start, "server", format!("listening on {addr}"));

    let server = tokio::spawn(serve(server_ctx, listener, start));
    let clients = tokio::spawn(run_clients(addr, signals.clone(), start));

    if ctx_tokio::run_until_done(&signals, tokio::time::sleep(DEMO_LENGTH))
        .await
        .is_ok()
    {
        shutdown.cancel(Cause::msg("server shutting down (end of demo)"));
    }
    match server.await? {
        Ok(()) => log(start, "server", "all connections closed".into()),
        Err(err) => log(start, "server", format!("a connection failed: {err}")),
    }
    clients.await?;
    log(start, "main", "done".into());
    Ok(())
}

/// Accepts connections until `ctx` is done, then waits for every connection.
async fn serve(ctx: Context, listener: TcpListener, start: Instant) -> Result<(), Cause> {
    // The group tracks the connections; a connection never fails the group (it
    // logs its own errors), so one bad client does not stop the others.
    let (mut connections, _group_ctx) = ctx_tokio::Group::new(&ctx);
    let mut next_id = 0;
    loop {
        let (stream, peer) = match ctx_tokio::run_until_done(&ctx, listener.accept()).await {
            Ok(Ok(accepted)) => accepted,
            Ok(Err(err)) => {
                log(start, "server", format!("accept failed: {err}"));
                continue;
            }
            Err(_) => break,
        };
        next_id += 1;
        let id = next_id;
        log(start, "server", format!("conn {id}: accepted {peer}"));
        connections.spawn(move |server_ctx| async move {
            let (ctx, _cancel) = server_ctx.with_timeout_cause(
                CONNECTION_DEADLINE,
                Cause::msg(format!(
                    "connection deadline ({CONNECTION_DEADLINE:?}) reached"
                )),
            );
            handle(id, &ctx, stream, start).await;
            Ok::<(), io::Error>(())
        });
    }
    drop(listener);
    let reason = ctx.cause().map_or_else(String::new, |c| c.to_string());
    log(start, "server", format!("stopped accepting: {reason}"));
    connections.wait().await
}

/// Echoes lines until the client leaves or `ctx` is done, then says why it closes.
async fn handle(id: u32, ctx: &Context, stream: TcpStream, start: Instant) {
    let (reader, mut writer) = stream.into_split();
    let mut lines = BufReader::new(reader).lines();
    loop {
        // `next_line` is cancellation safe: losing the race loses no data.
        match ctx_tokio::run_until_done(ctx, lines.next_line()).await {
            Ok(Ok(Some(line))) => {
                if writer
                    .write_all(format!("echo: {line}\n").as_bytes())
                    .await
                    .is_err()
                {
                    return;
                }
            }
            Ok(Ok(None)) => {
                log(start, "server", format!("conn {id}: client closed"));
                return;
            }
            Ok(Err(err)) => {
                log(start, "server", format!("conn {id}: read failed: {err}"));
                return;
            }
            Err(err) => {
                let cause = ctx
                    .cause()
                    .map_or_else(|| err.to_string(), |c| c.to_string());
                log(
                    start,
                    "server",
                    format!("conn {id}: closing: {err} ({cause})"),
                );
                let bye = format!("bye: {cause}\n");
                let _ = tokio::time::timeout(
                    Duration::from_millis(100),
                    writer.write_all(bye.as_bytes()),
                )
                .await;
                return;
            }
        }
    }
}

/// Four clients: a quick one, an idle one (cut by its connection deadline), a
/// chatty one (cut by the server shutdown) and a late one (refused). After a
/// signal, the clients that have not started yet stay away.
async fn run_clients(addr: SocketAddr, signals: Context, start: Instant) {
    let chatty_signals = signals.clone();
    let quick = tokio::spawn(async move {
        let mut conn = Client::connect(addr).await?;
        conn.send("hello").await?;
        let reply = conn.read().await?;
        log(start, "quick", format!("got {reply:?}, leaving"));
        io::Result::Ok(())
    });
    let idle = tokio::spawn(async move {
        let mut conn = Client::connect(addr).await?;
        conn.send("I will go quiet now").await?;
        conn.read().await?;
        let bye = conn.read().await?;
        log(start, "idle", format!("server said {bye:?}"));
        io::Result::Ok(())
    });
    let chatty = tokio::spawn(async move {
        if let Err(err) = ctx_tokio::sleep(&chatty_signals, Duration::from_millis(700)).await {
            log(start, "chatty", format!("not started: {err}"));
            return Ok(());
        }
        let mut conn = Client::connect(addr).await?;
        for n in 0..20 {
            conn.send(&format!("message {n}")).await?;
            let reply = conn.read().await?;
            if reply.starts_with("bye") {
                log(
                    start,
                    "chatty",
                    format!("server said {reply:?} after {n} messages"),
                );
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        log(start, "chatty", "never got a goodbye".into());
        io::Result::Ok(())
    });
    let late = tokio::spawn(async move {
        if let Err(err) = ctx_tokio::sleep(&signals, Duration::from_millis(1300)).await {
            log(start, "late", format!("not started: {err}"));
            return Ok(());
        }
        match TcpStream::connect(addr).await {
            Ok(_) => log(start, "late", "connected (unexpected)".into()),
            Err(err) => log(start, "late", format!("could not connect: {err}")),
        }
        io::Result::Ok(())
    });
    for (name, client) in [
        ("quick", quick),
        ("idle", idle),
        ("chatty", chatty),
        ("late", late),
    ] {
        match client.await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => log(start, name, format!("error: {err}")),
            Err(err) => log(start, name, format!("task failed: {err}")),
        }
    }
}

/// A line-based client with a bounded read.
struct Client {
    lines: tokio::io::Lines<BufReader<tokio::net::tcp::OwnedReadHalf>>,
    writer: tokio::net::tcp::OwnedWriteHalf,
}

impl Client {
    async fn connect(addr: SocketAddr) -> io::Result<Client> {
        let (reader, writer) = TcpStream::connect(addr).await?.into_split();
        Ok(Client {
            lines: BufReader::new(reader).lines(),
            writer,
        })
    }

    async fn send(&mut self, line: &str) -> io::Result<()> {
        self.writer.write_all(format!("{line}\n").as_bytes()).await
    }

    async fn read(&mut self) -> io::Result<String> {
        match tokio::time::timeout(CLIENT_PATIENCE, self.lines.next_line()).await {
            Ok(Ok(Some(line))) => Ok(line),
            Ok(Ok(None)) => Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "server closed",
            )),
            Ok(Err(err)) => Err(err),
            Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "no answer")),
        }
    }
}

fn log(start: Instant, who: &str, what: String) {
    let ms = start.elapsed().as_millis();
    println!("{ms:>5} ms  {who:<7} {what}");
}
