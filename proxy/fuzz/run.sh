#!/usr/bin/env bash
# Runs the fuzz targets one after another, each for SECONDS, on its committed corpus.
#   proxy/fuzz/run.sh SECONDS [TARGET...]      (default: every target)
# `make fuzz-smoke` (CI: 20 s each) and `make fuzz` (600 s each). New inputs go to
# target/fuzz-corpus/<target> (not into the committed corpus; `cargo fuzz cmin` them into it by
# hand); a crash, a hang (-timeout) or an RSS over 2 GiB fails the run and leaves the input in
# artifacts/<target>/. Built with Rust stable: `--sanitizer none` needs no nightly.
set -euo pipefail
cd "$(dirname "$0")"
CARGO_FUZZ_VERSION=0.13.2
seconds=${1:?usage: run.sh SECONDS [TARGET...]}
shift
if ! cargo fuzz --version 2>/dev/null | grep -qx "cargo-fuzz $CARGO_FUZZ_VERSION"; then
    cargo install cargo-fuzz --version "$CARGO_FUZZ_VERSION" --locked
fi
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    mapfile -t targets < <(cargo fuzz list)
fi
flags=(--sanitizer none)
# FUZZ_DEV=1 (make fuzz-smoke): an unoptimized build, a few minutes cold instead of ~15 (cargo-fuzz
# builds release with one codegen unit); enough to replay the corpus and fuzz for seconds.
if [ "${FUZZ_DEV:-0}" = 1 ]; then
    flags+=(--dev)
fi
cargo fuzz build "${flags[@]}"
mkdir -p target/fuzz-logs
for t in "${targets[@]}"; do
    mkdir -p "target/fuzz-corpus/$t"
    log="target/fuzz-logs/$t.log"
    echo "== fuzz $t: ${seconds}s (log: proxy/fuzz/$log)"
    if ! cargo fuzz run "${flags[@]}" "$t" "target/fuzz-corpus/$t" "corpus/$t" -- \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        >"$log" 2>&1; then
        tail -n 80 "$log" >&2
        echo "fuzz target $t failed; the input is in proxy/fuzz/artifacts/$t/" >&2
        exit 1
    fi
    grep -E '^#[0-9]+ +(INITED|DONE)|^stat::(number_of_executed_units|average_exec_per_sec|peak_rss_mb)' "$log" || true
done
