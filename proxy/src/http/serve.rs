//! Accepting connections: how many at once, how long a client may take to send a request's
//! headers, and draining on shutdown.
//!
//! `axum::serve` sets no timer on hyper, so a connection that sends its headers a byte at a
//! time, or opens and sends nothing, is held for as long as the client likes, and the number of
//! connections is bounded only by the file descriptor limit (past which `accept` fails for
//! everyone). This loop is `axum::serve`'s, with two bounds:
//! - [`ServeLimits::header_read_timeout`]: from the moment a connection is accepted, or hyper
//!   waits for the next request's head on a kept-alive one, to the head's last byte. A client
//!   that is slower, or idle for longer between requests, is disconnected. Responses that stream
//!   (SSE) are not affected: no head is being waited for.
//! - [`ServeLimits::max_connections`]: connections served at once. Past it, new connections
//!   wait in the kernel's accept queue until one ends (slow and idle ones end within the header
//!   timeout), so a flood of idle connections delays others by at most that timeout instead of
//!   exhausting descriptors.
//!
//! [`serve_tls_with`] is the same loop for the HTTPS listener (`spec.tls`): the TLS handshake
//! must finish within the header timeout too (it counts as part of the first request's head),
//! and a client certificate it verified rides on every request of the connection as a
//! [`super::tls::PresentedCertificate`].

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{ConnectInfo, Request};
use axum::response::Response;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

/// Bounds on the connections of one listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServeLimits {
    /// Connections served at once.
    pub max_connections: usize,
    /// Longest wait for a request's head (headers included), and longest idle time between
    /// requests on a kept-alive connection.
    pub header_read_timeout: Duration,
}

/// Default of [`ServeLimits::max_connections`].
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// Default of [`ServeLimits::header_read_timeout`].
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

impl Default for ServeLimits {
    fn default() -> ServeLimits {
        ServeLimits {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
        }
    }
}

/// Serves `app` on `listener` within `limits` until `shutdown` is cancelled, then lets each
/// connection finish its in-flight requests and waits for all of them to end. Requests carry
/// the peer's address as [`ConnectInfo<SocketAddr>`].
pub async fn serve_with<S>(
    listener: tokio::net::TcpListener,
    app: S,
    shutdown: CancellationToken,
    limits: ServeLimits,
) -> std::io::Result<()>
where
    S: tower::Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send,
{
    accept_loop(listener, None, app, shutdown, limits).await
}

/// [`serve_with`] over TLS: each connection's handshake (with `tls`) must end within the
/// header timeout; requests also carry the verified client certificate, if any.
pub async fn serve_tls_with<S>(
    listener: tokio::net::TcpListener,
    tls: super::tls::Listener,
    app: S,
    shutdown: CancellationToken,
    limits: ServeLimits,
) -> std::io::Result<()>
where
    S: tower::Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send,
{
    accept_loop(listener, Some(tls), app, shutdown, limits).await
}

async fn accept_loop<S>(
    listener: tokio::net::TcpListener,
    tls: Option<super::tls::Listener>,
    app: S,
    shutdown: CancellationToken,
    limits: ServeLimits,
) -> std::io::Result<()>
where
    S: tower::Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send,
{
    let max = limits.max_connections.max(1);
    let slots = Arc::new(Semaphore::new(max));
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    builder.http2().timer(TokioTimer::new());
    loop {
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
            () = shutdown.cancelled() => break,
        };
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    accept_error(e).await;
                    continue;
                }
            },
            () = shutdown.cancelled() => break,
        };
        // Without TCP_NODELAY every SSE-framed response waits for the peer's delayed ACK.
        let _ = tcp.set_nodelay(true);
        let app = app.clone();
        let builder = builder.clone();
        let shutdown = shutdown.clone();
        let first_request = limits.header_read_timeout;
        let tls = tls.clone();
        tokio::spawn(async move {
            let started = tokio::time::Instant::now();
            match tls {
                None => {
                    serve_connection(tcp, peer, None, app, builder, shutdown, first_request).await;
                }
                Some(tls) => {
                    match tokio::time::timeout(first_request, tls.acceptor.accept(tcp)).await {
                        Ok(Ok(stream)) => {
                            let presented = super::tls::presented(stream.get_ref().1);
                            // What is left of the header timeout after the handshake.
                            let left = first_request.saturating_sub(started.elapsed());
                            serve_connection(stream, peer, presented, app, builder, shutdown, left)
                                .await;
                        }
                        Ok(Err(e)) => {
                            tracing::debug!(peer = %peer, error = %e, "TLS handshake failed");
                        }
                        Err(_) => {
                            tracing::debug!(peer = %peer, "no TLS handshake within the header timeout: disconnected");
                        }
                    }
                }
            }
            drop(slot);
        });
    }
    drop(listener);
    // Every connection holds a slot until it ends: all slots back means all ended.
    let _ = slots.acquire_many(max as u32).await;
    Ok(())
}

/// Serves one accepted connection (plain, or after its TLS handshake) until it ends, cutting
/// it when no request arrives within `first_request`, and draining it on shutdown.
async fn serve_connection<S, I>(
    io: I,
    peer: std::net::SocketAddr,
    presented: Option<super::tls::PresentedCertificate>,
    app: S,
    builder: Builder<TokioExecutor>,
    shutdown: CancellationToken,
    first_request: Duration,
) where
    S: tower::Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send,
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    // Set when the connection's first request reaches the service: until then hyper may
    // still be reading the first bytes to tell HTTP/1 from HTTP/2, which its header timer
    // does not cover, so a connection that sends nothing is cut here instead.
    let requested = Arc::new(AtomicBool::new(false));
    let service = app.map_request({
        let requested = requested.clone();
        move |req: Request<Incoming>| {
            requested.store(true, Ordering::Relaxed);
            let mut req = req.map(Body::new);
            req.extensions_mut().insert(ConnectInfo(peer));
            if let Some(p) = &presented {
                req.extensions_mut().insert(p.clone());
            }
            req
        }
    });
    let conn =
        builder.serve_connection_with_upgrades(TokioIo::new(io), TowerToHyperService::new(service));
    tokio::pin!(conn);
    let deadline = tokio::time::sleep(first_request);
    tokio::pin!(deadline);
    let mut waiting_first = true;
    let mut draining = false;
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(peer = %peer, error = %e, "connection ended with an error");
                }
                break;
            }
            () = &mut deadline, if waiting_first => {
                waiting_first = false;
                if !requested.load(Ordering::Relaxed) {
                    tracing::debug!(peer = %peer, "no request within the header timeout: disconnected");
                    break;
                }
            }
            () = shutdown.cancelled(), if !draining => {
                draining = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}

/// After a failed `accept`: errors of one connection (reset before it was accepted) are
/// skipped; running out of descriptors or memory pauses accepting briefly instead of spinning.
async fn accept_error(e: std::io::Error) {
    use std::io::ErrorKind::*;
    if matches!(
        e.kind(),
        ConnectionAborted | ConnectionReset | ConnectionRefused | Interrupted
    ) {
        return;
    }
    tracing::warn!(error = %e, "accepting a connection failed; pausing 100 ms");
    tokio::time::sleep(Duration::from_millis(100)).await;
}

/// Raises this process's soft limit on open files to what `wanted` connections need (plus
/// room for upstreams, files and the admin listener), within the hard limit. Returns the soft
/// limit in force afterwards; logs when it stays below what is wanted.
pub fn raise_open_files_limit(wanted: usize) -> u64 {
    let wanted = wanted as u64 + 1024;
    let now = match rlimit::increase_nofile_limit(wanted) {
        Ok(n) => n,
        Err(e) => {
            tracing::warn!(error = %e, "could not read or raise the open-files limit");
            return 0;
        }
    };
    if now < wanted {
        tracing::warn!(
            open_files = now,
            wanted,
            "the open-files limit is below what spec.limits.maxConnections needs: accepting pauses when it is reached"
        );
    }
    now
}
