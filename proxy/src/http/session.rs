//! Self-contained legacy session ids, so any replica can serve any session.
//!
//! rmcp keeps a legacy session in the memory of the process that created it. Behind a plain
//! Kubernetes Service without affinity the next request lands on another replica, so the id the
//! client sees is a sealed token (XChaCha20-Poly1305 under a key every replica shares) that
//! carries the session's internal id and its `initialize` parameters. A replica that does not
//! know the session opens the token and lets rmcp restore the session from those parameters
//! (rmcp's `SessionStore` hook). Tokens expire; a token that fails to open is "session not
//! found" (404), after which MCP clients start a new session.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use http::{HeaderValue, StatusCode};
use rmcp::model::InitializeRequestParams;
use rmcp::transport::streamable_http_server::session::{
    SessionState, SessionStore, SessionStoreError,
};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::model::Identity;

/// The session header of the Streamable HTTP transport.
pub const SESSION_HEADER: &str = "mcp-session-id";
/// How long a sealed session id stays valid.
pub const MAX_AGE: Duration = Duration::from_secs(24 * 3600);
/// Longest session id accepted from a client.
const MAX_TOKEN_LEN: usize = 16 * 1024;
/// Bytes the cache of opened ids may hold before it is emptied and starts over (each entry
/// counted as [`opened_cost`]): about 3,000 entries for the ids of typical clients.
const OPENED_CACHE_BYTES: usize = 8 * 1024 * 1024;
/// What one cached entry costs beyond twice its id's length (the key, and the `initialize` it
/// opened to, which the id carries sealed): rmcp's typed `initialize` parameters, the strings,
/// the `Arc` and the map's slot. Measured, not derived: in a 10-minute soak of 3,700 sessions
/// with 270-character ids whose entries stayed cached, RSS grew 8.3 MiB, 2.3 KiB an entry.
const OPENED_ENTRY_OVERHEAD: usize = 1792;

fn opened_cost(token: &str) -> usize {
    2 * token.len() + OPENED_ENTRY_OVERHEAD
}

#[derive(Serialize, Deserialize)]
struct Sealed {
    /// rmcp's internal session id.
    i: String,
    /// Seconds since the epoch when issued.
    t: u64,
    /// The client's `initialize` parameters.
    p: serde_json::Value,
    /// The subject that opened the session (empty for public portals).
    #[serde(default)]
    s: String,
}

/// Seals and opens session ids, and bridges them to rmcp's session store.
///
/// `fresh` and `restorable` hold entries only while a request is on its way: `fresh` from
/// rmcp's handshake until the middleware seals the `initialize` response, `restorable` while a
/// request that presented the session's id is in flight (rmcp reads it then if it must restore
/// the session). They keep nothing as long as a session lives, so sessions that end without
/// DELETE (idle, evicted, on another replica) leave nothing behind there; the cache of opened
/// ids (`opened`) is bounded by its size.
pub struct SessionSeal {
    cipher: XChaCha20Poly1305,
    /// internal id -> initialize params, written by rmcp after a handshake.
    fresh: Mutex<HashMap<String, SessionState>>,
    /// internal id -> initialize params from an opened token, and how many requests in flight
    /// presented it; read by rmcp to restore.
    restorable: Mutex<HashMap<String, (SessionState, u32)>>,
    /// Ids opened before ([`SessionSeal::open_cached`]).
    opened: Mutex<OpenedCache>,
}

/// Session ids that opened, by the exact id presented: a session's every request presents the
/// same id, and opening it (base64, XChaCha20-Poly1305, two JSON decodes of the `initialize`)
/// was a third of the instructions of a legacy `tools/call`. Only ids that opened are kept
/// (a forged or tampered id is never a key), bounded by [`OPENED_CACHE_BYTES`]; expiry is
/// checked on every hit.
#[derive(Default)]
struct OpenedCache {
    map: HashMap<Box<str>, Arc<OpenedSession>>,
    bytes: usize,
}

/// What a sealed session id holds, opened.
#[derive(Debug, Clone)]
pub struct OpenedSession {
    /// rmcp's internal session id.
    pub internal: String,
    /// The client's `initialize` parameters.
    pub state: SessionState,
    /// The subject that opened the session (empty for public portals).
    pub owner: String,
    /// The session's audit tag ([`crate::portal::context::session_tag`] of `internal`).
    pub tag: String,
    /// Seconds since the epoch when the id was issued.
    issued: u64,
}

impl std::fmt::Debug for SessionSeal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionSeal")
    }
}

/// Why a presented session id was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum OpenError {
    /// Not a token we issued, or tampered with.
    Invalid,
    /// Older than [`MAX_AGE`].
    Expired,
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl SessionSeal {
    /// A sealer keyed by `secret` (any length; at least 32 random bytes in production), or by
    /// a random key when there is none (sessions then live only in this process).
    pub fn new(secret: Option<&[u8]>) -> Arc<Self> {
        let key: [u8; 32] = match secret {
            Some(s) => {
                let mut h = Sha256::new();
                h.update(b"portcullis session seal v1\0");
                h.update(s);
                h.finalize().into()
            }
            None => rand::random(),
        };
        Arc::new(SessionSeal {
            cipher: XChaCha20Poly1305::new(&key.into()),
            fresh: Mutex::default(),
            restorable: Mutex::default(),
            opened: Mutex::default(),
        })
    }

    /// Seals rmcp's session id `internal`, the client's `initialize` and the owner into an id.
    pub fn seal(&self, internal: &str, state: &SessionState, subject: &str) -> String {
        let payload = Sealed {
            i: internal.to_owned(),
            t: now(),
            p: serde_json::to_value(&state.initialize_params).unwrap_or_default(),
            s: subject.to_owned(),
        };
        let plain = serde_json::to_vec(&payload).unwrap_or_default();
        let nonce: [u8; 24] = rand::random();
        let sealed = self
            .cipher
            .encrypt(XNonce::from_slice(&nonce), plain.as_slice())
            .unwrap_or_default();
        let mut out = nonce.to_vec();
        out.extend(sealed);
        URL_SAFE_NO_PAD.encode(out)
    }

    /// Opens a sealed session id as [`SessionSeal::open`] does, once per id: later requests
    /// presenting the same id get what it opened to from a cache (expiry checked again).
    pub fn open_cached(&self, token: &str) -> Result<Arc<OpenedSession>, OpenError> {
        let hit = self
            .opened
            .lock()
            .ok()
            .and_then(|c| c.map.get(token).cloned());
        if let Some(session) = hit {
            if now().saturating_sub(session.issued) > MAX_AGE.as_secs() {
                if let Ok(mut c) = self.opened.lock() {
                    c.map.remove(token);
                }
                return Err(OpenError::Expired);
            }
            return Ok(session);
        }
        let (sealed, params) = self.unseal(token)?;
        let session = Arc::new(OpenedSession {
            tag: crate::portal::context::session_tag(sealed.i.as_bytes()),
            internal: sealed.i,
            state: SessionState::new(params),
            owner: sealed.s,
            issued: sealed.t,
        });
        if let Ok(mut c) = self.opened.lock() {
            let cost = opened_cost(token);
            if c.bytes + cost > OPENED_CACHE_BYTES {
                c.map.clear();
                c.bytes = 0;
            }
            if c.map.insert(token.into(), session.clone()).is_none() {
                c.bytes += cost;
            }
        }
        Ok(session)
    }

    /// Drops `token` from the cache of opened ids: its session ended with DELETE, so a client
    /// that follows the transport does not present it again, and its entry would only wait for
    /// the cache to fill.
    pub fn forget(&self, token: &str) {
        if let Ok(mut c) = self.opened.lock()
            && c.map.remove(token).is_some()
        {
            c.bytes = c.bytes.saturating_sub(opened_cost(token));
        }
    }

    /// Opens a sealed session id: rmcp's internal id, the client's `initialize` parameters and
    /// the subject that opened the session.
    pub fn open(&self, token: &str) -> Result<(String, SessionState, String), OpenError> {
        let (sealed, params) = self.unseal(token)?;
        Ok((sealed.i, SessionState::new(params), sealed.s))
    }

    /// The payload of a sealed id and its `initialize` parameters, when it opens and has not
    /// expired.
    fn unseal(&self, token: &str) -> Result<(Sealed, InitializeRequestParams), OpenError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(OpenError::Invalid);
        }
        let raw = URL_SAFE_NO_PAD
            .decode(token)
            .map_err(|_| OpenError::Invalid)?;
        if raw.len() < 24 + 16 {
            return Err(OpenError::Invalid);
        }
        let (nonce, body) = raw.split_at(24);
        let plain = self
            .cipher
            .decrypt(XNonce::from_slice(nonce), body)
            .map_err(|_| OpenError::Invalid)?;
        let mut sealed: Sealed = serde_json::from_slice(&plain).map_err(|_| OpenError::Invalid)?;
        if now().saturating_sub(sealed.t) > MAX_AGE.as_secs() {
            return Err(OpenError::Expired);
        }
        let params = serde_json::from_value(std::mem::take(&mut sealed.p))
            .map_err(|_| OpenError::Invalid)?;
        Ok((sealed, params))
    }

    /// The rmcp session store that hands opened tokens to rmcp's restore logic.
    pub fn store(self: &Arc<Self>) -> Arc<dyn SessionStore> {
        Arc::new(Store(self.clone()))
    }

    /// Makes `internal`'s state restorable while the returned guard lives (one request).
    fn presenting(self: &Arc<Self>, internal: &str, state: SessionState) -> Presented {
        if let Ok(mut m) = self.restorable.lock() {
            m.entry(internal.to_owned()).or_insert((state, 0)).1 += 1;
        }
        Presented {
            seal: self.clone(),
            internal: internal.to_owned(),
        }
    }

    /// Entries held (both maps), for tests and diagnostics.
    pub fn entries(&self) -> usize {
        let fresh = self.fresh.lock().map_or(0, |m| m.len());
        fresh + self.restorable.lock().map_or(0, |m| m.len())
    }
}

/// A request in flight that presented a session id: its `restorable` entry goes when the last
/// such request ends (also when the client goes away mid-request and the future is dropped).
struct Presented {
    seal: Arc<SessionSeal>,
    internal: String,
}

impl Drop for Presented {
    fn drop(&mut self) {
        if let Ok(mut m) = self.seal.restorable.lock()
            && let Some(e) = m.get_mut(&self.internal)
        {
            e.1 -= 1;
            if e.1 == 0 {
                m.remove(&self.internal);
            }
        }
    }
}

struct Store(Arc<SessionSeal>);

#[async_trait::async_trait]
impl SessionStore for Store {
    async fn load(&self, session_id: &str) -> Result<Option<SessionState>, SessionStoreError> {
        Ok(self
            .0
            .restorable
            .lock()
            .ok()
            .and_then(|m| m.get(session_id).map(|e| e.0.clone())))
    }

    async fn store(&self, session_id: &str, state: &SessionState) -> Result<(), SessionStoreError> {
        if let Ok(mut m) = self.0.fresh.lock() {
            m.insert(session_id.to_owned(), state.clone());
        }
        Ok(())
    }

    async fn delete(&self, session_id: &str) -> Result<(), SessionStoreError> {
        // A DELETE: the request's own `Presented` guard removes the `restorable` entry.
        if let Ok(mut m) = self.0.fresh.lock() {
            m.remove(session_id);
        }
        Ok(())
    }
}

/// A session id the fast path already opened for this request (a request extension), so that
/// when the request goes on to rmcp after all the middleware does not open it a second time.
#[derive(Clone)]
pub struct Opened(pub Arc<OpenedSession>);

fn not_found(reason: &str) -> Response {
    let body = serde_json::json!({
        "jsonrpc": "2.0",
        "id": null,
        "error": {"code": -32001, "message": format!("Session not found: {reason}; start a new session")}
    });
    (StatusCode::NOT_FOUND, axum::Json(body)).into_response()
}

/// Axum middleware: opens sealed session ids on the way in and seals new ones on the way out.
pub async fn middleware(
    State(seal): State<Arc<SessionSeal>>,
    mut req: Request,
    next: Next,
) -> Response {
    // The session's owner: the subject authentication found (empty for public portals).
    let subject = req
        .extensions()
        .get::<Identity>()
        .map(|i| i.subject.clone())
        .unwrap_or_default();
    let mut presented = None;
    let header = req
        .headers()
        .get(SESSION_HEADER)
        .map(|v| v.to_str().map(str::to_owned));
    if let Some(token) = header {
        let Ok(token) = token else {
            return not_found("malformed session id");
        };
        let token = token.as_str();
        let opened = match req.extensions_mut().remove::<Opened>() {
            Some(Opened(o)) => o,
            None => match seal.open_cached(token) {
                Ok(v) => v,
                Err(OpenError::Expired) => return not_found("session expired"),
                Err(OpenError::Invalid) => return not_found("unknown session id"),
            },
        };
        let internal = opened.internal.clone();
        if opened.owner != subject {
            // A session belongs to the subject that opened it; never reveal it exists.
            return not_found("unknown session id");
        }
        let guard = seal.presenting(&internal, opened.state.clone());
        match HeaderValue::from_str(&internal) {
            Ok(v) => {
                req.headers_mut().insert(SESSION_HEADER, v);
            }
            Err(_) => return not_found("unknown session id"),
        }
        presented = Some((internal, token.to_owned(), guard));
    }
    let is_delete = req.method() == http::Method::DELETE;
    let mut resp = next.run(req).await;
    if is_delete && resp.status() == StatusCode::ACCEPTED {
        // The session is gone; clients expect 200/204 for a completed DELETE, not 202.
        *resp.status_mut() = StatusCode::NO_CONTENT;
    }
    if is_delete
        && resp.status().is_success()
        && let Some((_, token, _)) = &presented
    {
        seal.forget(token);
    }
    let Some(internal) = resp
        .headers()
        .get(SESSION_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
    else {
        return resp;
    };
    // rmcp names the session only in the answer to `initialize` (a new session: seal what
    // its handshake stored); the presented token otherwise.
    let external = match &presented {
        Some((i, token, _)) if *i == internal => Some(token.clone()),
        _ => seal
            .fresh
            .lock()
            .ok()
            .and_then(|mut m| m.remove(&internal))
            .map(|state| seal.seal(&internal, &state, &subject)),
    };
    drop(presented);
    match external.and_then(|t| HeaderValue::from_str(&t).ok()) {
        Some(v) => {
            resp.headers_mut().insert(SESSION_HEADER, v);
        }
        None => {
            // Never leak an internal id: without a sealed form the response cannot stand.
            tracing::error!("a session id could not be sealed");
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                "session could not be established",
            )
                .into_response();
        }
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> SessionState {
        let p: InitializeRequestParams = serde_json::from_value(serde_json::json!({
            "protocolVersion": "2025-11-25",
            "capabilities": {},
            "clientInfo": {"name": "t", "version": "1"}
        }))
        .unwrap();
        SessionState::new(p)
    }

    #[test]
    fn a_token_sealed_by_one_replica_opens_on_another_with_the_same_key() {
        let a = SessionSeal::new(Some(b"0123456789abcdef0123456789abcdef"));
        let b = SessionSeal::new(Some(b"0123456789abcdef0123456789abcdef"));
        let token = a.seal("abc", &state(), "alice");
        let (internal, st, subject) = b.open(&token).unwrap();
        assert_eq!(internal, "abc");
        assert_eq!(subject, "alice");
        assert_eq!(st.initialize_params.client_info.name, "t");
    }

    #[test]
    fn tokens_under_another_key_or_tampered_do_not_open() {
        let a = SessionSeal::new(Some(b"0123456789abcdef0123456789abcdef"));
        let other = SessionSeal::new(Some(b"another key another key another k"));
        let token = a.seal("abc", &state(), "");
        assert_eq!(other.open(&token).unwrap_err(), OpenError::Invalid);
        let mut raw = URL_SAFE_NO_PAD.decode(&token).unwrap();
        let last = raw.len() - 1;
        raw[last] ^= 1;
        assert_eq!(
            a.open(&URL_SAFE_NO_PAD.encode(raw)).unwrap_err(),
            OpenError::Invalid
        );
        assert_eq!(a.open("not base64 !").unwrap_err(), OpenError::Invalid);
        assert_eq!(
            a.open(&"A".repeat(MAX_TOKEN_LEN + 1)).unwrap_err(),
            OpenError::Invalid
        );
    }

    /// The middleware in front of a stand-in for rmcp: `initialize` (no session id) gets a new
    /// internal id whose handshake is stored like rmcp's; any other request answers 200 after
    /// reading what the store would restore the session from.
    fn app(seal: Arc<SessionSeal>) -> axum::Router {
        let store = seal.store();
        let inner = axum::routing::post(move |req: Request| {
            let store = store.clone();
            async move {
                match req.headers().get(SESSION_HEADER) {
                    None => {
                        store.store("internal-1", &state()).await.unwrap();
                        ([(SESSION_HEADER, "internal-1")], "initialized").into_response()
                    }
                    Some(id) => {
                        let id = id.to_str().unwrap().to_owned();
                        let found = store.load(&id).await.unwrap().is_some();
                        format!("restorable {found}").into_response()
                    }
                }
            }
        });
        axum::Router::new()
            .route("/mcp", inner.delete(|| async { StatusCode::ACCEPTED }))
            .layer(axum::middleware::from_fn_with_state(seal, middleware))
    }

    async fn send(app: &axum::Router, sid: Option<&str>) -> (StatusCode, Option<String>, String) {
        request(app, http::Method::POST, sid).await
    }

    async fn request(
        app: &axum::Router,
        method: http::Method,
        sid: Option<&str>,
    ) -> (StatusCode, Option<String>, String) {
        use http_body_util::BodyExt as _;
        use tower::ServiceExt as _;
        let mut req = http::Request::builder().method(method).uri("/mcp");
        if let Some(sid) = sid {
            req = req.header(SESSION_HEADER, sid);
        }
        let resp = app
            .clone()
            .oneshot(req.body(axum::body::Body::empty()).unwrap())
            .await
            .unwrap();
        let status = resp.status();
        let header = resp
            .headers()
            .get(SESSION_HEADER)
            .map(|v| v.to_str().unwrap().to_owned());
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (status, header, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn the_seal_keeps_nothing_per_session_once_its_requests_end() {
        let seal = SessionSeal::new(None);
        let app = app(seal.clone());
        let (status, sid, _) = send(&app, None).await;
        assert_eq!(status, StatusCode::OK);
        let sid = sid.expect("the initialize answer names the session");
        assert_ne!(sid, "internal-1", "the internal id never leaves");
        assert_eq!(
            seal.entries(),
            0,
            "the handshake's state went into the token"
        );
        // While a request that presented the id is in flight, rmcp can restore from it.
        for _ in 0..3 {
            let (status, header, body) = send(&app, Some(&sid)).await;
            assert_eq!(
                (status, header, body.as_str()),
                (StatusCode::OK, None, "restorable true")
            );
        }
        // A session that ends without DELETE (idle, evicted) leaves nothing behind.
        assert_eq!(seal.entries(), 0);
    }

    #[tokio::test]
    async fn a_deleted_session_leaves_the_cache_of_opened_ids() {
        let seal = SessionSeal::new(None);
        let app = app(seal.clone());
        let (_, sid, _) = send(&app, None).await;
        let sid = sid.unwrap();
        let (_, other, _) = send(&app, None).await;
        let other = other.unwrap();
        send(&app, Some(&sid)).await;
        send(&app, Some(&other)).await;
        let cached = || seal.opened.lock().unwrap().map.len();
        assert_eq!(cached(), 2);
        let (status, _, _) = request(&app, http::Method::DELETE, Some(&sid)).await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        assert_eq!(
            cached(),
            1,
            "the deleted session's entry is gone, the other stays"
        );
        assert_eq!(
            seal.opened.lock().unwrap().bytes,
            opened_cost(&other),
            "the count follows the entries"
        );
        // A DELETE that fails (here: an id that does not open) removes nothing.
        let (status, _, _) = request(&app, http::Method::DELETE, Some("bogus")).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(cached(), 1);
    }

    #[test]
    fn an_id_is_opened_once_and_its_expiry_still_holds() {
        let a = SessionSeal::new(None);
        let token = a.seal("abc", &state(), "alice");
        let first = a.open_cached(&token).unwrap();
        assert_eq!(
            (first.internal.as_str(), first.owner.as_str()),
            ("abc", "alice")
        );
        assert_eq!(first.tag, crate::portal::context::session_tag(b"abc"));
        assert!(Arc::ptr_eq(&first, &a.open_cached(&token).unwrap()));

        // A tampered id is opened (and refused), never answered from the cache.
        let mut raw = URL_SAFE_NO_PAD.decode(&token).unwrap();
        raw[30] ^= 1;
        let tampered = URL_SAFE_NO_PAD.encode(raw);
        assert_eq!(a.open_cached(&tampered).unwrap_err(), OpenError::Invalid);
        assert!(!a.opened.lock().unwrap().map.contains_key(tampered.as_str()));

        // An entry past its age is refused and dropped.
        let old = Arc::new(OpenedSession {
            issued: now() - MAX_AGE.as_secs() - 1,
            ..(*first).clone()
        });
        a.opened
            .lock()
            .unwrap()
            .map
            .insert(token.as_str().into(), old);
        assert_eq!(a.open_cached(&token).unwrap_err(), OpenError::Expired);
        assert!(!a.opened.lock().unwrap().map.contains_key(token.as_str()));
    }

    #[test]
    fn the_cache_of_opened_ids_is_bounded() {
        let a = SessionSeal::new(None);
        let big: InitializeRequestParams = serde_json::from_value(serde_json::json!({
            "protocolVersion": "2025-11-25",
            "capabilities": {},
            "clientInfo": {"name": "x".repeat(6000), "version": "1"}
        }))
        .unwrap();
        let big = SessionState::new(big);
        let mut most = 0;
        for i in 0..1000 {
            let token = a.seal(&format!("s{i}"), &big, "");
            a.open_cached(&token).unwrap();
            let c = a.opened.lock().unwrap();
            assert!(c.bytes <= OPENED_CACHE_BYTES, "{} bytes", c.bytes);
            most = most.max(c.map.len());
        }
        // ~18 KB per entry: it filled up, emptied and filled again.
        assert!(most > 100, "{most}");
        assert!(a.opened.lock().unwrap().map.len() < most);
    }

    #[test]
    fn the_internal_id_is_not_visible_in_the_token() {
        let a = SessionSeal::new(None);
        let token = a.seal("internal-session-id-1234", &state(), "");
        let raw = URL_SAFE_NO_PAD.decode(&token).unwrap();
        assert!(!raw.windows(8).any(|w| w == b"internal"));
    }
}
