//! `portcullis-demo`: the bundled demo MCP servers.
//!
//! ```text
//! portcullis-demo tickets   (--stdio | --listen ADDR)
//! portcullis-demo docs      (--stdio | --listen ADDR)
//! portcullis-demo synthetic --tools N [--name-prefix P] (--stdio | --listen ADDR)
//! ```
//!
//! `--listen` serves Streamable HTTP at `/mcp` for both protocol eras (legacy sessions and
//! stateless 2026-07-28) and prints `serving http://ADDR/mcp` on stdout once listening (port 0
//! picks a free port; the real one is printed). `--stdio` speaks newline-delimited JSON-RPC on
//! stdin/stdout. Logs go to stderr only. SIGTERM or ctrl-c shuts down gracefully.

mod docs;
mod synthetic;
mod tickets;

use std::{io::Write, net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context as _;
use axum::{Router, serve::ListenerExt as _};
use clap::{Args, Parser, Subcommand};
use rmcp::{
    ServerHandler, ServiceExt as _,
    transport::{
        StreamableHttpServerConfig, StreamableHttpService,
        streamable_http_server::session::local::LocalSessionManager,
    },
};
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

/// The bundled Portcullis demo MCP servers.
#[derive(Debug, Parser)]
#[command(name = "portcullis-demo", version, about)]
struct Cli {
    #[command(subcommand)]
    server: ServerKind,
}

#[derive(Debug, Subcommand)]
enum ServerKind {
    /// A ticket tracker: list_tickets, get_ticket, update_ticket_status, attach_document.
    Tickets(#[command(flatten)] TransportArgs),
    /// A document store: search_documents, get_document, create_document.
    Docs(#[command(flatten)] TransportArgs),
    /// N generated tools (`tool_0000`, …) plus a cheap `echo`, for benchmarks.
    Synthetic {
        /// How many generated tools to serve (in addition to `echo`).
        #[arg(long, default_value_t = 20)]
        tools: usize,
        /// Prepended to every generated tool name (`<prefix>tool_0000`); `echo` keeps its name.
        #[arg(long, default_value = "")]
        name_prefix: String,
        #[command(flatten)]
        transport: TransportArgs,
    },
}

#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
struct TransportArgs {
    /// Speak MCP over stdin/stdout (newline-delimited JSON-RPC).
    #[arg(long)]
    stdio: bool,
    /// Serve Streamable HTTP at http://ADDR/mcp (both protocol eras). Port 0 picks a free port.
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("building the tokio runtime")?;
    let result = runtime.block_on(run(cli));
    // A blocking stdin read (stdio on a terminal) cannot be cancelled; do not wait for it.
    runtime.shutdown_timeout(Duration::from_secs(1));
    result
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.server {
        ServerKind::Tickets(transport) => serve(tickets::TicketsServer::new(), transport).await,
        ServerKind::Docs(transport) => serve(docs::DocsServer::new(), transport).await,
        ServerKind::Synthetic {
            tools,
            name_prefix,
            transport,
        } => {
            serve(
                synthetic::SyntheticServer::new(tools, &name_prefix),
                transport,
            )
            .await
        }
    }
}

async fn serve<S>(server: S, transport: TransportArgs) -> anyhow::Result<()>
where
    S: ServerHandler + Clone,
{
    let shutdown = CancellationToken::new();
    tokio::spawn({
        let shutdown = shutdown.clone();
        async move {
            shutdown_signal().await;
            tracing::info!("shutdown signal received");
            shutdown.cancel();
        }
    });
    match transport.listen {
        Some(addr) => serve_http(server, addr, shutdown).await,
        None => serve_stdio(server, shutdown).await,
    }
}

async fn serve_stdio<S: ServerHandler>(
    server: S,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let name = server.get_info().server_info.name;
    // `stdio_pipes` drives piped stdin/stdout on the IO reactor (and falls back to blocking
    // handles for terminals and files), which is how MCP clients launch stdio servers.
    let running = server
        .serve(rmcp::transport::stdio_pipes())
        .await
        .context("MCP handshake over stdio")?;
    tracing::info!(server = %name, "serving MCP over stdio");
    let cancel = running.cancellation_token();
    tokio::select! {
        quit = running.waiting() => {
            tracing::info!(reason = ?quit.context("stdio service task")?, "stdio session ended");
        }
        () = shutdown.cancelled() => cancel.cancel(),
    }
    Ok(())
}

async fn serve_http<S>(
    server: S,
    addr: SocketAddr,
    shutdown: CancellationToken,
) -> anyhow::Result<()>
where
    S: ServerHandler + Clone,
{
    let name = server.get_info().server_info.name;
    let mut config = StreamableHttpServerConfig::default()
        // Cancelling the token ends every legacy session and its open SSE streams, so the
        // graceful shutdown below does not wait for idle GET streams.
        .with_cancellation_token(shutdown.child_token());
    if !addr.ip().is_loopback() {
        // rmcp only accepts loopback `Host` headers by default (DNS-rebinding protection for
        // local servers). Bound beyond loopback (a Pod), callers use Service names and Pod IPs.
        tracing::warn!(%addr, "not bound to loopback: accepting any Host header");
        config = config.disable_allowed_hosts();
    }
    let service = StreamableHttpService::new(
        move || Ok(server.clone()),
        Arc::new(LocalSessionManager::default()),
        config,
    );
    let app = Router::new().nest_service("/mcp", service);

    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    let local = listener.local_addr().context("reading the bound address")?;
    tracing::info!(server = %name, %local, "serving MCP over Streamable HTTP");
    {
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "serving http://{local}/mcp")?;
        stdout.flush()?;
    }

    // rmcp answers a POST in several small writes; without TCP_NODELAY each response waits for
    // the peer's delayed ACK (tens of calls per second instead of thousands).
    let listener = listener.tap_io(|stream| {
        if let Err(error) = stream.set_nodelay(true) {
            tracing::warn!(%error, "could not set TCP_NODELAY");
        }
    });
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
        .context("serving HTTP")?;
    tracing::info!("stopped");
    Ok(())
}

/// Resolves on ctrl-c or (on Unix) SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(%error, "cannot listen for ctrl-c");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}
