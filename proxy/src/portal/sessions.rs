//! Per-session state of legacy downstream sessions: the log level a client set, and its
//! resource subscriptions.
//!
//! Resource subscriptions are the portal's own: one upstream `resources/subscribe` per
//! (server, URI) however many sessions want it, `notifications/resources/updated` delivered
//! (URI in the portal's form) only to the sessions that subscribed and may still see the
//! server, and the upstream subscription dropped when the last of them unsubscribes or ends.
//!
//! Like `list_changed` notifications, this state lives in the memory of the replica that
//! served the request: a session whose next request lands on another replica keeps its
//! subscription here (delivered while its stream is on this replica) and starts without a log
//! level there.
#![allow(deprecated)] // logging levels and resources/subscribe are legacy-era (SEP-2577, SEP-2567).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Mutex;

use rmcp::model::{
    LoggingLevel, ResourceUpdatedNotificationParam, SubscribeRequestParams,
    UnsubscribeRequestParams,
};
use rmcp::service::Peer;
use rmcp::{ErrorData, RoleServer};
use tokio_util::sync::CancellationToken;

use super::Portal;
use crate::model::Identity;

/// Sessions tracked at most (the oldest closed ones go first; beyond it new state is refused).
pub const MAX_SESSIONS: usize = 100_000;
/// Resource subscriptions one session may hold.
pub const MAX_SUBSCRIPTIONS_PER_SESSION: usize = 256;

/// (McpServer name, upstream URI).
type ResourceKey = (String, String);

struct Entry {
    peer: Peer<RoleServer>,
    identity: Identity,
    level: Option<LoggingLevel>,
    /// Subscribed resources, with the URI the client subscribed with.
    subscriptions: BTreeMap<ResourceKey, String>,
}

/// The state of every legacy session seen by this replica.
#[derive(Default)]
pub struct Sessions {
    entries: Mutex<HashMap<String, Entry>>,
    /// Serializes upstream subscribe/unsubscribe, so an upstream is never left unsubscribed
    /// from a resource some session still wants.
    changes: tokio::sync::Mutex<()>,
}

/// Where to deliver one resource update.
pub struct Delivery {
    /// The subscribed session.
    pub peer: Peer<RoleServer>,
    /// Who opened it.
    pub identity: Identity,
    /// The URI as the client knows it.
    pub uri: String,
}

/// Severity rank (`LoggingLevel` has no order of its own).
pub fn rank(level: LoggingLevel) -> u8 {
    level as u8
}

impl Sessions {
    fn with_entry<T>(
        &self,
        session: &str,
        peer: &Peer<RoleServer>,
        identity: &Identity,
        f: impl FnOnce(&mut Entry) -> T,
    ) -> Result<T, ErrorData> {
        let mut entries = self
            .entries
            .lock()
            .map_err(|_| ErrorData::internal_error("session state unavailable", None))?;
        if !entries.contains_key(session) && entries.len() >= MAX_SESSIONS {
            entries.retain(|_, e| !e.peer.is_transport_closed());
            if entries.len() >= MAX_SESSIONS {
                return Err(ErrorData::internal_error(
                    "too many sessions hold portal state; try again later",
                    None,
                ));
            }
        }
        let entry = entries.entry(session.to_owned()).or_insert_with(|| Entry {
            peer: peer.clone(),
            identity: identity.clone(),
            level: None,
            subscriptions: BTreeMap::new(),
        });
        // A session restored after a reconnect has a new peer; it is the same session.
        entry.peer = peer.clone();
        entry.identity = identity.clone();
        Ok(f(entry))
    }

    /// Records the `logging/setLevel` of a session.
    pub fn set_level(
        &self,
        session: &str,
        peer: &Peer<RoleServer>,
        identity: &Identity,
        level: LoggingLevel,
    ) -> Result<(), ErrorData> {
        self.with_entry(session, peer, identity, |e| e.level = Some(level))
    }

    /// The level a session asked for, if it did.
    pub fn level(&self, session: &str) -> Option<LoggingLevel> {
        self.entries.lock().ok()?.get(session)?.level
    }

    fn subscribed_anywhere(&self, key: &ResourceKey) -> bool {
        self.entries
            .lock()
            .map(|m| m.values().any(|e| e.subscriptions.contains_key(key)))
            .unwrap_or(false)
    }

    /// Subscribes `session` to `uri` of `server` (the caller checked it may see the server).
    #[allow(clippy::too_many_arguments)]
    pub async fn subscribe(
        &self,
        portal: &Portal,
        session: &str,
        peer: &Peer<RoleServer>,
        identity: &Identity,
        server: String,
        uri: String,
        portal_uri: String,
        ct: &CancellationToken,
    ) -> Result<(), ErrorData> {
        let _changes = self.changes.lock().await;
        let key = (server, uri);
        let already = self.with_entry(session, peer, identity, |e| {
            e.subscriptions.contains_key(&key)
        })?;
        if already {
            return Ok(());
        }
        let full = self.with_entry(session, peer, identity, |e| {
            e.subscriptions.len() >= MAX_SUBSCRIPTIONS_PER_SESSION
        })?;
        if full {
            return Err(ErrorData::invalid_request(
                format!(
                    "at most {MAX_SUBSCRIPTIONS_PER_SESSION} resource subscriptions per session"
                ),
                None,
            ));
        }
        if !self.subscribed_anywhere(&key) {
            subscribe_upstream(portal, &key.0, &key.1, ct).await?;
        }
        self.with_entry(session, peer, identity, |e| {
            e.subscriptions.insert(key, portal_uri);
        })
    }

    /// Unsubscribes `session` from `uri` of `server`; the upstream subscription goes with the
    /// last subscriber.
    pub async fn unsubscribe(&self, portal: &Portal, session: &str, server: String, uri: String) {
        let _changes = self.changes.lock().await;
        let key = (server, uri);
        let removed = self
            .entries
            .lock()
            .ok()
            .and_then(|mut m| m.get_mut(session)?.subscriptions.remove(&key))
            .is_some();
        if removed && !self.subscribed_anywhere(&key) {
            unsubscribe_upstream(portal, &key.0, &key.1).await;
        }
    }

    /// The sessions to tell that `uri` of `server` changed.
    pub fn subscribers(&self, server: &str, uri: &str) -> Vec<Delivery> {
        let key = (server.to_owned(), uri.to_owned());
        let Ok(entries) = self.entries.lock() else {
            return Vec::new();
        };
        entries
            .values()
            .filter(|e| !e.peer.is_transport_closed())
            .filter_map(|e| {
                Some(Delivery {
                    peer: e.peer.clone(),
                    identity: e.identity.clone(),
                    uri: e.subscriptions.get(&key)?.clone(),
                })
            })
            .collect()
    }

    /// Forgets sessions whose transport closed, and drops the upstream subscriptions nobody
    /// holds any more.
    pub async fn sweep(&self, portal: &Portal) {
        let _changes = self.changes.lock().await;
        let orphaned: BTreeSet<ResourceKey> = {
            let Ok(mut entries) = self.entries.lock() else {
                return;
            };
            let mut dropped = BTreeSet::new();
            entries.retain(|_, e| {
                let closed = e.peer.is_transport_closed();
                if closed {
                    dropped.extend(e.subscriptions.keys().cloned());
                }
                !closed
            });
            dropped
                .into_iter()
                .filter(|k| !entries.values().any(|e| e.subscriptions.contains_key(k)))
                .collect()
        };
        for (server, uri) in orphaned {
            unsubscribe_upstream(portal, &server, &uri).await;
        }
    }

    /// Subscribes a new upstream session of `server` to every resource sessions hold.
    pub async fn resubscribe(&self, portal: &Portal, server: &str) {
        let _changes = self.changes.lock().await;
        let uris: BTreeSet<String> = match self.entries.lock() {
            Ok(m) => m
                .values()
                .flat_map(|e| e.subscriptions.keys())
                .filter(|(s, _)| s == server)
                .map(|(_, u)| u.clone())
                .collect(),
            Err(_) => return,
        };
        for uri in uris {
            let ct = CancellationToken::new();
            if let Err(e) = subscribe_upstream(portal, server, &uri, &ct).await {
                tracing::warn!(upstream = %server, error = %e.message, "resubscribing after a reconnect failed");
            }
        }
    }
}

async fn subscribe_upstream(
    portal: &Portal,
    server: &str,
    uri: &str,
    ct: &CancellationToken,
) -> Result<(), ErrorData> {
    let supported = portal
        .upstreams
        .get(server)
        .await
        .and_then(|u| u.peer().ok())
        .and_then(|p| p.peer_info())
        .is_some_and(|i| {
            i.protocol_version < rmcp::model::ProtocolVersion::V_2026_07_28
                && i.capabilities
                    .resources
                    .as_ref()
                    .and_then(|r| r.subscribe)
                    .unwrap_or(false)
        });
    if !supported {
        return Err(ErrorData::new(
            rmcp::model::ErrorCode::METHOD_NOT_FOUND,
            format!("upstream {server} does not offer resource subscriptions"),
            None,
        ));
    }
    let params = SubscribeRequestParams::new(uri);
    portal
        .forward(server, ct, async move |peer| peer.subscribe(params).await)
        .await
}

async fn unsubscribe_upstream(portal: &Portal, server: &str, uri: &str) {
    let params = UnsubscribeRequestParams::new(uri);
    let ct = CancellationToken::new();
    if let Err(e) = portal
        .forward(server, &ct, async move |peer| {
            peer.unsubscribe(params).await
        })
        .await
    {
        tracing::debug!(upstream = %server, error = %e.message, "upstream resources/unsubscribe failed");
    }
}

/// Delivers an upstream `notifications/resources/updated` to the sessions that subscribed and
/// may still see the server (policy can change after the subscription).
pub async fn deliver(portal: &Portal, server: &str, uri: String) {
    let deliveries = portal.sessions.subscribers(server, &uri);
    if deliveries.is_empty() {
        tracing::debug!(upstream = %server, "resource update nobody subscribed to; dropped");
        return;
    }
    let catalog = portal.catalog();
    let policy = portal.policy();
    for d in deliveries {
        if !policy.server_visible(&d.identity, &catalog, server) {
            continue;
        }
        let _ = d
            .peer
            .notify_resource_updated(ResourceUpdatedNotificationParam::new(d.uri))
            .await;
    }
}
