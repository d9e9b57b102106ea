//! The legacy HTTP+SSE client transport (protocol 2024-11-05).
//!
//! rmcp 3 dropped this transport, but many deployed servers still speak only it. The shape is
//! small: `GET <url>` opens an event stream whose first `endpoint` event names the URL to POST
//! messages to; every server message then arrives as a `message` event on that stream.

use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use rmcp::RoleClient;
use rmcp::service::{RxJsonRpcMessage, TxJsonRpcMessage};
use sse_stream::SseStream;

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
}

/// Largest single SSE event accepted from an upstream.
const MAX_EVENT_BYTES: usize = 16 * 1024 * 1024;

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
    if let Some(token) = bearer(tokens.clone()).await.map_err(SseError::Protocol)? {
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
    let mut events = SseStream::from_bytes_stream(resp.bytes_stream()).boxed();
    let endpoint = tokio::time::timeout(timeout, async {
        while let Some(ev) = events.next().await {
            let ev = ev.map_err(|e| SseError::Protocol(e.to_string()))?;
            if ev.event.as_deref() == Some("endpoint") {
                let data = ev.data.unwrap_or_default();
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
        .take_while(|ev| futures::future::ready(ev.is_ok()))
        .filter_map(|ev| async move {
            let ev = ev.ok()?;
            if !matches!(ev.event.as_deref(), None | Some("message")) {
                return None;
            }
            let data = ev.data?;
            if data.len() > MAX_EVENT_BYTES {
                tracing::warn!(bytes = data.len(), "sse upstream event too large; dropped");
                return None;
            }
            match serde_json::from_str::<RxJsonRpcMessage<RoleClient>>(&data) {
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
    use futures::SinkExt;
    use rmcp::model::{
        CallToolRequest, CallToolRequestParams, ClientJsonRpcMessage, ClientRequest, RequestId,
    };

    use crate::model::SignedIdentity;

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
