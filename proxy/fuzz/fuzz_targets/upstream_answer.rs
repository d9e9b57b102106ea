//! A hostile upstream: what the direct `tools/call` client (`upstream::DirectClient`) reads back
//! from a plain `http://` MCP server. The answer bytes come from the input and are written by a
//! real loopback server, so the whole read path runs: the in-task HTTP/1.1 client
//! (`upstream/h1.rs`: head parsing, interim answers, Content-Length, chunked framing, trailers,
//! end of connection), then the answer reader (a JSON body or an event stream through the
//! bounded `sse` decoder, JSON-RPC messages, notifications, the matching response).
//!
//! Input: a write-size byte (0: the answer in one write; n: pieces of n bytes, the client
//! reading between them), then the answer. The call's request id is 0. Properties: the call
//! ends (an answer or an error) once the server closes; nothing panics.
#![no_main]

use std::sync::{LazyLock, Weak};

use http::HeaderMap;
use libfuzzer_sys::fuzz_target;
use proxy::upstream::DirectClient;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

struct World {
    rt: tokio::runtime::Runtime,
    listener: TcpListener,
    url: String,
    http: reqwest::Client,
}

static WORLD: LazyLock<World> = LazyLock::new(|| {
    // Requests must not go through a proxy from the environment (that would use reqwest).
    for var in ["HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"] {
        // SAFETY: set once, before any other thread of this process reads the environment.
        unsafe { std::env::remove_var(var) };
    }
    proxy::tls::install_crypto_provider();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let listener = rt.block_on(TcpListener::bind("127.0.0.1:0")).unwrap();
    let url = format!("http://{}/mcp", listener.local_addr().unwrap());
    World {
        rt,
        listener,
        url,
        http: proxy::tls::client_builder().build().unwrap(),
    }
});

/// Reads one request (head and `Content-Length` body) so that closing the socket afterwards is
/// a clean end, not a reset.
async fn read_request(io: &mut tokio::net::TcpStream) {
    let mut buf = Vec::with_capacity(2048);
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            if buf.len() >= end + 4 + length {
                return;
            }
        }
        let mut chunk = [0u8; 4096];
        match io.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let [step, answer @ ..] = data else {
        return;
    };
    let world = &*WORLD;
    let client = DirectClient::new(
        "up".into(),
        world.http.clone(),
        &world.url,
        HeaderMap::new(),
        None,
        None,
        Weak::new(),
    )
    .unwrap();
    let params: rmcp::model::CallToolRequestParams =
        serde_json::from_value(serde_json::json!({"name": "echo", "arguments": {"m": "hi"}}))
            .unwrap();
    world.rt.block_on(async {
        let server = async {
            let (mut io, _) = world.listener.accept().await.unwrap();
            read_request(&mut io).await;
            let pieces = match *step {
                0 => answer.len().max(1),
                n => usize::from(n),
            };
            for piece in answer.chunks(pieces) {
                if io.write_all(piece).await.is_err() {
                    return;
                }
                let _ = io.flush().await;
                tokio::task::yield_now().await;
            }
            let _ = io.shutdown().await;
        };
        let call = client.call_tool(params, None, None);
        let ((), _result) = tokio::join!(server, call);
    });
});
