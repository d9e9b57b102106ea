//! The supervisor of one upstream: connect, fetch the lists, watch the connection (pings,
//! list changes, transport failures) and, when it fails, mark the upstream down and retry with
//! exponential backoff.

use std::sync::{Arc, Weak};
use std::time::Duration;

use rmcp::RoleClient;
use rmcp::model::{ClientRequest, PingRequest, ProtocolVersion};
use rmcp::service::{Peer, RunningService};

use super::lists::fetch_catalog;
use super::transport::{connect, direct_client};
use super::{Health, Lists, Upstream, UpstreamClient, Upstreams};

/// Longest wait between reconnect attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// First wait after a failure.
const MIN_BACKOFF: Duration = Duration::from_millis(500);
/// How often a connected upstream is pinged. A stateless (2026-07-28) HTTP upstream holds no
/// connection whose loss we would notice, so this bounds how long a dead one stays listed.
const PING_INTERVAL: Duration = Duration::from_secs(5);

pub(super) async fn supervise(all: Arc<Upstreams>, up: Arc<Upstream>) {
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
