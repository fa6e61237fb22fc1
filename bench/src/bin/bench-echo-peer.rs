//! The peer of the `ws-echo` scenario: a WebSocket echo server written the
//! way a competent Rust user would write one with tokio and
//! tokio-tungstenite. An accept loop, `accept_async`, one task per
//! connection, and `ws.send(msg)` for each text or binary message (`send` is
//! `feed` + `flush`: one write per message, the idiomatic baseline).
//!
//! Fairness: mimalloc is the global allocator (Veza uses it too), sockets
//! get `TCP_NODELAY` (as Veza's do), and the runtime has exactly `--threads`
//! workers so that it can be compared with that many Veza shards.

use std::net::SocketAddr;

use clap::Parser;
use futures_util::{SinkExt as _, StreamExt as _};
use tokio::net::{TcpListener, TcpStream};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(
    name = "bench-echo-peer",
    about = "tokio-tungstenite WebSocket echo server"
)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    address: std::net::IpAddr,
    /// Port to listen on.
    #[arg(long)]
    port: u16,
    /// Worker threads of the tokio multi-thread runtime.
    #[arg(long, default_value_t = 1)]
    threads: usize,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(args.threads >= 1, "--threads must be at least 1");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads)
        .enable_all()
        .build()?;
    runtime.block_on(serve(SocketAddr::new(args.address, args.port)))
}

async fn serve(address: SocketAddr) -> anyhow::Result<()> {
    let listener = TcpListener::bind(address).await?;
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            // Running out of file descriptors must not end the server.
            Err(error) => {
                eprintln!("accept: {error}");
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        tokio::spawn(async move {
            if let Err(error) = echo(stream).await {
                if !is_disconnect(&error) {
                    eprintln!("connection: {error}");
                }
            }
        });
    }
}

async fn echo(stream: TcpStream) -> Result<(), tokio_tungstenite::tungstenite::Error> {
    stream.set_nodelay(true)?;
    let mut ws = tokio_tungstenite::accept_async(stream).await?;
    while let Some(msg) = ws.next().await {
        let msg = msg?;
        if msg.is_binary() || msg.is_text() {
            ws.send(msg).await?;
        }
    }
    Ok(())
}

fn is_disconnect(error: &tokio_tungstenite::tungstenite::Error) -> bool {
    use tokio_tungstenite::tungstenite::Error;
    matches!(
        error,
        Error::ConnectionClosed | Error::AlreadyClosed | Error::Io(_) | Error::Protocol(_)
    )
}
