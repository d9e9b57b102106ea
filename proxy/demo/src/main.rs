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
#[command(name = "portcullis-demo", version)]
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
            // rmcp logs every stateless request at info; that would cost throughput in benchmarks.
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,rmcp=warn")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("building the tokio runtime")?;
    let result = runtime.block_on(run(cli));
    tracing::debug!("serving ended; shutting down the runtime");
    // A blocking stdin read (stdio on a terminal) cannot be cancelled; do not wait for it.
    runtime.shutdown_timeout(Duration::from_secs(1));
    tracing::debug!("runtime shut down");
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
    // Register the handlers before serving so that an early SIGTERM is not lost.
    let signal = shutdown_signal()?;
    tokio::spawn({
        let shutdown = shutdown.clone();
        async move {
            signal.await;
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
    // Shutdown must also work while waiting for the client's first message.
    let running = tokio::select! {
        running = server.serve(rmcp::transport::stdio_pipes()) => {
            running.context("MCP handshake over stdio")?
        }
        () = shutdown.cancelled() => return Ok(()),
    };
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
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    let local = listener.local_addr().context("reading the bound address")?;
    tracing::info!(server = %server.get_info().server_info.name, %local, "serving MCP over Streamable HTTP");
    {
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "serving http://{local}/mcp")?;
        stdout.flush()?;
    }
    serve_http_on(server, listener, shutdown).await
}

/// The Streamable HTTP app: the MCP endpoint at `/mcp`, both protocol eras.
fn app<S>(server: S, local: SocketAddr, shutdown: &CancellationToken) -> Router
where
    S: ServerHandler + Clone,
{
    let mut config = StreamableHttpServerConfig::default()
        // Cancelling the token ends every legacy session and its open SSE streams, so a
        // graceful shutdown does not wait for idle GET streams.
        .with_cancellation_token(shutdown.child_token());
    if !local.ip().is_loopback() {
        // rmcp only accepts loopback `Host` headers by default (DNS-rebinding protection for
        // local servers). Bound beyond loopback (a Pod), callers use Service names and Pod IPs.
        tracing::warn!(%local, "not bound to loopback: accepting any Host header");
        config = config.disable_allowed_hosts();
    }
    // The factory runs per session (legacy) or per request (stateless); clones share state.
    let service = StreamableHttpService::new(
        move || Ok(server.clone()),
        Arc::new(LocalSessionManager::default()),
        config,
    );
    Router::new().nest_service("/mcp", service)
}

async fn serve_http_on<S>(
    server: S,
    listener: tokio::net::TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()>
where
    S: ServerHandler + Clone,
{
    let local = listener.local_addr().context("reading the bound address")?;
    let app = app(server, local, &shutdown);
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

/// Registers for ctrl-c and (on Unix) SIGTERM; the returned future resolves on either.
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    #[cfg(unix)]
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("listening for SIGTERM")?;
    Ok(async move {
        #[cfg(unix)]
        let terminate = terminate.recv();
        #[cfg(not(unix))]
        let terminate = std::future::pending::<Option<()>>();
        tokio::select! {
            result = tokio::signal::ctrl_c() => {
                if let Err(error) = result {
                    tracing::error!(%error, "cannot listen for ctrl-c");
                    std::future::pending::<()>().await;
                }
            }
            _ = terminate => {}
        }
    })
}

#[cfg(test)]
mod test_support {
    use rmcp::{
        RoleClient, ServerHandler, ServiceExt as _,
        model::{CallToolRequestParams, CallToolResult, JsonObject},
        service::RunningService,
    };
    use serde_json::Value;

    pub type Client = RunningService<RoleClient, ()>;

    /// A plain-HTTP client (reqwest is built without a TLS provider of its own; install one).
    pub fn client_builder() -> reqwest::ClientBuilder {
        let _ = rustls::crypto::ring::default_provider().install_default();
        reqwest::Client::builder()
    }

    /// Runs `server` on one end of an in-process duplex pipe and returns an initialized client
    /// on the other end (the legacy `initialize` handshake, as a stdio client would do).
    pub async fn connect<S: ServerHandler>(server: S) -> Client {
        let (server_io, client_io) = tokio::io::duplex(256 * 1024);
        tokio::spawn(async move {
            if let Ok(running) = server.serve(server_io).await {
                let _ = running.waiting().await;
            }
        });
        ().serve(client_io).await.expect("client handshake")
    }

    pub fn args(value: Value) -> JsonObject {
        match value {
            Value::Object(object) => object,
            other => panic!("arguments must be an object, got {other}"),
        }
    }

    pub async fn call(client: &Client, name: &'static str, arguments: Value) -> CallToolResult {
        client
            .call_tool(CallToolRequestParams::new(name).with_arguments(args(arguments)))
            .await
            .unwrap_or_else(|error| panic!("calling {name}: {error}"))
    }

    /// The first text content of a tool result.
    pub fn text(result: &CallToolResult) -> &str {
        result
            .content
            .iter()
            .find_map(|content| content.as_text())
            .map(|text| text.text.as_str())
            .expect("a text content")
    }

    /// The structured content of a successful tool result, checked against its text twin.
    pub fn structured(result: &CallToolResult) -> Value {
        assert_eq!(
            result.is_error,
            Some(false),
            "unexpected tool error: {}",
            text(result)
        );
        let structured = result
            .structured_content
            .clone()
            .expect("structuredContent");
        let from_text: Value = serde_json::from_str(text(result)).expect("text content is JSON");
        assert_eq!(
            structured, from_text,
            "text content mirrors structuredContent"
        );
        structured
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, SocketAddr};

    use serde_json::{Value, json};
    use tokio_util::sync::CancellationToken;

    use super::{
        docs::DocsServer, serve_http_on, synthetic::SyntheticServer, test_support::*,
        tickets::TicketsServer,
    };

    #[tokio::test]
    async fn demo_workflow_attaches_a_found_document_to_the_in_progress_ticket() {
        let tickets = connect(TicketsServer::new()).await;
        let docs = connect(DocsServer::new()).await;

        let listed =
            structured(&call(&tickets, "list_tickets", json!({"status": "in_progress"})).await);
        let key = listed["tickets"][0]["key"]
            .as_str()
            .expect("a key")
            .to_owned();

        let hits = structured(
            &call(
                &docs,
                "search_documents",
                json!({"query": "rotate key runbook"}),
            )
            .await,
        );
        let id = hits["results"][0]["id"].as_str().expect("an id").to_owned();
        assert_eq!(id, "runbook-session-key-rotation");
        let doc = structured(&call(&docs, "get_document", json!({"id": id})).await);

        let attached = structured(
            &call(
                &tickets,
                "attach_document",
                json!({"key": key, "title": doc["title"], "content": doc["content"]}),
            )
            .await,
        );
        assert_eq!(attached["key"], "PORT-102");
        assert_eq!(attached["documents"][0]["title"], doc["title"]);

        let fetched = structured(&call(&tickets, "get_ticket", json!({"key": key})).await);
        assert_eq!(fetched["documents"].as_array().map(Vec::len), Some(1));
    }

    async fn start(server: SyntheticServer) -> (String, CancellationToken) {
        let listener = tokio::net::TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
            .await
            .expect("bind");
        let url = format!("http://{}/mcp", listener.local_addr().expect("addr"));
        let shutdown = CancellationToken::new();
        tokio::spawn(serve_http_on(server, listener, shutdown.clone()));
        (url, shutdown)
    }

    /// The JSON-RPC message carried by a response body (plain JSON or the last SSE `data:`).
    fn rpc_message(body: &str) -> Value {
        let payload = body
            .lines()
            .filter_map(|line| line.strip_prefix("data:"))
            .map(str::trim)
            .rfind(|data| !data.is_empty())
            .unwrap_or(body);
        serde_json::from_str(payload).unwrap_or_else(|e| panic!("{e}: {body}"))
    }

    #[tokio::test]
    async fn http_endpoint_answers_a_stateless_2026_call_without_a_session() {
        let (url, shutdown) = start(SyntheticServer::new(3, "")).await;
        let response = client_builder()
            .build()
            .unwrap()
            .post(&url)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .header("mcp-protocol-version", "2026-07-28")
            .header("mcp-method", "tools/call")
            .header("mcp-name", "echo")
            .body(
                json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {
                    "name": "echo",
                    "arguments": {"message": "hello portal"},
                    "_meta": {
                        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
                        "io.modelcontextprotocol/clientInfo": {"name": "test", "version": "0"},
                        "io.modelcontextprotocol/clientCapabilities": {}
                    }
                }})
                .to_string(),
            )
            .send()
            .await
            .expect("POST");
        assert_eq!(response.status(), 200);
        assert!(response.headers().get("mcp-session-id").is_none());
        let message = rpc_message(&response.text().await.expect("body"));
        assert_eq!(message["result"]["content"][0]["text"], "hello portal");
        assert_eq!(message["result"]["resultType"], "complete");
        shutdown.cancel();
    }

    #[tokio::test]
    async fn http_endpoint_opens_a_legacy_session_on_initialize() {
        let (url, shutdown) = start(SyntheticServer::new(3, "")).await;
        let http = client_builder().build().unwrap();
        let post = |body: Value, session: Option<String>| {
            let mut request = http
                .post(&url)
                .header("content-type", "application/json")
                .header("accept", "application/json, text/event-stream")
                .body(body.to_string());
            if let Some(session) = session {
                request = request
                    .header("mcp-session-id", session)
                    .header("mcp-protocol-version", "2025-06-18");
            }
            request.send()
        };
        let init = post(
            json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
                "protocolVersion": "2025-06-18",
                "capabilities": {},
                "clientInfo": {"name": "test", "version": "0"}
            }}),
            None,
        )
        .await
        .expect("initialize");
        let session = init
            .headers()
            .get("mcp-session-id")
            .expect("a session id")
            .to_str()
            .expect("ascii")
            .to_owned();
        let init = rpc_message(&init.text().await.expect("body"));
        assert_eq!(
            init["result"]["serverInfo"]["name"],
            "portcullis-demo-synthetic"
        );

        let initialized = post(
            json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
            Some(session.clone()),
        )
        .await
        .expect("initialized");
        assert_eq!(initialized.status(), 202);

        let listed = post(
            json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"}),
            Some(session),
        )
        .await
        .expect("tools/list");
        let listed = rpc_message(&listed.text().await.expect("body"));
        let names: Vec<&str> = listed["result"]["tools"]
            .as_array()
            .expect("tools")
            .iter()
            .filter_map(|tool| tool["name"].as_str())
            .collect();
        assert_eq!(names, ["tool_0000", "tool_0001", "tool_0002", "echo"]);
        shutdown.cancel();
    }
}
