//! Server-to-client traffic of an upstream, relayed to the one downstream request it belongs to.
//!
//! An upstream connection is shared by every user of the portal, so a `sampling/createMessage`,
//! an `elicitation/create` or a `notifications/message` from an upstream may reach a downstream
//! client only when the portal can tell which of its own requests the message relates to:
//!
//! - every upstream request the portal sends for a caller carries a [`Route`] (in its
//!   extensions, never on the wire) naming that caller's downstream request;
//! - the Streamable HTTP transport registers the route under the JSON-RPC id it posts
//!   ([`Associations`], one per upstream connection);
//! - server requests that arrive on that POST's response stream are tagged by rmcp with the id
//!   (`InboundStreamOrigin::OutboundRequest`), and the logging notifications on it are tagged
//!   here with a per-connection secret marker in `_meta` (rmcp tags requests only);
//! - anything that cannot be associated this way (the standalone GET stream, stdio and legacy
//!   SSE upstreams, a request that already ended) is refused or only logged, never broadcast.
#![allow(deprecated)] // sampling and logging are deprecated by SEP-2577; 2025-era servers use them.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};

use futures::StreamExt;
use futures::stream::BoxStream;
use rmcp::ErrorData;
use rmcp::RoleServer;
use rmcp::model::{
    ClientCapabilities, ClientJsonRpcMessage, CreateMessageRequestParams, CreateMessageResult,
    ElicitRequestParams, ElicitResult, GetExtensions, LoggingMessageNotificationParam,
    NotificationMetaObject, NumberOrString, ProgressToken, RequestId, ServerNotification,
};
use rmcp::service::{InboundStreamOrigin, Peer};
use sse_stream::{Error as SseError, Sse};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// `_meta` key of the association marker the portal puts on notifications that arrived on the
/// response stream of one of its requests. Removed before anything reaches a client.
pub const RELATED_META: &str = "portcullis.dev/relatedRequest";

/// Where server-to-client messages for one downstream request go.
#[derive(Clone)]
pub enum Sink {
    /// rmcp's peer of the client's session (legacy) or request (2026-07-28): notifications and
    /// requests ride the request's response stream.
    Peer(Peer<RoleServer>),
    /// The answer stream of a request the portal serves itself (the legacy fast path,
    /// `http::fast`): notifications only, written before the answer on the same SSE stream.
    /// Bounded: when the client reads slower than an upstream logs, the excess is dropped, so a
    /// slow client never stalls the upstream connection that other callers share.
    Stream(tokio::sync::mpsc::Sender<ServerNotification>),
}

impl Sink {
    /// Sends `notification` to the caller; `false` when it could not be (gone, or too slow).
    pub async fn notify(&self, notification: ServerNotification) -> bool {
        match self {
            Sink::Peer(peer) => peer.send_notification(notification).await.is_ok(),
            Sink::Stream(tx) => tx.try_send(notification).is_ok(),
        }
    }

    /// rmcp's peer, through which requests can be sent to the caller; `None` for a stream,
    /// which carries notifications only.
    pub fn peer(&self) -> Option<&Peer<RoleServer>> {
        match self {
            Sink::Peer(peer) => Some(peer),
            Sink::Stream(_) => None,
        }
    }
}

/// The downstream request an upstream request is sent for: who asked, and how to reach them.
#[derive(Clone)]
pub struct Downstream {
    /// Where messages for the downstream request go.
    pub sink: Sink,
    /// The downstream request's JSON-RPC id: relayed requests ride its response stream.
    pub request_id: RequestId,
    /// The downstream request's progress token, when it asked for progress.
    pub progress: Option<ProgressToken>,
    /// What the downstream client declared (`initialize`, or the request's `_meta`).
    pub capabilities: ClientCapabilities,
    /// Whether the downstream client can be sent requests at all: a legacy-era session. On
    /// 2026-07-28 servers answer with input-required results instead.
    pub accepts_requests: bool,
    /// The downstream session id (legacy), for per-session state such as the log level.
    pub session: Option<String>,
}

/// One upstream request sent on behalf of one downstream request.
pub struct Route {
    /// The McpServer the request went to.
    pub server: String,
    /// The caller.
    pub downstream: Downstream,
    /// Who the caller is (DLP rules and policy apply per caller).
    pub identity: crate::model::Identity,
    /// Audit correlation tag of the caller's session.
    pub session_tag: Option<String>,
    done: CancellationToken,
    /// Notifications seen on the request's response stream and not yet handled. rmcp hands
    /// each notification to a task of its own and the response straight to the caller, so
    /// without this count the answer could overtake the progress and logs sent before it.
    in_flight: AtomicUsize,
    settled: Notify,
}

impl Route {
    /// A route for a request to `server` on behalf of `downstream`.
    pub fn new(
        server: impl Into<String>,
        downstream: Downstream,
        identity: crate::model::Identity,
        session_tag: Option<String>,
    ) -> Self {
        Route {
            server: server.into(),
            downstream,
            identity,
            session_tag,
            done: CancellationToken::new(),
            in_flight: AtomicUsize::new(0),
            settled: Notify::new(),
        }
    }

    /// A notification for this request arrived on its response stream.
    pub fn notification_seen(&self) {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
    }

    /// A notification counted by [`Route::notification_seen`] was relayed (or dropped).
    pub fn notification_done(&self) {
        if self.in_flight.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.settled.notify_waiters();
        }
    }

    /// Waits (at most `max`) until every notification that arrived before the answer has been
    /// handled, so that the caller gets them before the answer.
    pub async fn settle(&self, max: std::time::Duration) {
        let _ = tokio::time::timeout(max, async {
            loop {
                let settled = self.settled.notified();
                if self.in_flight.load(Ordering::SeqCst) == 0 {
                    return;
                }
                settled.await;
            }
        })
        .await;
    }

    /// Cancelled when the upstream request ended (answered, failed, timed out or dropped):
    /// relayed requests still waiting for the caller stop then.
    pub fn done(&self) -> &CancellationToken {
        &self.done
    }
}

/// The route an upstream request was sent on, in its (never serialized) extensions.
#[derive(Clone)]
pub struct RelayTag(pub Arc<Route>);

/// What the portal does with relayed traffic. Implemented by the portal (DLP, audit, policy);
/// held weakly by the upstream connections.
#[async_trait::async_trait]
pub trait Relay: Send + Sync {
    /// An associated `sampling/createMessage`: forward it to the route's caller.
    async fn sampling(
        &self,
        route: Arc<Route>,
        params: CreateMessageRequestParams,
    ) -> Result<CreateMessageResult, ErrorData>;
    /// An associated `elicitation/create`: forward it to the route's caller.
    async fn elicitation(
        &self,
        route: Arc<Route>,
        params: ElicitRequestParams,
    ) -> Result<ElicitResult, ErrorData>;
    /// An associated `notifications/message`: forward it to the route's caller.
    async fn log(&self, route: Arc<Route>, params: LoggingMessageNotificationParam);
    /// `notifications/resources/updated` from `server` (resource subscriptions are per
    /// session, not per request: the portal knows who subscribed).
    async fn resource_updated(&self, server: &str, uri: String);
    /// `server` is (re)connected: a new upstream session, which holds none of the portal's
    /// resource subscriptions yet.
    async fn connected(&self, server: &str);
}

fn id_key(id: &RequestId) -> String {
    match id {
        NumberOrString::Number(n) => format!("n{n}"),
        NumberOrString::String(s) => format!("s{s}"),
    }
}

/// Which of the portal's in-flight requests on one upstream connection each JSON-RPC id is.
pub struct Associations {
    /// Secret of this connection: markers without it were not put there by the portal.
    nonce: String,
    routes: Mutex<HashMap<String, Weak<Route>>>,
}

impl Default for Associations {
    fn default() -> Self {
        let nonce: [u8; 16] = rand::random();
        Associations {
            nonce: nonce.iter().map(|b| format!("{b:02x}")).collect(),
            routes: Mutex::new(HashMap::new()),
        }
    }
}

impl Associations {
    /// Registers the route of an outgoing request (when it has one) under its JSON-RPC id and
    /// returns the marker for the notifications on its response stream.
    pub fn register(&self, message: &ClientJsonRpcMessage) -> Option<(String, Weak<Route>)> {
        let ClientJsonRpcMessage::Request(req) = message else {
            return None;
        };
        let tag = req.request.extensions().get::<RelayTag>()?;
        let key = id_key(&req.id);
        if let Ok(mut routes) = self.routes.lock() {
            if routes.len() >= 64 {
                routes.retain(|_, r| r.strong_count() > 0);
            }
            routes.insert(key.clone(), Arc::downgrade(&tag.0));
        }
        Some((format!("{}.{key}", self.nonce), Arc::downgrade(&tag.0)))
    }

    fn get(&self, key: &str) -> Option<Arc<Route>> {
        self.routes.lock().ok()?.get(key)?.upgrade()
    }

    /// The route of the portal request an upstream server request arrived for (the response
    /// stream it came on), if that request is still in flight.
    pub fn for_request(&self, extensions: &rmcp::model::Extensions) -> Option<Arc<Route>> {
        match extensions.get::<InboundStreamOrigin>()? {
            InboundStreamOrigin::OutboundRequest(id) => self.get(&id_key(id)),
            InboundStreamOrigin::Unassociated => None,
        }
    }

    /// The route of the portal request a notification arrived for, from the marker
    /// [`Associations::tag_stream`] put on it.
    pub fn for_notification(&self, meta: &NotificationMetaObject) -> Option<Arc<Route>> {
        let marker = meta.get(RELATED_META)?.as_str()?;
        let key = marker.strip_prefix(&self.nonce)?.strip_prefix('.')?;
        self.get(key)
    }

    /// Marks the `notifications/message` and `notifications/progress` events of a POST
    /// response stream as related to the request that was posted, and counts them on its
    /// route (`marker` and `route` from [`Associations::register`]).
    pub fn tag_stream(
        stream: BoxStream<'static, Result<Sse, SseError>>,
        (marker, route): (String, Weak<Route>),
    ) -> BoxStream<'static, Result<Sse, SseError>> {
        stream
            .map(move |event| {
                event.map(|sse| {
                    let (sse, tagged) = tag_event(sse, &marker);
                    if tagged && let Some(route) = route.upgrade() {
                        route.notification_seen();
                    }
                    sse
                })
            })
            .boxed()
    }
}

/// The notifications the portal relates to the request whose response stream they arrive on.
const RELATED_METHODS: [&str; 2] = ["notifications/message", "notifications/progress"];

/// Puts `marker` into `params._meta` of a log or progress notification event; true when it
/// did. A cheap substring test keeps other events (tool results among them) from being parsed
/// twice; an event that escapes it (JSON escapes in the method name) stays unmarked, so a log
/// is logged, not relayed.
fn tag_event(mut sse: Sse, marker: &str) -> (Sse, bool) {
    let Some(data) = sse.data.as_deref() else {
        return (sse, false);
    };
    if !RELATED_METHODS.iter().any(|m| data.contains(m)) {
        return (sse, false);
    }
    let Ok(mut v) = serde_json::from_str::<serde_json::Value>(data) else {
        return (sse, false);
    };
    let related = v
        .get("method")
        .and_then(|m| m.as_str())
        .is_some_and(|m| RELATED_METHODS.contains(&m))
        && v.get("id").is_none();
    if !related {
        return (sse, false);
    }
    let Some(params) = v.get_mut("params").and_then(|p| p.as_object_mut()) else {
        return (sse, false);
    };
    let meta = params
        .entry("_meta")
        .or_insert_with(|| serde_json::Value::Object(Default::default()));
    let Some(meta) = meta.as_object_mut() else {
        return (sse, false);
    };
    meta.insert(
        RELATED_META.into(),
        serde_json::Value::String(marker.into()),
    );
    sse.data = Some(v.to_string());
    (sse, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log_event(extra_meta: &str) -> Sse {
        Sse {
            event: Some("message".into()),
            data: Some(format!(
                r#"{{"jsonrpc":"2.0","method":"notifications/message","params":{{"level":"info","data":"x"{extra_meta}}}}}"#
            )),
            id: None,
            retry: None,
        }
    }

    fn meta_of(sse: &Sse) -> NotificationMetaObject {
        let v: serde_json::Value = serde_json::from_str(sse.data.as_deref().unwrap()).unwrap();
        let m = v["params"]["_meta"]
            .as_object()
            .cloned()
            .unwrap_or_default();
        NotificationMetaObject::from(m)
    }

    #[test]
    fn log_events_on_a_response_stream_carry_the_marker_and_results_are_untouched() {
        let (tagged, _) = tag_event(log_event(""), "abc.n1");
        assert_eq!(meta_of(&tagged).get(RELATED_META).unwrap(), "abc.n1");
        let result = Sse {
            data: Some(r#"{"jsonrpc":"2.0","id":1,"result":{"content":[]}}"#.into()),
            ..Sse::default()
        };
        let (same, _) = tag_event(result.clone(), "abc.n1");
        assert_eq!(same.data, result.data);
    }

    #[test]
    fn a_marker_forged_by_the_upstream_names_no_route() {
        let a = Associations::default();
        let (forged, _) = tag_event(
            log_event(r#","_meta":{"portcullis.dev/relatedRequest":"guess.n1"}"#),
            "guess.n1",
        );
        assert!(a.for_notification(&meta_of(&forged)).is_none());
    }
}
