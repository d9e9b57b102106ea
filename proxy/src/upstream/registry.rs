//! The registry of a portal's upstreams: each one's configuration, observable state and status,
//! and the set that [`Upstreams::apply`] keeps matching the configuration (one
//! [`super::supervisor`] task per upstream).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, Instant};

use rmcp::RoleClient;
use rmcp::service::Peer;
use serde::Serialize;
use tokio::sync::{Notify, RwLock, watch};
use tokio_util::sync::CancellationToken;

use super::supervisor::supervise;
use super::{DirectClient, Lists, ProgressRouter, oauth, relay};
use crate::config::ServerConfig;

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
    pub(super) state: watch::Sender<State>,
    pub(super) refresh: Notify,
    pub(super) reconnect: Notify,
    pub(super) cancel: CancellationToken,
    /// The portal's own token for this upstream (`spec.remote.oauth`), kept across reconnects.
    pub(super) tokens: Option<Arc<oauth::TokenSource>>,
    /// `tools/call` requests sent by the [`DirectClient`] (across reconnects).
    pub(super) direct_calls: AtomicU64,
}

/// Why an upstream cannot be called now. The messages are fit for clients: they name the
/// McpServer, never its URL or the failure (those stay in the admin status and the log).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unavailable {
    /// The first connection attempt is still in progress.
    #[error("upstream {server} is not connected yet")]
    Connecting {
        /// The McpServer name.
        server: String,
    },
    /// The upstream is down; its supervisor is retrying with backoff.
    #[error("upstream {server} is unavailable; try again later")]
    Down {
        /// The McpServer name.
        server: String,
    },
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

    /// The peer to call, or why there is none, fit for clients (the details stay in the admin
    /// status and the log: they can hold internal URLs).
    pub fn peer(&self) -> Result<Peer<RoleClient>, Unavailable> {
        self.link().map(|l| l.peer)
    }

    /// Like [`Upstream::peer`], with the direct `tools/call` client when there is one.
    pub fn link(&self) -> Result<Link, Unavailable> {
        let st = self.state.borrow();
        match (&st.peer, st.health) {
            (Some(p), Health::Ready) => Ok(Link {
                peer: p.clone(),
                direct: st.direct.clone(),
            }),
            (_, Health::Connecting) => Err(Unavailable::Connecting {
                server: self.config.name.clone(),
            }),
            _ => Err(Unavailable::Down {
                server: self.config.name.clone(),
            }),
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

    pub(super) fn set(&self, f: impl FnOnce(&mut State)) {
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
    pub(super) by_name: RwLock<BTreeMap<String, Arc<Upstream>>>,
    /// Bumped whenever any upstream's catalog or health changes.
    pub(super) changes: watch::Sender<u64>,
    pub(super) progress: Arc<ProgressRouter>,
    pub(super) relay: OnceLock<Weak<dyn relay::Relay>>,
    pub(super) http: reqwest::Client,
    pub(super) shutdown: CancellationToken,
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

    pub(super) fn bump(&self) {
        self.changes.send_modify(|g| *g += 1);
    }
}
