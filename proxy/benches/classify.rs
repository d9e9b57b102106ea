//! Shadow-MCP classifier benchmark: records per second, end to end (read + parse + classify).
//!
//! `cargo bench -p portcullis-proxy --bench classify` (release profile, one thread).
//!
//! A deterministic generator (splitmix64, fixed seed) writes `SHADOW_BENCH_RECORDS` (default
//! 200,000) access-log records to a temporary file, in the nginx JSON format and in the JSON-lines
//! format: about 5% MCP traffic (legacy Streamable HTTP with `initialize`, session headers and
//! tool calls; 2026-07-28 requests with `Mcp-Method`; legacy SSE `GET /sse` + `POST /message`),
//! the rest ordinary traffic (REST GETs, JSON POSTs with bodies of 100 B to 2 KB, JSON-RPC 2.0 to
//! a non-MCP service, static assets). The file is scanned once to warm the page cache, then
//! three times; it prints the best run's records/s and MB/s, and the hits found (which must equal
//! the MCP records generated: a mismatch aborts the benchmark).

use std::io::Write;
use std::path::Path;
use std::time::Instant;

use proxy::shadow::{Classifier, ClassifierRules, Event, Format, Sanctioned, Scanner};
use serde_json::json;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn pick<'a>(&mut self, xs: &[&'a str]) -> &'a str {
        xs[self.below(xs.len() as u64) as usize]
    }
}

/// One request: (host, method, uri, headers, body, is_mcp).
type Req = (
    String,
    &'static str,
    String,
    Vec<(&'static str, String)>,
    String,
    bool,
);

fn request(rng: &mut Rng) -> Req {
    let words = [
        "alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel",
    ];
    let roll = rng.below(1000);
    let sid = format!("{:032x}", rng.next());
    if roll < 25 {
        // Legacy Streamable HTTP.
        let method = rng.pick(&["tools/call", "tools/list", "resources/read", "prompts/get"]);
        let body = json!({"jsonrpc": "2.0", "id": rng.below(1000), "method": method,
            "params": {"name": rng.pick(&words), "arguments": {"q": rng.pick(&words)}}});
        let headers = vec![
            ("mcp_session_id", sid),
            ("mcp_protocol_version", "2025-11-25".into()),
            ("accept", "application/json, text/event-stream".into()),
        ];
        (
            "tools.internal.example".into(),
            "POST",
            "/mcp".into(),
            headers,
            body.to_string(),
            true,
        )
    } else if roll < 35 {
        let body = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "c", "version": "1"}}});
        (
            "agents.example".into(),
            "POST",
            "/v1/mcp".into(),
            vec![],
            body.to_string(),
            true,
        )
    } else if roll < 45 {
        // 2026-07-28.
        let body = json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {"name": "search",
            "arguments": {"q": rng.pick(&words)},
            "_meta": {"io.modelcontextprotocol/protocolVersion": "2026-07-28"}}});
        let headers = vec![
            ("mcp_method", "tools/call".into()),
            ("mcp_name", "search".into()),
        ];
        (
            "mcp.vendor.example".into(),
            "POST",
            "/mcp".into(),
            headers,
            body.to_string(),
            true,
        )
    } else if roll < 50 {
        let body = json!({"jsonrpc": "2.0", "id": 3, "method": "tools/list"});
        let uri = format!("/message?sessionId={sid}");
        (
            "legacy-sse.example".into(),
            "POST",
            uri,
            vec![],
            body.to_string(),
            true,
        )
    } else if roll < 300 {
        // JSON-RPC 2.0, not MCP.
        let method = rng.pick(&["eth_getBalance", "eth_call", "getUser", "subtract", "ping"]);
        let body = json!({"jsonrpc": "2.0", "id": rng.below(1000), "method": method,
            "params": [format!("0x{:x}", rng.next()), "latest"]});
        (
            "rpc.chain.example".into(),
            "POST",
            "/rpc".into(),
            vec![],
            body.to_string(),
            false,
        )
    } else if roll < 600 {
        let n = 1 + rng.below(30) as usize;
        let items: Vec<_> = (0..n)
            .map(|i| json!({"sku": i, "name": rng.pick(&words), "qty": rng.below(9), "method": "card"}))
            .collect();
        let body = json!({"order": items, "note": rng.pick(&words)}).to_string();
        let host = rng
            .pick(&["api.shop.example", "mcp-metrics.example"])
            .to_owned();
        let path = rng
            .pick(&["/api/orders", "/api/messages", "/message"])
            .to_owned();
        (host, "POST", path, vec![], body, false)
    } else {
        let path = format!(
            "/{}/{}?page={}",
            rng.pick(&[
                "api/products",
                "static/app.js",
                "sse",
                "img/logo.png",
                "health"
            ]),
            rng.below(100_000),
            rng.below(50)
        );
        let accept = rng.pick(&["text/html", "application/json", "text/event-stream", "*/*"]);
        (
            "www.shop.example".into(),
            "GET",
            path,
            vec![("accept", accept.into())],
            String::new(),
            false,
        )
    }
}

fn nginx_line(r: &Req) -> String {
    let mut o = json!({"time_local": "27/Nov/2026:00:00:00 +0000", "remote_addr": "10.1.2.3",
        "request_method": r.1, "request_uri": r.2, "host": r.0, "status": "200",
        "http_user_agent": "Mozilla/5.0 (X11; Linux x86_64) bench", "request_body": r.4});
    for (k, v) in &r.3 {
        o[format!("http_{k}")] = json!(v);
    }
    o.to_string()
}

fn jsonl_line(r: &Req) -> String {
    let headers: serde_json::Map<_, _> =
        r.3.iter()
            .map(|(k, v)| (k.replace('_', "-"), json!(v)))
            .collect();
    json!({"host": r.0, "method": r.1, "path": r.2, "headers": headers, "body": r.4}).to_string()
}

fn scan(path: &Path, format: Format) -> (u64, u64, f64) {
    let mut scanner = Scanner::new(
        Classifier::new(ClassifierRules::default_rules()),
        Sanctioned::new(),
    );
    let mut hits = 0u64;
    let t = Instant::now();
    scanner
        .scan_file(path, format, &mut |e| {
            if let Event::Hit(_) = e {
                hits += 1
            }
        })
        .unwrap();
    let secs = t.elapsed().as_secs_f64();
    let report = scanner.finish();
    assert_eq!(report.bad_records, 0);
    (report.records, hits, secs)
}

fn main() {
    let n: usize = std::env::var("SHADOW_BENCH_RECORDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    let dir = std::env::temp_dir().join(format!("pc-shadow-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    println!("shadow classifier: {n} records, one thread, read + parse + classify");
    for (name, format, line) in [
        ("nginx", Format::Nginx, nginx_line as fn(&Req) -> String),
        ("jsonl", Format::Jsonl, jsonl_line),
    ] {
        let path = dir.join(format!("access.{name}.log"));
        let mut rng = Rng(0x5EED);
        let mut mcp = 0u64;
        {
            let mut w = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
            for _ in 0..n {
                let r = request(&mut rng);
                mcp += u64::from(r.5);
                writeln!(w, "{}", line(&r)).unwrap();
            }
        }
        let bytes = std::fs::metadata(&path).unwrap().len() as f64;
        scan(&path, format); // warm the page cache
        let mut best = f64::MAX;
        let mut found = (0, 0);
        for _ in 0..3 {
            let (records, hits, secs) = scan(&path, format);
            best = best.min(secs);
            found = (records, hits);
        }
        assert_eq!(found, (n as u64, mcp), "records and hits");
        println!(
            "  {name:<5} {:>7.1} MB  {:>10.0} records/s  {:>6.1} MB/s  ({} MCP hits of {} records, exact)",
            bytes / 1e6,
            n as f64 / best,
            bytes / 1e6 / best,
            found.1,
            found.0
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
