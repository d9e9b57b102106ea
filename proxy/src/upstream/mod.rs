//! Upstream MCP servers: connecting, health, reconnects with backoff, and their catalogs.
//!
//! Each upstream has one supervisor task that connects (Streamable HTTP in either protocol era,
//! legacy HTTP+SSE, or a stdio child process), fetches the lists, and then watches the
//! connection. A server that is down, slow or answers garbage is marked `down` with the reason:
//! its tools leave the portal's lists and calls to it fail at once, while the supervisor retries
//! with exponential backoff. Nothing one upstream does can stall another.

pub mod client;
pub mod direct;
pub mod h1;
pub mod oauth;
pub mod relay;
pub mod sse;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, Instant};

use rmcp::RoleClient;
use rmcp::model::{
    ClientRequest, PingRequest, Prompt, ProtocolVersion, Resource, ResourceTemplate, Tool,
};
use rmcp::service::{ClientLifecycleMode, ClientServiceExt, Peer, RunningService};
use serde::Serialize;
use tokio::sync::{Notify, RwLock, watch};
use tokio_util::sync::CancellationToken;

use crate::config::{ServerConfig, Transport};
pub use client::{ProgressRouter, UpstreamClient};
pub use direct::DirectClient;

/// Longest wait between reconnect attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// First wait after a failure.
const MIN_BACKOFF: Duration = Duration::from_millis(500);
/// How often a connected upstream is pinged. A stateless (2026-07-28) HTTP upstream holds no
/// connection whose loss we would notice, so this bounds how long a dead one stays listed.
const PING_INTERVAL: Duration = Duration::from_secs(5);
/// Upper bound on how many list pages we follow from one upstream.
const MAX_LIST_PAGES: usize = 100;

/// Health of one upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    /// Not connected yet (first attempt in progress).
    Connecting,
    /// Connected; lists fetched.
    Ready,
    /// Failed; retrying with backoff.
    Down,
}

/// What an upstream offers, as of its last successful list.
#[derive(Debug, Default, Clone)]
pub struct Lists {
    /// Tools.
    pub tools: Vec<Tool>,
    /// Prompts.
    pub prompts: Vec<Prompt>,
    /// Resources.
    pub resources: Vec<Resource>,
    /// Resource templates.
    pub templates: Vec<ResourceTemplate>,
}

/// The observable state of one upstream.
#[derive(Clone)]
pub struct State {
    /// Health.
    pub health: Health,
    /// The live connection, when ready.
    pub peer: Option<Peer<RoleClient>>,
    /// The direct `tools/call` client, when ready and the upstream is a stateless (2026-07-28)
    /// Streamable HTTP server. Built and dropped with `peer`.
    pub direct: Option<Arc<DirectClient>>,
    /// The lists, when ready (empty otherwise).
    pub catalog: Arc<Lists>,
    /// Last error, for status and logs.
    pub error: Option<String>,
    /// Negotiated protocol version.
    pub protocol: Option<String>,
    /// When the health last changed.
    pub since: Instant,
}

/// One upstream server and its supervisor.
pub struct Upstream {
    /// Its configuration.
    pub config: ServerConfig,
    state: watch::Sender<State>,
    refresh: Notify,
    reconnect: Notify,
    cancel: CancellationToken,
    /// The portal's own token for this upstream (`spec.remote.oauth`), kept across reconnects.
    tokens: Option<Arc<oauth::TokenSource>>,
    /// `tools/call` requests sent by the [`DirectClient`] (across reconnects).
    direct_calls: AtomicU64,
}

/// How to reach a ready upstream: its rmcp peer, and the direct `tools/call` client when it
/// has one.
#[derive(Clone)]
pub struct Link {
    /// The rmcp peer (every method).
    pub peer: Peer<RoleClient>,
    /// The direct `tools/call` client (stateless Streamable HTTP upstreams only).
    pub direct: Option<Arc<DirectClient>>,
}

impl Upstream {
    /// The current state.
    pub fn state(&self) -> State {
        self.state.borrow().clone()
    }

    /// The peer to call, or a reason fit for clients (the details stay in the admin status
    /// and the log: they can hold internal URLs).
    pub fn peer(&self) -> Result<Peer<RoleClient>, String> {
        self.link().map(|l| l.peer)
    }

    /// Like [`Upstream::peer`], with the direct `tools/call` client when there is one.
    pub fn link(&self) -> Result<Link, String> {
        let st = self.state.borrow();
        match (&st.peer, st.health) {
            (Some(p), Health::Ready) => Ok(Link {
                peer: p.clone(),
                direct: st.direct.clone(),
            }),
            (_, Health::Connecting) => Err(format!(
                "upstream {} is not connected yet",
                self.config.name
            )),
            _ => Err(format!(
                "upstream {} is unavailable; try again later",
                self.config.name
            )),
        }
    }

    /// Asks the supervisor to fetch the lists again (after a `list_changed` notification).
    pub fn request_refresh(&self) {
        self.refresh.notify_one();
    }

    /// Tells the supervisor the connection looks broken (a call failed at the transport).
    pub fn report_broken(&self) {
        self.reconnect.notify_one();
    }

    fn set(&self, f: impl FnOnce(&mut State)) {
        self.state.send_modify(|s| {
            let before = s.health;
            f(s);
            if s.health != before {
                s.since = Instant::now();
            }
        });
    }
}

/// Status of one upstream as the admin endpoint reports it.
#[derive(Debug, Clone, Serialize)]
pub struct UpstreamStatus {
    /// McpServer name.
    pub name: String,
    /// Health.
    pub state: Health,
    /// Number of tools in the last list.
    pub tools: usize,
    /// Negotiated protocol version.
    pub protocol: Option<String>,
    /// How it is reached (no secrets).
    pub transport: String,
    /// Last error.
    pub error: Option<String>,
    /// Seconds in the current state.
    pub seconds_in_state: u64,
    /// `tools/call` requests sent without rmcp's client (stateless Streamable HTTP upstreams).
    pub direct_calls: u64,
}

/// How long a new connection to an upstream may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// All upstreams of a portal.
pub struct Upstreams {
    by_name: RwLock<BTreeMap<String, Arc<Upstream>>>,
    /// Bumped whenever any upstream's catalog or health changes.
    changes: watch::Sender<u64>,
    progress: Arc<ProgressRouter>,
    relay: OnceLock<Weak<dyn relay::Relay>>,
    http: reqwest::Client,
    shutdown: CancellationToken,
}

impl Upstreams {
    /// An empty set; call [`Upstreams::apply`] with the servers.
    pub fn new(shutdown: CancellationToken) -> Arc<Self> {
        let http = crate::tls::client_builder()
            .pool_idle_timeout(Duration::from_secs(60))
            .connect_timeout(CONNECT_TIMEOUT)
            .build()
            .expect("static reqwest configuration is valid");
        Arc::new(Upstreams {
            by_name: RwLock::new(BTreeMap::new()),
            changes: watch::channel(0).0,
            progress: Arc::new(ProgressRouter::default()),
            relay: OnceLock::new(),
            http,
            shutdown,
        })
    }

    /// Routes progress notifications from upstreams to the waiting downstream requests.
    pub fn progress(&self) -> &Arc<ProgressRouter> {
        &self.progress
    }

    /// Where upstream connections made from now on hand relayed traffic (the portal). Set once,
    /// before the first connection.
    pub fn set_relay(&self, relay: Weak<dyn relay::Relay>) {
        let _ = self.relay.set(relay);
    }

    /// How many catalog or health changes there have been.
    pub fn generation(&self) -> u64 {
        *self.changes.borrow()
    }

    /// A receiver that changes whenever any catalog or health changes.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// The upstreams, sorted by name.
    pub async fn all(&self) -> Vec<Arc<Upstream>> {
        self.by_name.read().await.values().cloned().collect()
    }

    /// One upstream by McpServer name.
    pub async fn get(&self, name: &str) -> Option<Arc<Upstream>> {
        self.by_name.read().await.get(name).cloned()
    }

    /// Status of every upstream, for the admin endpoint.
    pub async fn status(&self) -> Vec<UpstreamStatus> {
        self.all()
            .await
            .iter()
            .map(|u| {
                let st = u.state();
                UpstreamStatus {
                    name: u.config.name.clone(),
                    state: st.health,
                    tools: st.catalog.tools.len(),
                    protocol: st.protocol.clone(),
                    transport: u.config.transport.describe(),
                    error: st.error.clone(),
                    seconds_in_state: st.since.elapsed().as_secs(),
                    direct_calls: u.direct_calls.load(Ordering::Relaxed),
                }
            })
            .collect()
    }

    /// Makes the running set match `servers`: starts new ones, restarts changed ones, stops
    /// removed ones. Unchanged upstreams keep their connections.
    pub async fn apply(self: &Arc<Self>, servers: &[ServerConfig]) {
        let mut map = self.by_name.write().await;
        let wanted: BTreeMap<_, _> = servers.iter().map(|s| (s.name.clone(), s)).collect();
        map.retain(|name, up| {
            let keep = wanted.get(name).is_some_and(|cfg| **cfg == up.config);
            if !keep {
                tracing::info!(upstream = %name, "stopping upstream (removed or changed)");
                up.cancel.cancel();
            }
            keep
        });
        for (name, cfg) in wanted {
            if map.contains_key(&name) {
                continue;
            }
            let up = Arc::new(Upstream {
                config: cfg.clone(),
                state: watch::channel(State {
                    health: Health::Connecting,
                    peer: None,
                    direct: None,
                    catalog: Arc::new(Lists::default()),
                    error: None,
                    protocol: None,
                    since: Instant::now(),
                })
                .0,
                refresh: Notify::new(),
                reconnect: Notify::new(),
                cancel: self.shutdown.child_token(),
                tokens: cfg
                    .oauth
                    .clone()
                    .map(|o| Arc::new(oauth::TokenSource::new(self.http.clone(), o))),
                direct_calls: AtomicU64::new(0),
            });
            map.insert(name, up.clone());
            tokio::spawn(supervise(self.clone(), up));
        }
        drop(map);
        self.bump();
    }

    /// Waits until every upstream has left `connecting` or `deadline` passes.
    pub async fn settled(&self, deadline: Duration) {
        let until = Instant::now() + deadline;
        loop {
            let pending = self
                .all()
                .await
                .iter()
                .any(|u| u.state().health == Health::Connecting);
            if !pending || Instant::now() >= until {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn bump(&self) {
        self.changes.send_modify(|g| *g += 1);
    }
}

async fn supervise(all: Arc<Upstreams>, up: Arc<Upstream>) {
    let name = up.config.name.clone();
    let mut backoff = MIN_BACKOFF;
    loop {
        if up.cancel.is_cancelled() {
            break;
        }
        let attempt = tokio::time::timeout(up.config.timeout, connect(&all, &up)).await;
        let running = match attempt {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                fail(&all, &up, e, &mut backoff).await;
                continue;
            }
            Err(_) => {
                let e = format!(
                    "no answer within {}s while connecting",
                    up.config.timeout.as_secs()
                );
                fail(&all, &up, e, &mut backoff).await;
                continue;
            }
        };
        let peer = running.peer().clone();
        let protocol = peer.peer_info().map(|i| i.protocol_version.to_string());
        match fetch_catalog(&peer, up.config.timeout).await {
            Ok(catalog) => {
                let direct = direct_client(&all, &up, &peer);
                tracing::info!(upstream = %name, tools = catalog.tools.len(), protocol = ?protocol, direct = direct.is_some(), "upstream ready");
                up.set(|s| {
                    s.health = Health::Ready;
                    s.peer = Some(peer.clone());
                    s.direct = direct;
                    s.catalog = Arc::new(catalog);
                    s.error = None;
                    s.protocol = protocol;
                });
                all.bump();
                backoff = MIN_BACKOFF;
                if let Some(relay) = all.relay.get().and_then(Weak::upgrade) {
                    let name = name.clone();
                    tokio::spawn(async move { relay.connected(&name).await });
                }
            }
            Err(e) => {
                close(running).await;
                fail(&all, &up, e, &mut backoff).await;
                continue;
            }
        }
        let listener = listen_for_list_changes(&up, &peer);
        let reason = watch_connection(&up, &peer, &running, &all).await;
        if let Some(l) = listener {
            l.abort();
        }
        close(running).await;
        if up.cancel.is_cancelled() {
            break;
        }
        fail(&all, &up, reason, &mut backoff).await;
    }
    tracing::debug!(upstream = %name, "supervisor stopped");
}

/// In the 2026-07-28 era a server sends `notifications/*/list_changed` only on a
/// `subscriptions/listen` stream: open one when the server says its lists can change, and ask
/// for a re-list on each notification (legacy sessions deliver them to [`client`]'s handler).
/// Without this an upstream could change a tool definition unseen until the next reconnect.
fn listen_for_list_changes(
    up: &Arc<Upstream>,
    peer: &Peer<RoleClient>,
) -> Option<tokio::task::JoinHandle<()>> {
    use rmcp::model::{ServerNotification, SubscriptionFilter};
    let info = peer.peer_info()?;
    if info.protocol_version != ProtocolVersion::V_2026_07_28 {
        return None;
    }
    let caps = &info.capabilities;
    let mut filter = SubscriptionFilter::builder();
    let mut any = false;
    if caps.tools.as_ref().and_then(|t| t.list_changed) == Some(true) {
        filter = filter.tools_list_changed();
        any = true;
    }
    if caps.prompts.as_ref().and_then(|p| p.list_changed) == Some(true) {
        filter = filter.prompts_list_changed();
        any = true;
    }
    if caps.resources.as_ref().and_then(|r| r.list_changed) == Some(true) {
        filter = filter.resources_list_changed();
        any = true;
    }
    if !any {
        return None;
    }
    let filter = filter.build();
    let peer = peer.clone();
    let up = Arc::downgrade(up);
    Some(tokio::spawn(async move {
        let name = up
            .upgrade()
            .map(|u| u.config.name.clone())
            .unwrap_or_default();
        let mut sub = match peer.listen(filter).await {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(upstream = %name, error = %e, "subscriptions/listen refused; list changes are seen on reconnect");
                return;
            }
        };
        loop {
            match sub.next().await {
                Ok(Some(
                    ServerNotification::ToolListChangedNotification(_)
                    | ServerNotification::PromptListChangedNotification(_)
                    | ServerNotification::ResourceListChangedNotification(_),
                )) => match up.upgrade() {
                    Some(u) => u.request_refresh(),
                    None => return,
                },
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => {
                    tracing::debug!(upstream = %name, end = ?sub.end(), "subscriptions/listen stream ended");
                    return;
                }
            }
        }
    }))
}

/// Watches a live connection; returns why it ended.
async fn watch_connection(
    up: &Upstream,
    peer: &Peer<RoleClient>,
    running: &RunningService<RoleClient, UpstreamClient>,
    all: &Upstreams,
) -> String {
    let mut ping = tokio::time::interval(PING_INTERVAL);
    ping.tick().await;
    let mut closed_check = tokio::time::interval(Duration::from_millis(250));
    loop {
        tokio::select! {
            _ = up.cancel.cancelled() => return "stopped".into(),
            _ = up.reconnect.notified() => {
                // A call failed at the transport: check now instead of at the next ping.
                if running.is_closed() || peer.is_transport_closed() {
                    return "connection lost".into();
                }
                if let Some(reason) = ping_fails(peer, up.config.timeout).await {
                    return reason;
                }
            }
            _ = closed_check.tick() => {
                if running.is_closed() || peer.is_transport_closed() {
                    return "connection closed by the upstream".into();
                }
            }
            _ = up.refresh.notified() => {
                match fetch_catalog(peer, up.config.timeout).await {
                    Ok(c) => {
                        tracing::info!(upstream = %up.config.name, tools = c.tools.len(), "upstream lists changed");
                        up.set(|s| s.catalog = Arc::new(c));
                        all.bump();
                    }
                    Err(e) => return format!("refreshing lists failed: {e}"),
                }
            }
            _ = ping.tick() => {
                if let Some(reason) = ping_fails(peer, up.config.timeout).await {
                    return reason;
                }
            }
        }
    }
}

/// Why the upstream is not alive, or `None` when it answered a `ping`.
///
/// A ping that fails at the transport is sent once more before the upstream is called down:
/// servers close idle keep-alive connections (uvicorn and Node after 5 s, the ping interval),
/// and a ping sent on a pooled connection just as the server closes it fails without the
/// server being any less alive. Hiding every tool of a healthy server for a backoff period on
/// that would make it flap. A ping left unanswered is not retried: it already took `timeout`.
async fn ping_fails(peer: &Peer<RoleClient>, timeout: Duration) -> Option<String> {
    let mut failure = None;
    for _ in 0..2 {
        let req = ClientRequest::PingRequest(PingRequest::default());
        match tokio::time::timeout(timeout, peer.send_request(req)).await {
            Ok(Ok(_)) => return None,
            // Any JSON-RPC answer proves the server is alive; 2026-07-28 servers answer `ping`
            // with -32601 (it is not part of that protocol).
            Ok(Err(rmcp::ServiceError::McpError(_))) => return None,
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "ping failed at the transport; sending it once more");
                failure = Some(format!("ping failed: {e}"));
            }
            Err(_) => return Some(format!("ping unanswered within {}s", timeout.as_secs())),
        }
    }
    failure
}

async fn fail(all: &Upstreams, up: &Upstream, error: String, backoff: &mut Duration) {
    let first = up.state().health != Health::Down;
    if first {
        tracing::warn!(upstream = %up.config.name, %error, "upstream down; its tools are hidden until it recovers");
    } else {
        tracing::debug!(upstream = %up.config.name, %error, "upstream still down");
    }
    up.set(|s| {
        s.health = Health::Down;
        s.peer = None;
        s.direct = None;
        s.catalog = Arc::new(Lists::default());
        s.error = Some(error);
    });
    all.bump();
    tokio::select! {
        _ = up.cancel.cancelled() => {}
        _ = tokio::time::sleep(*backoff) => {}
    }
    *backoff = (*backoff * 2).min(MAX_BACKOFF);
}

async fn close(mut running: RunningService<RoleClient, UpstreamClient>) {
    let _ = running.close_with_timeout(Duration::from_secs(2)).await;
}

fn header_map(headers: &[(String, String)]) -> Result<reqwest::header::HeaderMap, String> {
    let mut map = reqwest::header::HeaderMap::new();
    for (k, v) in headers {
        let name = reqwest::header::HeaderName::from_bytes(k.as_bytes())
            .map_err(|_| format!("invalid header name {k:?}"))?;
        let mut value = reqwest::header::HeaderValue::from_str(v)
            .map_err(|_| format!("invalid value for header {k:?}"))?;
        value.set_sensitive(true);
        map.insert(name, value);
    }
    Ok(map)
}

/// The header an upstream that opted in to `spec.identity` gets the caller's signed identity in.
fn identity_header(config: &ServerConfig) -> Result<Option<reqwest::header::HeaderName>, String> {
    config
        .identity
        .as_ref()
        .map(|i| {
            reqwest::header::HeaderName::from_bytes(i.header.as_bytes())
                .map_err(|_| format!("invalid identity header name {:?}", i.header))
        })
        .transpose()
}

/// The direct `tools/call` client for a Streamable HTTP upstream that negotiated 2026-07-28
/// (stateless: a call is one POST). `None` for every other upstream.
fn direct_client(
    all: &Upstreams,
    up: &Arc<Upstream>,
    peer: &Peer<RoleClient>,
) -> Option<Arc<DirectClient>> {
    let Transport::StreamableHttp { url, headers } = &up.config.transport else {
        return None;
    };
    if peer.peer_info()?.protocol_version != ProtocolVersion::V_2026_07_28 {
        return None;
    }
    // Both succeeded in `connect` moments ago; a failure here only means no direct path.
    let built = header_map(headers).and_then(|custom| {
        DirectClient::new(
            up.config.name.clone(),
            all.http.clone(),
            url,
            custom,
            up.tokens.clone(),
            identity_header(&up.config)?,
            Arc::downgrade(up),
        )
        .map(|client| client.with_relay(all.relay.get().cloned()))
    });
    match built {
        Ok(d) => Some(Arc::new(d)),
        Err(e) => {
            tracing::warn!(upstream = %up.config.name, error = %e, "no direct tools/call path");
            None
        }
    }
}

fn lifecycle() -> ClientLifecycleMode {
    ClientLifecycleMode::Auto {
        preferred_versions: vec![ProtocolVersion::V_2026_07_28],
        legacy_version: Some(ProtocolVersion::V_2025_11_25),
    }
}

async fn connect(
    all: &Arc<Upstreams>,
    up: &Arc<Upstream>,
) -> Result<RunningService<RoleClient, UpstreamClient>, String> {
    let handler = UpstreamClient::new(
        up.config.name.clone(),
        Arc::downgrade(up),
        all.progress.clone(),
    )
    .with_relay(all.relay.get().cloned());
    let err = |e: &dyn std::fmt::Display| e.to_string();
    match &up.config.transport {
        Transport::StreamableHttp { url, headers } => {
            use rmcp::transport::streamable_http_client::{
                StreamableHttpClientTransport, StreamableHttpClientTransportConfig,
            };
            let mut config = StreamableHttpClientTransportConfig::with_uri(url.as_str());
            let mut custom = std::collections::HashMap::new();
            for (k, v) in header_map(headers)? {
                if let Some(k) = k {
                    custom.insert(k, v);
                }
            }
            config = config.custom_headers(custom);
            // Each message arriving on the response stream of a POST relates to the request
            // posted: only this transport lets the portal relay server requests and logs.
            let associations = Arc::new(relay::Associations::default());
            let handler = handler.with_associations(associations.clone());
            let client = oauth::AuthorizedClient::new(
                all.http.clone(),
                up.tokens.clone(),
                identity_header(&up.config)?,
            )
            .with_associations(associations);
            let transport = StreamableHttpClientTransport::with_client(client, config);
            handler
                .serve_with_lifecycle(transport, lifecycle())
                .await
                .map_err(|e| err(&e))
        }
        Transport::Sse { url, headers } => {
            let (sink, stream) = sse::connect(
                all.http.clone(),
                url,
                header_map(headers)?,
                up.tokens.clone(),
                identity_header(&up.config)?,
                up.config.timeout,
            )
            .await
            .map_err(|e| err(&e))?;
            // Legacy SSE servers predate `server/discover`: go straight to initialize.
            handler
                .serve_with_lifecycle((sink, stream), ClientLifecycleMode::Initialize)
                .await
                .map_err(|e| err(&e))
        }
        Transport::Stdio { command, args, env } => {
            use rmcp::transport::TokioChildProcess;
            let mut cmd = tokio::process::Command::new(command);
            cmd.args(args);
            for (k, v) in env {
                cmd.env(k, v);
            }
            cmd.env("PATH", child_path());
            cmd.kill_on_drop(true);
            let (transport, stderr) = TokioChildProcess::builder(cmd)
                .stderr(std::process::Stdio::piped())
                .spawn()
                .map_err(|e| format!("cannot start {command:?}: {e}"))?;
            if let Some(stderr) = stderr {
                forward_stderr(up.config.name.clone(), stderr);
            }
            handler
                .serve_with_lifecycle(transport, lifecycle())
                .await
                .map_err(|e| err(&e))
        }
    }
}

/// `PATH` for child processes: the proxy's own directory first, so bundled binaries (the demo
/// servers) are found next to it.
fn child_path() -> std::ffi::OsString {
    let mut parts = Vec::new();
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.to_owned()))
    {
        parts.push(dir);
    }
    if let Some(path) = std::env::var_os("PATH") {
        parts.extend(std::env::split_paths(&path));
    }
    std::env::join_paths(parts).unwrap_or_default()
}

/// A stdio server's stderr is its log: forward it, line by line, to ours.
fn forward_stderr(name: String, stderr: tokio::process::ChildStderr) {
    use tokio::io::AsyncBufReadExt;
    tokio::spawn(async move {
        let mut lines = tokio::io::BufReader::new(stderr).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            let line: String = line.chars().take(2000).collect();
            tracing::info!(upstream = %name, "{line}");
        }
    });
}

/// Fetches every list the upstream supports, following its cursors (bounded).
async fn fetch_catalog(peer: &Peer<RoleClient>, timeout: Duration) -> Result<Lists, String> {
    let caps = peer
        .peer_info()
        .map(|i| i.capabilities.clone())
        .unwrap_or_default();
    let t =
        |what: &'static str| move |_| format!("{what} unanswered within {}s", timeout.as_secs());
    let mut catalog = Lists::default();
    if caps.tools.is_some() {
        catalog.tools = tokio::time::timeout(
            timeout,
            list_all(|c| peer.list_tools(c), |r| (r.tools, r.next_cursor)),
        )
        .await
        .map_err(t("tools/list"))?
        .map_err(|e| format!("tools/list failed: {e}"))?;
    }
    if caps.prompts.is_some() {
        catalog.prompts = tokio::time::timeout(
            timeout,
            list_all(|c| peer.list_prompts(c), |r| (r.prompts, r.next_cursor)),
        )
        .await
        .map_err(t("prompts/list"))?
        .map_err(|e| format!("prompts/list failed: {e}"))?;
    }
    if caps.resources.is_some() {
        catalog.resources = tokio::time::timeout(
            timeout,
            list_all(|c| peer.list_resources(c), |r| (r.resources, r.next_cursor)),
        )
        .await
        .map_err(t("resources/list"))?
        .map_err(|e| format!("resources/list failed: {e}"))?;
        // Templates are optional even for servers with resources.
        catalog.templates = tokio::time::timeout(
            timeout,
            list_all(
                |c| peer.list_resource_templates(c),
                |r| (r.resource_templates, r.next_cursor),
            ),
        )
        .await
        .map_err(t("resources/templates/list"))?
        .unwrap_or_default();
    }
    Ok(catalog)
}

async fn list_all<R, T, F, Fut>(
    call: F,
    split: impl Fn(R) -> (Vec<T>, Option<String>),
) -> Result<Vec<T>, rmcp::ServiceError>
where
    F: Fn(Option<rmcp::model::PaginatedRequestParams>) -> Fut,
    Fut: Future<Output = Result<R, rmcp::ServiceError>>,
{
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..MAX_LIST_PAGES {
        let params = cursor
            .take()
            .map(|c| rmcp::model::PaginatedRequestParams::default().with_cursor(Some(c)));
        let (items, next) = split(call(params).await?);
        out.extend(items);
        match next {
            Some(c) if !c.is_empty() => cursor = Some(c),
            _ => return Ok(out),
        }
    }
    tracing::warn!("upstream list has more than {MAX_LIST_PAGES} pages; truncated");
    Ok(out)
}
