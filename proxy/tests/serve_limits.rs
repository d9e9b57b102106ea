//! The listener's bounds (`http::serve`): a client that sends its headers a byte at a time, or
//! connections that are opened and left idle, are disconnected after the header timeout and do
//! not keep others from being served; past `max_connections`, new connections wait.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::ConnectInfo;
use axum::routing::get;
use proxy::http::serve::{ServeLimits, serve_with};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

async fn start(limits: ServeLimits) -> (SocketAddr, CancellationToken) {
    let app = Router::new().route(
        "/peer",
        get(|ConnectInfo(peer): ConnectInfo<SocketAddr>| async move { peer.ip().to_string() }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    tokio::spawn(serve_with(listener, app, shutdown.clone(), limits));
    (addr, shutdown)
}

/// One `GET /peer` on a new connection: the body.
async fn get_peer(addr: SocketAddr) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /peer HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    answer.rsplit("\r\n\r\n").next().unwrap().to_owned()
}

/// Whether the server closed `s` (EOF or reset) within `within`.
async fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0; 256];
    matches!(
        tokio::time::timeout(within, s.read(&mut buf)).await,
        Ok(Ok(0) | Err(_))
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_sending_headers_a_byte_at_a_time_is_disconnected_while_others_are_served() {
    let (addr, _shutdown) = start(ServeLimits {
        max_connections: 64,
        header_read_timeout: Duration::from_secs(1),
    })
    .await;
    let slow = tokio::spawn(async move {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /peer HTTP/1.1\r\nHost: t\r\nX-Slow: ")
            .await
            .unwrap();
        // 100 bytes at 10 a second: 10 s if the server waited for all of them.
        let started = Instant::now();
        for _ in 0..100 {
            if s.write_all(b"a").await.is_err() {
                return Some(started.elapsed());
            }
            if closed_within(&mut s, Duration::from_millis(100)).await {
                return Some(started.elapsed());
            }
        }
        None
    });
    // Meanwhile, others are served (and see their own address).
    for _ in 0..5 {
        assert_eq!(get_peer(addr).await, "127.0.0.1");
    }
    let cut = slow.await.unwrap();
    assert!(
        cut.is_some(),
        "the slow client was allowed to take 10 s over its headers"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_at_the_limit_hold_others_back_only_until_the_header_timeout() {
    // Control: with a long header timeout, four idle connections keep a fifth client out.
    let (addr, shutdown) = start(ServeLimits {
        max_connections: 4,
        header_read_timeout: Duration::from_secs(60),
    })
    .await;
    let mut idle = Vec::new();
    for _ in 0..4 {
        idle.push(TcpStream::connect(addr).await.unwrap());
    }
    assert!(
        tokio::time::timeout(Duration::from_secs(2), get_peer(addr))
            .await
            .is_err(),
        "a fifth connection was served past max_connections = 4"
    );
    drop(idle);
    shutdown.cancel();

    // With a one-second header timeout, the idle connections are closed and the client gets
    // in.
    let (addr, _shutdown) = start(ServeLimits {
        max_connections: 4,
        header_read_timeout: Duration::from_secs(1),
    })
    .await;
    let mut idle = Vec::new();
    for _ in 0..4 {
        idle.push(TcpStream::connect(addr).await.unwrap());
    }
    let served = tokio::time::timeout(Duration::from_secs(10), get_peer(addr)).await;
    assert_eq!(served.expect("held back for 10 s"), "127.0.0.1");
    for s in &mut idle {
        assert!(
            closed_within(s, Duration::from_secs(5)).await,
            "an idle connection outlived the header timeout"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_a_request_in_flight_finish_and_then_returns() {
    let started = std::sync::Arc::new(tokio::sync::Notify::new());
    let app = Router::new().route(
        "/slow",
        get({
            let started = started.clone();
            move || async move {
                started.notify_one();
                tokio::time::sleep(Duration::from_millis(300)).await;
                "done"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(serve_with(
        listener,
        app,
        shutdown.clone(),
        ServeLimits::default(),
    ));
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /slow HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    started.notified().await;
    shutdown.cancel();
    let mut answer = String::new();
    s.read_to_string(&mut answer).await.unwrap();
    assert!(
        answer.starts_with("HTTP/1.1 200") && answer.ends_with("done"),
        "{answer}"
    );
    tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .expect("serve returned after its connections ended")
        .unwrap()
        .unwrap();
}
