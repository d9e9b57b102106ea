//! The HTTP/1.1 client against scripted servers (exact bytes on the wire) and a real hyper
//! server.

use std::sync::Arc;
use std::sync::Mutex as StdMutex;
use std::time::Duration;

use http::{HeaderMap, HeaderValue, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::*;

/// What a scripted server does with one request.
enum Act {
    /// Writes these bytes and keeps the connection.
    Reply(Vec<u8>),
    /// Writes these bytes and closes the connection.
    ReplyClose(Vec<u8>),
    /// Closes the connection without a word.
    Close,
}

/// A request as the server read it.
#[derive(Debug, Clone)]
struct Seen {
    conn: usize,
    head: String,
    body: Vec<u8>,
}

type Script = dyn Fn(usize, usize) -> Act + Send + Sync;

/// Serves scripted answers: `script(connection index, request index on it)`.
async fn scripted(script: Arc<Script>) -> (String, Arc<StdMutex<Vec<Seen>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(StdMutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        let mut conn_index = 0;
        while let Ok((stream, _)) = listener.accept().await {
            let script = script.clone();
            let log = log.clone();
            let index = conn_index;
            conn_index += 1;
            tokio::spawn(serve_conn(stream, index, script, log));
        }
    });
    (format!("http://{addr}/mcp?x=1"), seen)
}

async fn serve_conn(
    mut stream: TcpStream,
    conn: usize,
    script: Arc<Script>,
    log: Arc<StdMutex<Vec<Seen>>>,
) {
    let mut buf = Vec::new();
    let mut request = 0;
    loop {
        // Read one request: head, then Content-Length bytes.
        let head_end = loop {
            if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
            let mut chunk = [0u8; 4096];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8(buf[..head_end].to_vec()).unwrap();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .map(|v| v.trim().parse().unwrap())
            .unwrap_or(0);
        while buf.len() < head_end + length {
            let mut chunk = [0u8; 4096];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let body = buf[head_end..head_end + length].to_vec();
        buf.drain(..head_end + length);
        log.lock().unwrap().push(Seen { conn, head, body });
        match script(conn, request) {
            Act::Reply(bytes) => {
                if stream.write_all(&bytes).await.is_err() {
                    return;
                }
            }
            Act::ReplyClose(bytes) => {
                let _ = stream.write_all(&bytes).await;
                return;
            }
            Act::Close => return,
        }
        request += 1;
    }
}

fn client(url: &str) -> Arc<H1Client> {
    let url = reqwest::Url::parse(url).unwrap();
    Arc::new(H1Client::for_url_without_proxy(&url, Duration::from_secs(5)).expect("plain http"))
}

fn headers() -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert("content-type", HeaderValue::from_static("application/json"));
    h.insert("mcp-method", HeaderValue::from_static("tools/call"));
    // Ours to write: left out.
    h.insert("content-length", HeaderValue::from_static("999"));
    h.insert("connection", HeaderValue::from_static("close"));
    h
}

async fn body_of(mut r: H1Response) -> Result<Vec<u8>, H1Error> {
    let mut out = Vec::new();
    while let Some(c) = r.chunk().await? {
        out.extend_from_slice(&c);
    }
    Ok(out)
}

fn ok_length(body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

#[tokio::test]
async fn a_request_goes_out_as_written_and_connections_are_reused() {
    let (url, seen) = scripted(Arc::new(|_, _| Act::Reply(ok_length("{\"a\":1}")))).await;
    let c = client(&url);
    for _ in 0..3 {
        let r = c.post(&headers(), b"{\"x\":2}").await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.content_length(), Some(7));
        assert_eq!(body_of(r).await.unwrap(), b"{\"a\":1}");
    }
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 3);
    assert!(seen.iter().all(|s| s.conn == 0), "one connection: {seen:?}");
    let head = &seen[0].head;
    let port = url.split(':').nth(2).unwrap().split('/').next().unwrap();
    assert!(head.starts_with("POST /mcp?x=1 HTTP/1.1\r\n"), "{head}");
    assert!(
        head.contains(&format!("host: 127.0.0.1:{port}\r\n")),
        "{head}"
    );
    assert!(head.contains("mcp-method: tools/call\r\n"));
    assert!(head.contains("content-length: 7\r\n"));
    assert!(
        !head.contains("999") && !head.contains("connection"),
        "{head}"
    );
    assert_eq!(seen[0].body, b"{\"x\":2}");
    assert_eq!(c.idle_count(), 1);
}

#[tokio::test]
async fn answer_headers_keep_their_values_including_empty_and_repeated_ones() {
    let reply = b"HTTP/1.1 200 OK\r\nx-empty:\r\nx-blank:   \r\ncontent-type: application/json\r\n\
        x-twice: a\r\nx-twice: b c\r\ncontent-length: 2\r\n\r\n{}"
        .to_vec();
    let (url, _) = scripted(Arc::new(move |_, _| Act::Reply(reply.clone()))).await;
    let c = client(&url);
    for _ in 0..2 {
        let r = c.post(&headers(), b"{}").await.unwrap();
        let h = r.headers();
        assert_eq!(h["x-empty"], "");
        assert_eq!(h["x-blank"], "");
        assert_eq!(h["content-type"], "application/json");
        let twice: Vec<_> = h.get_all("x-twice").iter().collect();
        assert_eq!(twice, ["a", "b c"]);
        assert_eq!(body_of(r).await.unwrap(), b"{}");
    }
}

#[tokio::test]
async fn chunked_answers_are_decoded_with_extensions_and_trailers() {
    let reply = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n\
        4;ext=1\r\n{\"a\"\r\n3\r\n:1}\r\n0\r\nx-trailer: t\r\n\r\n"
        .to_vec();
    let (url, seen) = scripted(Arc::new(move |_, _| Act::Reply(reply.clone()))).await;
    let c = client(&url);
    for _ in 0..2 {
        let r = c.post(&headers(), b"{}").await.unwrap();
        assert_eq!(r.content_length(), None);
        assert_eq!(body_of(r).await.unwrap(), b"{\"a\":1}");
    }
    assert!(seen.lock().unwrap().iter().all(|s| s.conn == 0));
}

#[tokio::test]
async fn an_event_stream_is_read_piece_by_piece() {
    let (url, _) = scripted(Arc::new(|_, _| {
        Act::Reply(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n\
              f\r\ndata: {\"a\":1}\n\n\r\n"
                .to_vec(),
        )
    }))
    .await;
    let c = client(&url);
    let mut r = c.post(&headers(), b"{}").await.unwrap();
    assert_eq!(r.headers()["content-type"], "text/event-stream");
    assert_eq!(
        &r.chunk().await.unwrap().unwrap()[..],
        b"data: {\"a\":1}\n\n"
    );
    // The stream stays open: dropping the answer drops the connection.
    drop(r);
    assert_eq!(c.idle_count(), 0);
}

#[tokio::test]
async fn close_delimited_and_connection_close_answers_are_not_reused() {
    let (url, seen) = scripted(Arc::new(|_, request| {
        if request % 2 == 0 {
            Act::ReplyClose(b"HTTP/1.1 200 OK\r\n\r\n{\"until\":\"end\"}".to_vec())
        } else {
            Act::ReplyClose(ok_length("{}"))
        }
    }))
    .await;
    let c = client(&url);
    let r = c.post(&headers(), b"{}").await.unwrap();
    assert_eq!(body_of(r).await.unwrap(), b"{\"until\":\"end\"}");
    assert_eq!(c.idle_count(), 0);
    let r = c.post(&headers(), b"{}").await.unwrap();
    assert_eq!(body_of(r).await.unwrap(), b"{\"until\":\"end\"}");
    assert_eq!(seen.lock().unwrap().len(), 2);
    assert_eq!(seen.lock().unwrap()[1].conn, 1);

    let (url, seen) = scripted(Arc::new(|_, _| {
        Act::Reply(b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\n{}".to_vec())
    }))
    .await;
    let c = client(&url);
    for _ in 0..2 {
        let r = c.post(&headers(), b"{}").await.unwrap();
        assert_eq!(body_of(r).await.unwrap(), b"{}");
    }
    let conns: Vec<usize> = seen.lock().unwrap().iter().map(|s| s.conn).collect();
    assert_eq!(conns, vec![0, 1]);
}

#[tokio::test]
async fn interim_answers_are_skipped_and_no_content_has_no_body() {
    let (url, seen) = scripted(Arc::new(|_, request| {
        if request == 0 {
            Act::Reply(
                [
                    &b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\n"
                        [..],
                    &ok_length("{}"),
                ]
                .concat(),
            )
        } else {
            Act::Reply(b"HTTP/1.1 204 No Content\r\n\r\n".to_vec())
        }
    }))
    .await;
    let c = client(&url);
    let r = c.post(&headers(), b"{}").await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(body_of(r).await.unwrap(), b"{}");
    let r = c.post(&headers(), b"{}").await.unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        c.idle_count(),
        1,
        "a 204 leaves the connection reusable at once"
    );
    assert_eq!(body_of(r).await.unwrap(), b"");
    assert!(seen.lock().unwrap().iter().all(|s| s.conn == 0));
}

#[tokio::test]
async fn a_connection_the_server_closed_while_idle_is_not_used() {
    let (url, seen) = scripted(Arc::new(|_, _| Act::ReplyClose(ok_length("{}")))).await;
    // The server closes after answering, but the answer does not say so: the pool keeps the
    // connection, and the next request must notice the close instead of failing.
    let c = client(&url);
    let r = c.post(&headers(), b"{}").await.unwrap();
    assert_eq!(body_of(r).await.unwrap(), b"{}");
    tokio::time::sleep(Duration::from_millis(50)).await;
    let r = c.post(&headers(), b"{}").await.unwrap();
    assert_eq!(body_of(r).await.unwrap(), b"{}");
    let conns: Vec<usize> = seen.lock().unwrap().iter().map(|s| s.conn).collect();
    assert_eq!(conns, vec![0, 1]);
}

#[tokio::test]
async fn a_reused_connection_closed_without_an_answer_is_retried_once_on_a_new_one() {
    // Connection 0 answers its first request, then closes on the second without a word (a
    // server dropping an idle connection as the request arrives).
    let (url, seen) = scripted(Arc::new(|conn, request| match (conn, request) {
        (0, 0) => Act::Reply(ok_length("{\"n\":0}")),
        (0, _) => Act::Close,
        _ => Act::Reply(ok_length("{\"n\":1}")),
    }))
    .await;
    let c = client(&url);
    let r = c.post(&headers(), b"{}").await.unwrap();
    assert_eq!(body_of(r).await.unwrap(), b"{\"n\":0}");
    let r = c.post(&headers(), b"{}").await.unwrap();
    assert_eq!(body_of(r).await.unwrap(), b"{\"n\":1}");
    let conns: Vec<usize> = seen.lock().unwrap().iter().map(|s| s.conn).collect();
    assert_eq!(conns, vec![0, 0, 1]);

    // A new connection that closes without an answer is an error, not a retry.
    let (url, seen) = scripted(Arc::new(|_, _| Act::Close)).await;
    let c = client(&url);
    let e = c.post(&headers(), b"{}").await.unwrap_err();
    assert!(matches!(e, H1Error::Closed), "{e}");
    assert_eq!(seen.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn ambiguous_or_broken_answers_are_errors() {
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("garbage", b"hello there\r\n\r\n".to_vec()),
        (
            "gzip",
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\n\r\n".to_vec(),
        ),
        (
            "two lengths",
            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 3\r\n\r\n{}".to_vec(),
        ),
        (
            "signed length",
            b"HTTP/1.1 200 OK\r\ncontent-length: +2\r\n\r\n{}".to_vec(),
        ),
        (
            "endless interim answers",
            b"HTTP/1.1 100 Continue\r\n\r\n".repeat(MAX_INTERIM + 1),
        ),
        (
            "switch",
            b"HTTP/1.1 101 Switching Protocols\r\nupgrade: x\r\n\r\n".to_vec(),
        ),
    ];
    for (name, reply) in cases {
        let (url, _) = scripted(Arc::new(move |_, _| Act::ReplyClose(reply.clone()))).await;
        let e = client(&url).post(&headers(), b"{}").await.unwrap_err();
        assert!(matches!(e, H1Error::Malformed(_)), "{name}: {e}");
    }

    // Broken bodies: short of their length, a bad chunk size, data longer than its chunk.
    let bodies: Vec<(&str, Vec<u8>)> = vec![
        (
            "short",
            b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n{}".to_vec(),
        ),
        (
            "bad size",
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n".to_vec(),
        ),
        (
            "overlong chunk",
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n1\r\nab\r\n0\r\n\r\n".to_vec(),
        ),
        (
            "no end",
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\n{}\r\n".to_vec(),
        ),
    ];
    for (name, reply) in bodies {
        let (url, _) = scripted(Arc::new(move |_, _| Act::ReplyClose(reply.clone()))).await;
        let c = client(&url);
        let r = c.post(&headers(), b"{}").await.unwrap();
        assert!(body_of(r).await.is_err(), "{name}");
        assert_eq!(c.idle_count(), 0, "{name}");
    }

    // A trailer that never ends is cut off at the limit too.
    let (url, _) = scripted(Arc::new(|_, _| {
        let mut reply =
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n".to_vec();
        while reply.len() <= MAX_HEAD + 100 {
            reply.extend_from_slice(b"x-trailer: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n");
        }
        Act::Reply(reply)
    }))
    .await;
    let c = client(&url);
    let r = c.post(&headers(), b"{}").await.unwrap();
    let e = body_of(r).await.unwrap_err();
    assert!(e.to_string().contains("trailer larger"), "{e}");
    assert_eq!(c.idle_count(), 0);

    // A head that never ends is cut off at the limit.
    let (url, _) = scripted(Arc::new(|_, _| {
        let mut head = b"HTTP/1.1 200 OK\r\n".to_vec();
        while head.len() <= MAX_HEAD + 100 {
            head.extend_from_slice(b"x-filler: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n");
        }
        Act::Reply(head)
    }))
    .await;
    let e = client(&url).post(&headers(), b"{}").await.unwrap_err();
    assert!(matches!(e, H1Error::Malformed(_)), "{e}");
}

#[tokio::test]
async fn nothing_listening_is_a_connect_error() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let e = client(&format!("http://{addr}/mcp"))
        .post(&headers(), b"{}")
        .await
        .unwrap_err();
    assert!(matches!(e, H1Error::Connect { .. }), "{e}");
}

#[test]
fn only_plain_http_without_credentials_is_taken() {
    let take = |u: &str| {
        H1Client::for_url_without_proxy(&reqwest::Url::parse(u).unwrap(), Duration::from_secs(1))
    };
    assert!(take("https://example.com/mcp").is_none());
    assert!(take("http://user:pw@example.com/mcp").is_none());
    let c = take("http://example.com/mcp").unwrap();
    assert_eq!(c.authority, "example.com");
    assert_eq!(c.port, 80);
    let c = take("http://[::1]:8080/a/b?c=d").unwrap();
    assert_eq!(c.authority, "[::1]:8080");
    assert_eq!(c.host, "::1");
    assert_eq!(c.target, "/a/b?c=d");
}

#[tokio::test]
async fn a_real_hyper_server_is_read_with_both_framings_over_one_connection() {
    use axum::routing::post;
    let app = axum::Router::new()
        .route(
            "/json",
            post(|body: String| async move { format!("{{\"echo\":{body}}}") }),
        )
        .route(
            "/stream",
            post(|| async {
                let chunks = futures::stream::iter(
                    ["data: 1\n\n", "data: 2\n\n"]
                        .map(|c| Ok::<_, std::convert::Infallible>(bytes::Bytes::from(c))),
                );
                axum::response::Response::builder()
                    .header("content-type", "text/event-stream")
                    .body(axum::body::Body::from_stream(chunks))
                    .unwrap()
            }),
        );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let json = client(&format!("http://{addr}/json"));
    for i in 0..3 {
        let r = json
            .post(&headers(), format!("{i}").as_bytes())
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(
            body_of(r).await.unwrap(),
            format!("{{\"echo\":{i}}}").as_bytes()
        );
        assert_eq!(json.idle_count(), 1);
    }
    let stream = client(&format!("http://{addr}/stream"));
    let r = stream.post(&headers(), b"").await.unwrap();
    assert_eq!(body_of(r).await.unwrap(), b"data: 1\n\ndata: 2\n\n");
    assert_eq!(stream.idle_count(), 1);
}

#[test]
fn a_shared_slice_is_the_same_range_of_the_copy_or_else_a_copy() {
    let original = b"key: value\r\n".to_vec();
    let copy = Bytes::copy_from_slice(&original);
    let part = &original[5..10];
    let shared = shared_slice(&copy, &original, part);
    assert_eq!(&shared[..], b"value");
    assert_eq!(shared.as_ptr(), copy[5..].as_ptr(), "shares the copy");
    let elsewhere = b"other".to_vec();
    assert_eq!(&shared_slice(&copy, &original, &elsewhere)[..], b"other");
    assert!(shared_slice(&copy, &original, &original[3..3]).is_empty());
}
