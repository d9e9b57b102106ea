//! Code Mode sandbox figures: latency, throughput, memory. Prints numbers, asserts nothing.
//!
//! `cargo bench -p portcullis-proxy --bench codemode`

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::FutureExt;
use futures::future::BoxFuture;
use proxy::codemode::{self, Limits, ToolInfo, ToolInvoker};
use serde_json::{Value, json};

/// Answers at once, or after `hold` for the tool named `hold`.
struct Echo;

impl ToolInvoker for Echo {
    fn call_tool(&self, name: String, _args: Value) -> BoxFuture<'static, Result<Value, String>> {
        async move {
            if name == "hold" {
                tokio::time::sleep(Duration::from_millis(400)).await;
            }
            Ok(json!({ "content": [{ "type": "text", "text": "{\"ok\":true}" }] }))
        }
        .boxed()
    }
}

fn tools() -> Vec<ToolInfo> {
    ["echo", "hold"]
        .iter()
        .map(|n| ToolInfo {
            name: n.to_string(),
            description: None,
            input_schema: json!({ "type": "object" }),
            output_schema: None,
            annotations: None,
        })
        .collect()
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

async fn latency(label: &str, code: &str, runs: usize) {
    let tools = tools();
    let invoker: Arc<dyn ToolInvoker> = Arc::new(Echo);
    let limits = Limits::default();
    for _ in 0..50 {
        codemode::execute(code, &tools, invoker.clone(), &limits).await;
    }
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t = Instant::now();
        let o = codemode::execute(code, &tools, invoker.clone(), &limits).await;
        times.push(t.elapsed());
        assert!(o.error.is_none(), "{:?}", o.error);
    }
    times.sort();
    let mean = times.iter().sum::<Duration>() / runs as u32;
    println!(
        "{label:<34} runs={runs} p50={:?} p99={:?} mean={mean:?} max={:?}",
        pct(&times, 0.5),
        pct(&times, 0.99),
        times[runs - 1]
    );
}

async fn throughput(code: &'static str, concurrency: usize, secs: u64) {
    let done = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(secs);
    let start = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..concurrency {
        let done = done.clone();
        workers.push(tokio::spawn(async move {
            let tools = tools();
            let invoker: Arc<dyn ToolInvoker> = Arc::new(Echo);
            let limits = Limits::default();
            while Instant::now() < deadline {
                let o = codemode::execute(code, &tools, invoker.clone(), &limits).await;
                assert!(o.error.is_none(), "{:?}", o.error);
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for w in workers {
        w.await.unwrap();
    }
    let n = done.load(Ordering::Relaxed);
    println!(
        "  concurrency={concurrency:<3} executions={n:<7} {:.0} executions/s",
        n as f64 / start.elapsed().as_secs_f64()
    );
}

async fn memory() {
    let tools = tools();
    let invoker: Arc<dyn ToolInvoker> = Arc::new(Echo);
    let limits = Limits::default();
    for (label, code) in [
        ("trivial script", "async () => 1 + 1"),
        ("one tool call", "async () => (await codemode.echo({})).ok"),
        (
            "10k objects kept",
            "async () => (globalThis.keep = Array.from({length: 10000}, (_, i) => ({i}))).length",
        ),
    ] {
        let o = codemode::execute(code, &tools, invoker.clone(), &limits).await;
        println!(
            "  QuickJS heap in use at script end, {label:<17} {:>8} bytes ({:.0} KiB)",
            o.memory_bytes,
            o.memory_bytes as f64 / 1024.0
        );
    }
    // RSS with N executions alive at once (each waits 400 ms in a tool call). Freed memory
    // stays with the allocator, so round 1 mostly reuses what round 0 took.
    for round in 0..2 {
        let n = 16;
        let before = rss_kib();
        let mut hs = Vec::new();
        for _ in 0..n {
            let tools = tools.clone();
            let invoker = invoker.clone();
            let limits = limits.clone();
            hs.push(tokio::spawn(async move {
                codemode::execute(
                    "async () => (await codemode.hold({})).ok",
                    &tools,
                    invoker,
                    &limits,
                )
                .await
            }));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        let during = rss_kib();
        for h in hs {
            h.await.unwrap();
        }
        let after = rss_kib();
        println!(
            "  RSS round {round}: before={before} KiB, with {n} live executions={during} KiB \
             (+{} KiB, {:.0} KiB each), after={after} KiB",
            during.saturating_sub(before),
            during.saturating_sub(before) as f64 / n as f64
        );
    }
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        println!(
            "Code Mode sandbox (fresh QuickJS runtime per execution), {} CPUs",
            std::thread::available_parallelism().map_or(0, |n| n.get())
        );
        println!("memory (measured first, on a fresh heap):");
        memory().await;
        println!("latency (sequential):");
        latency("  trivial script", "async () => 1 + 1", 2_000).await;
        latency(
            "  one tool call",
            "async () => (await codemode.echo({})).ok",
            2_000,
        )
        .await;
        latency(
            "  ten sequential tool calls",
            "async () => { let n = 0; for (let i = 0; i < 10; i++) \
             n += (await codemode.echo({})).ok ? 1 : 0; return n; }",
            1_000,
        )
        .await;
        println!("throughput (trivial script, 3 s each):");
        for c in [1, 4, 8, 16] {
            throughput("async () => 1 + 1", c, 3).await;
        }
        println!("throughput (one tool call, 3 s each):");
        for c in [4, 16] {
            throughput("async () => (await codemode.echo({})).ok", c, 3).await;
        }
    });
}
