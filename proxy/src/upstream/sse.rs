//! The legacy HTTP+SSE client transport (protocol 2024-11-05).
//!
//! rmcp 3 dropped this transport, but many deployed servers still speak only it. The shape is
//! small: `GET <url>` opens an event stream whose first `endpoint` event names the URL to POST
//! messages to; every server message then arrives as a `message` event on that stream.

use std::sync::Arc;
use std::time::Duration;

use futures::stream::BoxStream;
use futures::{SinkExt, StreamExt};
use rmcp::RoleClient;
use rmcp::service::{RxJsonRpcMessage, TxJsonRpcMessage};

use super::oauth::TokenSource;

/// Errors of the SSE transport.
#[derive(Debug, thiserror::Error)]
pub enum SseError {
    /// The HTTP request failed.
    #[error("sse: {0}")]
    Http(#[from] reqwest::Error),
    /// The server answered, but not as a legacy SSE MCP server.
    #[error("sse: {0}")]
    Protocol(String),
    /// The token endpoint gave no token.
    #[error("sse: {0}")]
    Token(#[from] super::oauth::TokenError),
    /// The event stream broke the event-stream rules or the size limit.
    #[error("sse: {0}")]
    Event(#[from] sse::Error),
}

/// Largest single SSE event accepted from an upstream (rmcp's default SSE event size limit).
/// The decoder refuses an event as it passes this, so it also bounds what is buffered.
const MAX_EVENT_BYTES: usize = 16 * 1024 * 1024;

/// The events of an event-stream body, decoded by the shared bounded decoder. A read error or
/// a refused event is the stream's last item; the body (and its connection) is dropped then.
fn events(
    body: BoxStream<'static, reqwest::Result<bytes::Bytes>>,
    limit: usize,
) -> BoxStream<'static, Result<sse::Event, SseError>> {
    struct Reading {
        body: Option<BoxStream<'static, reqwest::Result<bytes::Bytes>>>,
        decoder: sse::Decoder,
        ready: std::collections::VecDeque<sse::Event>,
        decoded: Vec<sse::Event>,
        failed: Option<SseError>,
    }
    let start = Reading {
        body: Some(body),
        decoder: sse::Decoder::new(limit),
        ready: Default::default(),
        decoded: Vec::new(),
        failed: None,
    };
    futures::stream::unfold(start, |mut st| async move {
        loop {
            if let Some(event) = st.ready.pop_front() {
                return Some((Ok(event), st));
            }
            if let Some(e) = st.failed.take() {
                return Some((Err(e), st));
            }
            let chunk = match st.body.as_mut()?.next().await {
                Some(Ok(chunk)) => chunk,
                Some(Err(e)) => {
                    st.body = None;
                    st.failed = Some(e.into());
                    continue;
                }
                None => return None,
            };
            if let Err(e) = st.decoder.feed(&chunk, &mut st.decoded) {
                st.body = None;
                st.failed = Some(e.into());
            }
            st.ready.extend(st.decoded.drain(..));
        }
    })
    .boxed()
}

/// Whether an event carries a JSON-RPC message: unnamed or `message` events with data (an
/// empty one is a priming event).
fn carries_message(event: &sse::Event) -> bool {
    matches!(event.event.as_deref(), None | Some("" | "message")) && !event.data.trim().is_empty()
}

/// Opens the event stream and waits for the `endpoint` event. Returns a (sink, stream) pair
/// that rmcp accepts as a transport.
pub async fn connect(
    client: reqwest::Client,
    url: &str,
    headers: reqwest::header::HeaderMap,
    tokens: Option<Arc<TokenSource>>,
    identity_header: Option<reqwest::header::HeaderName>,
    timeout: Duration,
) -> Result<
    (
        impl futures::Sink<TxJsonRpcMessage<RoleClient>, Error = futures::channel::mpsc::SendError>
        + Send
        + Unpin
        + 'static,
        impl futures::Stream<Item = RxJsonRpcMessage<RoleClient>> + Send + Unpin + 'static,
    ),
    SseError,
> {
    let base = reqwest::Url::parse(url).map_err(|e| SseError::Protocol(format!("bad url: {e}")))?;
    let bearer = |tokens: Option<Arc<TokenSource>>| async move {
        match tokens {
            Some(t) => t.token().await.map(Some),
            None => Ok(None),
        }
    };
    let mut get = client.get(base.clone()).headers(headers.clone());
    if let Some(token) = bearer(tokens.clone()).await? {
        get = get.bearer_auth(token);
    }
    let resp = get
        .header(reqwest::header::ACCEPT, "text/event-stream")
        .send()
        .await?;
    if !resp.status().is_success() {
        return Err(SseError::Protocol(format!(
            "GET {base} answered {}",
            resp.status()
        )));
    }
    let mut events = events(resp.bytes_stream().boxed(), MAX_EVENT_BYTES);
    let endpoint = tokio::time::timeout(timeout, async {
        while let Some(ev) = events.next().await {
            let ev = ev?;
            if ev.event.as_deref() == Some("endpoint") {
                let data = ev.data;
                return base
                    .join(data.trim())
                    .map_err(|e| SseError::Protocol(format!("bad endpoint {data:?}: {e}")));
            }
        }
        Err(SseError::Protocol(
            "stream ended before the endpoint event".into(),
        ))
    })
    .await
    .map_err(|_| SseError::Protocol("no endpoint event within the timeout".into()))??;
    if endpoint.origin() != base.origin() {
        // A server must not redirect our messages (and credentials) to another origin.
        return Err(SseError::Protocol(format!(
            "endpoint {endpoint} is on another origin than {base}"
        )));
    }

    let (tx, mut rx) = futures::channel::mpsc::channel::<TxJsonRpcMessage<RoleClient>>(64);
    tokio::spawn(async move {
        while let Some(mut msg) = rx.next().await {
            let mut extra = std::collections::HashMap::new();
            crate::identity::take_into_header(&mut msg, identity_header.as_ref(), &mut extra);
            let mut post = client.post(endpoint.clone()).headers(headers.clone());
            for (k, v) in extra {
                post = post.header(k, v);
            }
            match bearer(tokens.clone()).await {
                Ok(Some(token)) => post = post.bearer_auth(token),
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "sse upstream: no token for a message; dropped");
                    continue;
                }
            }
            let post = post.json(&msg).send().await;
            match post {
                Ok(r) if r.status().is_success() => {}
                Ok(r) => {
                    if r.status() == reqwest::StatusCode::UNAUTHORIZED
                        && let Some(t) = &tokens
                    {
                        t.invalidate().await;
                    }
                    tracing::warn!(status = %r.status(), "sse upstream refused a message")
                }
                Err(e) => {
                    tracing::warn!(error = %e, "sse upstream POST failed");
                    break;
                }
            }
        }
    });
    let stream = events
        .take_while(|ev| {
            if let Err(e) = ev {
                tracing::warn!(error = %e, "sse upstream stream refused; the connection ends");
            }
            futures::future::ready(ev.is_ok())
        })
        .filter_map(|ev| async move {
            let ev = ev.ok().filter(carries_message)?;
            match serde_json::from_str::<RxJsonRpcMessage<RoleClient>>(&ev.data) {
                Ok(m) => Some(m),
                Err(e) => {
                    tracing::warn!(error = %e, "sse upstream sent a message that is not JSON-RPC");
                    None
                }
            }
        })
        .boxed();
    Ok((tx.sink_map_err(|e| e), stream))
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use axum::Router;
    use axum::routing::{get, post};
    use futures::{SinkExt, StreamExt};
    use rmcp::model::{
        CallToolRequest, CallToolRequestParams, ClientJsonRpcMessage, ClientRequest, RequestId,
    };

    use crate::model::SignedIdentity;

    /// Bytes an endless server writes at most, so that a test ends whatever the client does.
    const SERVER_CAP: usize = 1 << 30;

    /// What an endless server saw: bytes written, and whether a write failed (the client went
    /// away).
    #[derive(Default)]
    struct Served {
        written: std::sync::atomic::AtomicUsize,
        dropped: std::sync::atomic::AtomicBool,
    }

    /// A real socket server answering every request with an event stream that starts with
    /// `head` and then repeats `filler` until the client goes away: an event (or a line) that
    /// never ends.
    async fn endless_server(head: &'static [u8], filler: &'static [u8]) -> (String, Arc<Served>) {
        use std::sync::atomic::Ordering;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let served = Arc::new(Served::default());
        let seen = served.clone();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let seen = seen.clone();
                tokio::spawn(async move {
                    let mut request = [0u8; 4096];
                    let _ = socket.read(&mut request).await;
                    let answer = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n";
                    let block = filler.repeat(64 * 1024 / filler.len());
                    let mut ok = socket.write_all(answer).await.is_ok()
                        && socket.write_all(head).await.is_ok();
                    while ok && seen.written.load(Ordering::Relaxed) < SERVER_CAP {
                        ok = socket.write_all(&block).await.is_ok();
                        seen.written.fetch_add(block.len(), Ordering::Relaxed);
                    }
                    if !ok {
                        seen.dropped.store(true, Ordering::Relaxed);
                    }
                });
            }
        });
        (format!("http://{addr}/sse"), served)
    }

    async fn until_dropped(served: &Served) {
        for _ in 0..500 {
            if served.dropped.load(std::sync::atomic::Ordering::Relaxed) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the connection to the endless server was never dropped");
    }

    #[tokio::test]
    async fn an_upstream_streaming_an_endless_event_gets_a_clear_error_not_the_proxys_memory() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let (url, served) = endless_server(b"event: endpoint\ndata: /m\n\ndata: ", b"x").await;
        let received = Arc::new(AtomicUsize::new(0));
        let counted = received.clone();
        let body = crate::tls::client_builder()
            .build()
            .unwrap()
            .get(&url)
            .send()
            .await
            .unwrap()
            .bytes_stream()
            .inspect(move |c| {
                if let Ok(c) = c {
                    counted.fetch_add(c.len(), Ordering::Relaxed);
                }
            })
            .boxed();
        const LIMIT: usize = 64 * 1024;
        let mut events = super::events(body, LIMIT);
        let first = events.next().await.unwrap().unwrap();
        assert_eq!(first.event.as_deref(), Some("endpoint"));
        let refused = tokio::time::timeout(Duration::from_secs(20), events.next())
            .await
            .expect("an endless event must be refused, not buffered for ever")
            .unwrap()
            .unwrap_err();
        assert!(
            matches!(
                refused,
                super::SseError::Event(sse::Error::TooLarge { limit: LIMIT })
            ),
            "{refused}"
        );
        assert!(
            refused.to_string().contains("larger than 65536 bytes"),
            "{refused}"
        );
        // What was read (so at most what was held) is the limit and one read's worth of
        // socket data; the server would have sent up to a gigabyte.
        let read = received.load(Ordering::Relaxed);
        assert!(read < LIMIT + 1024 * 1024, "read {read} bytes");
        assert!(events.next().await.is_none(), "a refused stream ends");
        until_dropped(&served).await;
        assert!(served.written.load(Ordering::Relaxed) < SERVER_CAP);
    }

    #[tokio::test]
    async fn an_upstream_streaming_an_endless_line_instead_of_its_endpoint_is_refused_at_connect() {
        let (url, served) = endless_server(b"event: endpoint\ndata: /", b"m").await;
        let err = tokio::time::timeout(
            Duration::from_secs(60),
            super::connect(
                crate::tls::client_builder().build().unwrap(),
                &url,
                Default::default(),
                None,
                None,
                Duration::from_secs(60),
            ),
        )
        .await
        .expect("connect must give up on an endless line")
        .err()
        .expect("an endless line is no endpoint");
        assert_eq!(
            err.to_string(),
            format!(
                "sse: server-sent event larger than {} bytes",
                super::MAX_EVENT_BYTES
            )
        );
        until_dropped(&served).await;
    }

    #[tokio::test]
    async fn an_endless_event_after_the_endpoint_ends_the_message_stream() {
        let (url, served) = endless_server(b"event: endpoint\ndata: /m\n\ndata: {", b" ").await;
        let (_sink, mut stream) = super::connect(
            crate::tls::client_builder().build().unwrap(),
            &url,
            Default::default(),
            None,
            None,
            Duration::from_secs(5),
        )
        .await
        .unwrap();
        let end = tokio::time::timeout(Duration::from_secs(60), stream.next())
            .await
            .expect("the stream must end at the limit");
        assert!(end.is_none(), "no message comes of an endless event");
        until_dropped(&served).await;
    }

    #[tokio::test]
    async fn the_sse_sink_sends_the_signed_identity_as_the_opted_in_header_and_not_in_the_body() {
        // (identity header, body) of every POST.
        type Seen = Arc<Mutex<Vec<(Option<String>, String)>>>;
        let seen: Seen = Arc::default();
        let record = seen.clone();
        let app = Router::new()
            .route(
                "/sse",
                get(|| async {
                    (
                        [(http::header::CONTENT_TYPE, "text/event-stream")],
                        "event: endpoint\ndata: /messages\n\n",
                    )
                }),
            )
            .route(
                "/messages",
                post(move |headers: http::HeaderMap, body: String| async move {
                    let h = headers
                        .get("x-portcullis-identity")
                        .map(|v| v.to_str().unwrap().to_owned());
                    record.lock().unwrap().push((h, body));
                    http::StatusCode::ACCEPTED
                }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        let (mut sink, _stream) = super::connect(
            crate::tls::client_builder().build().unwrap(),
            &format!("http://{addr}/sse"),
            Default::default(),
            None,
            Some(reqwest::header::HeaderName::from_static(
                "x-portcullis-identity",
            )),
            Duration::from_secs(5),
        )
        .await
        .unwrap();
        for (id, signed) in [(1, Some("signed.jwt.token")), (2, None)] {
            let mut req = CallToolRequest::new(CallToolRequestParams::new("echo"));
            if let Some(t) = signed {
                req.extensions.insert(SignedIdentity(t.into()));
            }
            sink.send(ClientJsonRpcMessage::request(
                ClientRequest::CallToolRequest(req),
                RequestId::Number(id),
            ))
            .await
            .unwrap();
        }
        for _ in 0..200 {
            if seen.lock().unwrap().len() == 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let seen = seen.lock().unwrap().clone();
        assert_eq!(seen.len(), 2, "{seen:?}");
        assert_eq!(seen[0].0.as_deref(), Some("signed.jwt.token"));
        assert_eq!(seen[1].0, None, "a call without an identity gets no header");
        assert!(
            seen.iter()
                .all(|(_, body)| !body.contains("signed.jwt.token"))
        );
    }
}
