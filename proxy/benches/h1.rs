//! `make bench`: the direct path's in-task HTTP/1.1 client (`upstream/h1.rs`) against hyper's
//! `client::conn::http1` driven from the caller's task, side by side on the direct path's work:
//! a pooled keep-alive POST of a JSON-RPC `tools/call` (the headers and body `DirectClient`
//! sends) to a plain `http://` upstream (axum, as rmcp's servers are) that answers with a JSON
//! body (`Content-Length`) or an event stream (chunked), each answer read to its end.
//!
//! Both clients do the same per call: clone the call's header map, add `Mcp-Name`, post, read
//! the head and every piece of the body, and put the connection back in a LIFO pool. The hyper
//! client is what a replacement of `h1.rs` would be: no connection task, the caller polls the
//! connection beside its request and body (see [`hyper_in_task`]).
//!
//! Figures:
//! 1. calls/s and client CPU per call (thread CPU time of the client's one-thread runtime), 16
//!    callers sharing a pool and one caller alone, alternating h1/hyper for `--rounds` rounds of
//!    `--duration` s (medians). Wall-clock figures swing with whatever else runs on the machine.
//! 2. Instructions per call in the client process, counted by `valgrind --tool=callgrind`: the
//!    bench runs itself as a client under callgrind twice per lane (`--calls` and five times as
//!    many sequential calls on one connection, the upstream staying in this process) and divides
//!    the difference of the counts by the difference of the calls, which cancels start-up.
//!    Stable under load; skipped (and said so) when valgrind is not installed.
//!
//!     cargo bench -p portcullis-proxy --bench h1 [-- --duration 2 --rounds 3 --calls 200]

use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue};
use proxy::upstream::h1::H1Client;

const MESSAGE: &str = "portcullis-bench";
const CALLERS: usize = 16;

/// The upstream's answer to a call, as rmcp's servers write it.
fn answer_json() -> String {
    format!(
        r#"{{"jsonrpc":"2.0","id":1,"result":{{"content":[{{"type":"text","text":"{MESSAGE}"}}],"isError":false}}}}"#
    )
}

async fn upstream() -> String {
    use axum::routing::post;
    let app = axum::Router::new()
        .route(
            "/json",
            post(|_body: Bytes| async {
                (
                    [(http::header::CONTENT_TYPE, "application/json")],
                    answer_json(),
                )
            }),
        )
        .route(
            "/sse",
            post(|_body: Bytes| async {
                let event = format!("event: message\ndata: {}\n\n", answer_json());
                let events =
                    futures::stream::iter([Ok::<_, std::convert::Infallible>(Bytes::from(event))]);
                axum::response::Response::builder()
                    .header(http::header::CONTENT_TYPE, "text/event-stream")
                    .body(axum::body::Body::from_stream(events))
                    .unwrap()
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

/// What `DirectClient` sends on every call (its fixed headers; `Mcp-Name` is added per call).
fn call_headers() -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(
        http::header::ACCEPT,
        HeaderValue::from_static("text/event-stream, application/json"),
    );
    h.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(
        HeaderName::from_static("mcp-protocol-version"),
        HeaderValue::from_static("2026-07-28"),
    );
    h.insert(
        HeaderName::from_static("mcp-method"),
        HeaderValue::from_static("tools/call"),
    );
    h
}

fn call_body() -> Bytes {
    Bytes::from(format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"_meta":{{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientInfo":{{"name":"portcullis","version":"0.1.0"}},"io.modelcontextprotocol/clientCapabilities":{{}}}},"name":"echo","arguments":{{"message":"{MESSAGE}"}}}}}}"#
    ))
}

const MCP_NAME: HeaderName = HeaderName::from_static("mcp-name");

/// One call's worth of client: the shared parts and the call.
enum Lane {
    H1(Arc<H1Client>),
    Hyper(Arc<hyper_in_task::Client>),
}

impl Lane {
    fn new(kind: &str, url: &str) -> Lane {
        let parsed = reqwest::Url::parse(url).unwrap();
        match kind {
            "h1" => Lane::H1(Arc::new(
                H1Client::for_url(&parsed, Duration::from_secs(5)).expect("plain http"),
            )),
            "hyper" => Lane::Hyper(Arc::new(hyper_in_task::Client::for_url(&parsed))),
            other => panic!("unknown client {other}"),
        }
    }

    /// One call; the bytes of the answer's body.
    async fn call(&self, fixed: &HeaderMap, body: &Bytes) -> usize {
        let mut headers = fixed.clone();
        headers.insert(MCP_NAME, HeaderValue::from_static("echo"));
        let mut read = 0;
        match self {
            Lane::H1(c) => {
                let mut r = c.post(&headers, body).await.unwrap();
                assert!(r.status().is_success());
                while let Some(piece) = r.chunk().await.unwrap() {
                    read += piece.len();
                }
            }
            Lane::Hyper(c) => {
                let mut r = c.post(headers, body.clone()).await.unwrap();
                assert!(r.status().is_success());
                while let Some(piece) = r.chunk().await.unwrap() {
                    read += piece.len();
                }
            }
        }
        assert!(read > MESSAGE.len());
        read
    }

    fn connections(&self) -> Option<usize> {
        match self {
            Lane::H1(_) => None,
            Lane::Hyper(c) => Some(c.connects.load(Ordering::Relaxed)),
        }
    }
}

/// The in-task hyper client: `hyper::client::conn::http1` without a connection task. A pooled
/// entry is the request sender and its connection; the caller polls the connection (which does
/// the reading and writing) beside the response future and then beside the body, and puts both
/// back once the body has ended and the connection wants the next request.
mod hyper_in_task {
    use super::*;
    use http_body_util::Full;
    use hyper::body::{Body as _, Incoming};
    use hyper::client::conn::http1::{Builder, Connection, SendRequest};
    use hyper_util::rt::TokioIo;
    use std::sync::Mutex;
    use tokio::net::TcpStream;

    type Io = TokioIo<TcpStream>;

    struct Conn {
        send: SendRequest<Full<Bytes>>,
        conn: Connection<Io, Full<Bytes>>,
        /// The connection future has completed (closed or failed): never poll it again.
        ended: bool,
    }

    impl Conn {
        /// Drives the connection; false once it has ended.
        fn drive(&mut self, cx: &mut Context<'_>) -> bool {
            if !self.ended && Pin::new(&mut self.conn).poll(cx).is_ready() {
                self.ended = true;
            }
            !self.ended
        }
    }

    pub struct Client {
        host: String,
        port: u16,
        authority: HeaderValue,
        target: http::Uri,
        idle: Mutex<Vec<Conn>>,
        pub connects: AtomicUsize,
    }

    type Error = Box<dyn std::error::Error + Send + Sync>;

    impl Client {
        pub fn for_url(url: &reqwest::Url) -> Client {
            let host = url.host_str().unwrap().to_owned();
            let port = url.port_or_known_default().unwrap();
            Client {
                authority: HeaderValue::from_str(&format!("{host}:{port}")).unwrap(),
                host,
                port,
                target: url.path().parse().unwrap(),
                idle: Mutex::new(Vec::new()),
                connects: AtomicUsize::new(0),
            }
        }

        pub async fn post(
            self: &Arc<Self>,
            mut headers: HeaderMap,
            body: Bytes,
        ) -> Result<Response, Error> {
            headers.insert(http::header::HOST, self.authority.clone());
            let mut request = http::Request::new(Full::new(body));
            *request.method_mut() = http::Method::POST;
            *request.uri_mut() = self.target.clone();
            *request.headers_mut() = headers;
            let mut conn = match self.checkout() {
                Some(c) => c,
                None => self.connect().await?,
            };
            let mut answer = std::pin::pin!(conn.send.send_request(request));
            let response = poll_fn(|cx| {
                conn.drive(cx);
                answer.as_mut().poll(cx)
            })
            .await?;
            let (parts, body) = response.into_parts();
            Ok(Response {
                status: parts.status,
                headers: parts.headers,
                body,
                conn: Some(conn),
                client: self.clone(),
            })
        }

        async fn connect(&self) -> Result<Conn, Error> {
            let io = TcpStream::connect((self.host.as_str(), self.port)).await?;
            io.set_nodelay(true)?;
            let (send, conn) = Builder::new().handshake(TokioIo::new(io)).await?;
            self.connects.fetch_add(1, Ordering::Relaxed);
            Ok(Conn {
                send,
                conn,
                ended: false,
            })
        }

        fn checkout(&self) -> Option<Conn> {
            let mut idle = self.idle.lock().unwrap();
            let mut cx = Context::from_waker(std::task::Waker::noop());
            while let Some(mut conn) = idle.pop() {
                // A connection the server closed while it was idle ends when polled.
                if conn.drive(&mut cx) && conn.send.is_ready() {
                    return Some(conn);
                }
            }
            None
        }

        fn checkin(&self, conn: Conn) {
            self.idle.lock().unwrap().push(conn);
        }
    }

    pub struct Response {
        status: http::StatusCode,
        #[allow(dead_code)]
        headers: HeaderMap,
        body: Incoming,
        conn: Option<Conn>,
        client: Arc<Client>,
    }

    impl Response {
        pub fn status(&self) -> http::StatusCode {
            self.status
        }

        pub async fn chunk(&mut self) -> Result<Option<Bytes>, Error> {
            poll_fn(|cx| self.poll_chunk(cx)).await
        }

        fn poll_chunk(&mut self, cx: &mut Context<'_>) -> Poll<Result<Option<Bytes>, Error>> {
            loop {
                if let Some(conn) = self.conn.as_mut() {
                    conn.drive(cx);
                }
                match Pin::new(&mut self.body).poll_frame(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Some(Ok(frame))) => {
                        if let Ok(data) = frame.into_data() {
                            return Poll::Ready(Ok(Some(data)));
                        }
                    }
                    Poll::Ready(Some(Err(e))) => {
                        self.conn = None;
                        return Poll::Ready(Err(e.into()));
                    }
                    Poll::Ready(None) => {
                        // One more turn of the connection, so that it takes the end of the
                        // answer and asks for the next request.
                        if let Some(mut conn) = self.conn.take()
                            && conn.drive(cx)
                            && conn.send.is_ready()
                        {
                            self.client.checkin(conn);
                        }
                        return Poll::Ready(Ok(None));
                    }
                }
            }
        }
    }
}

fn thread_cpu() -> Duration {
    cpu_time::ThreadTime::now().as_duration()
}

struct Run {
    calls_per_s: f64,
    cpu_us_per_call: f64,
}

/// `callers` tasks calling in a loop on the current (one-thread) runtime for `duration`.
async fn run(lane: &Arc<Lane>, callers: usize, duration: Duration) -> Run {
    let fixed = Arc::new(call_headers());
    let body = call_body();
    let calls = Arc::new(AtomicUsize::new(0));
    let cpu0 = thread_cpu();
    let t0 = Instant::now();
    let deadline = t0 + duration;
    let tasks: Vec<_> = (0..callers)
        .map(|_| {
            let (lane, fixed, body, calls) =
                (lane.clone(), fixed.clone(), body.clone(), calls.clone());
            tokio::task::spawn_local(async move {
                while Instant::now() < deadline {
                    lane.call(&fixed, &body).await;
                    calls.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let elapsed = t0.elapsed();
    let cpu = thread_cpu() - cpu0;
    let n = calls.load(Ordering::Relaxed) as f64;
    Run {
        calls_per_s: n / elapsed.as_secs_f64(),
        cpu_us_per_call: cpu.as_secs_f64() * 1e6 / n,
    }
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    let n = xs.len();
    if n % 2 == 1 {
        xs[n / 2]
    } else {
        (xs[n / 2 - 1] + xs[n / 2]) / 2.0
    }
}

struct Args {
    duration: Duration,
    rounds: usize,
    calls: u64,
}

fn parse_args(args: &[String]) -> Args {
    let mut out = Args {
        duration: Duration::from_secs(2),
        rounds: 3,
        calls: 200,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = |name: &str| -> f64 {
            let v = it.next().unwrap_or_else(|| panic!("{name} needs a value"));
            v.parse()
                .unwrap_or_else(|_| panic!("{name}: not a number: {v}"))
        };
        match a.as_str() {
            "--duration" => out.duration = Duration::from_secs_f64(value("--duration")),
            "--rounds" => out.rounds = value("--rounds") as usize,
            "--calls" => out.calls = value("--calls") as u64,
            // cargo bench passes --bench; other harness flags are not ours.
            _ => {}
        }
    }
    assert!(
        out.rounds >= 1 && out.calls >= 1,
        "--rounds and --calls must be at least 1"
    );
    out
}

/// The client process under callgrind: `calls` sequential calls, one connection.
fn callgrind_client(kind: &str, url: &str, calls: u64) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let lane = Lane::new(kind, url);
        let fixed = call_headers();
        let body = call_body();
        let mut read = 0;
        for _ in 0..calls {
            read += lane.call(&fixed, &body).await;
        }
        if let Some(n) = lane.connections() {
            assert_eq!(n, 1, "one connection for sequential calls");
        }
        println!("calls {calls} bytes {read}");
    });
}

/// Instructions the client process executed for `calls` calls, or why they were not counted.
fn instructions(kind: &str, url: &str, calls: u64) -> Result<u64, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let out_file =
        std::env::temp_dir().join(format!("h1bench-callgrind-{}.out", std::process::id()));
    let output = std::process::Command::new("valgrind")
        .arg("--tool=callgrind")
        .arg(format!("--callgrind-out-file={}", out_file.display()))
        .arg(exe)
        .args(["--callgrind-client", kind, url, &calls.to_string()])
        .output()
        .map_err(|e| format!("valgrind: {e}"))?;
    let _ = std::fs::remove_file(&out_file);
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        return Err(format!("the client under callgrind failed: {stderr}"));
    }
    stderr
        .lines()
        .find_map(|l| l.split("Collected :").nth(1))
        .and_then(|n| n.trim().parse().ok())
        .ok_or_else(|| format!("no 'Collected' line from callgrind: {stderr}"))
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--callgrind-client") {
        callgrind_client(&args[1], &args[2], args[3].parse().unwrap());
        return;
    }
    let args = parse_args(&args);

    // The upstream on a thread (and one-thread runtime) of its own; the clients on this one.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            tx.send(upstream().await).unwrap();
            std::future::pending::<()>().await
        })
    });
    let base = rx.recv().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let local = tokio::task::LocalSet::new();

    println!(
        "== HTTP/1.1 client of the direct path: h1.rs vs hyper::client::conn::http1 in the caller's task \
         ({} rounds of {:.1} s, medians; client CPU is its one thread's)",
        args.rounds,
        args.duration.as_secs_f64()
    );
    for answer in ["json", "sse"] {
        let url = format!("{base}/{answer}");
        for callers in [CALLERS, 1] {
            let mut figures: Vec<(&str, Vec<Run>)> = vec![("h1", vec![]), ("hyper", vec![])];
            let lanes: Vec<Arc<Lane>> = ["h1", "hyper"]
                .iter()
                .map(|k| Arc::new(Lane::new(k, &url)))
                .collect();
            local.block_on(&rt, async {
                // Warm-up: connections made, buffers grown.
                for lane in &lanes {
                    run(lane, callers, Duration::from_millis(300)).await;
                }
                for _ in 0..args.rounds {
                    for (lane, (_, runs)) in lanes.iter().zip(figures.iter_mut()) {
                        runs.push(run(lane, callers, args.duration).await);
                    }
                }
            });
            let medians: Vec<(f64, f64)> = figures
                .iter()
                .map(|(_, runs)| {
                    (
                        median(runs.iter().map(|r| r.calls_per_s).collect()),
                        median(runs.iter().map(|r| r.cpu_us_per_call).collect()),
                    )
                })
                .collect();
            let (h1, hy) = (medians[0], medians[1]);
            println!(
                "  {answer:<4} {callers:>2} caller(s)   h1 {:>8.0} calls/s {:>6.1} us CPU/call   \
                 hyper {:>8.0} calls/s {:>6.1} us CPU/call   hyper/h1 calls/s {:.3}x, CPU {:.3}x{}",
                h1.0,
                h1.1,
                hy.0,
                hy.1,
                hy.0 / h1.0,
                hy.1 / h1.1,
                match lanes[1].connections() {
                    Some(n) => format!("   (hyper connections: {n})"),
                    None => String::new(),
                }
            );
        }
    }

    println!(
        "== instructions per call in the client process (valgrind --tool=callgrind; \
         ({} calls - {} calls) / {}; sequential, one connection)",
        5 * args.calls,
        args.calls,
        4 * args.calls
    );
    for answer in ["json", "sse"] {
        let url = format!("{base}/{answer}");
        let mut per_call = Vec::new();
        for kind in ["h1", "hyper"] {
            let counted = instructions(kind, &url, args.calls)
                .and_then(|few| instructions(kind, &url, 5 * args.calls).map(|many| (few, many)));
            match counted {
                Ok((few, many)) => {
                    per_call.push(many.saturating_sub(few) as f64 / (4 * args.calls) as f64)
                }
                Err(e) => {
                    println!("  skipped: {e}");
                    return;
                }
            }
        }
        println!(
            "  {answer:<4} h1 {:>8.0} instructions/call   hyper {:>8.0} instructions/call   hyper/h1 {:.3}x",
            per_call[0],
            per_call[1],
            per_call[1] / per_call[0]
        );
    }
}
