#!/usr/bin/env python3
"""Portal benchmarks: tools/call through the portal vs direct, proxy memory, tools/list at scale.

Python 3.11 stdlib only. Everything runs on 127.0.0.1 with release binaries:

1. tools/call (`echo`) with `wrk` (same Lua script, same connections/threads/duration) directly
   against one `portcullis-demo synthetic` server and through a portal over that same server;
   modern stateless 2026-07-28 calls, and legacy-session calls (initialize once, reuse the
   Mcp-Session-Id) unless --skip-legacy. Direct and portal runs alternate for --rounds rounds
   (default 3); each side's figures are medians over the rounds, and the ratio is of the
   medians (per-round ratios are printed too). The portal writes its audit events to a file,
   which is checked afterwards (one event per call at least; the hash chain verifies).
   Reference lane (modern era only, unless --no-nginx): real nginx (2 workers, HTTP/1.1 to the
   upstream with `keepalive 64`, no buffering, no access log) in front of the same upstream,
   driven by the direct run's wrk script, third in each round. It does nothing but forward, so
   its ratio to direct is the ceiling a proxy reaches on this machine, where the proxy, the
   upstream and wrk share the same cores; its CPU per call is that of its worker processes.
   Without an nginx binary (PATH, /usr/sbin/nginx, or --nginx / $BENCH_NGINX) the lane is skipped,
   said so on the console, in the table and in the JSON ("nginx": {"skipped": reason}).
   Unsaturated phase (modern era, unless --no-latency-phase): after the saturated rounds, the same
   lanes (direct, portal, nginx when present; nginx runs direct's script) and warm-up at one
   connection on one wrk thread (--latency-connections, default 1) for --latency-duration s
   (default 5), alternating for --latency-rounds rounds (default 3), medians as above. Why: the
   saturated runs keep both cores busy, so their p50 is mostly time in queues (p50 ~ connections /
   throughput) and "added p50" there restates the throughput ratio. With one call in flight nothing
   queues; a lane's p50 is the time of one call, and portal p50 - direct p50 (of the medians) is
   the latency the portal adds to a call (nginx's likewise, for reference). Reported per lane:
   p50/p90/p99, calls/s, failed calls and CPU per call; in the JSON under calls.modern.unsaturated,
   in the table as "added p50, 1 connection" next to the saturated "added p50, N connections".
   Latency, both phases and eras: every lane's wrk script (one generator, write_lua) sends the
   same request with its own JSON-RPC id, checks answers the same way and times each call itself
   (LUA_TIMING), per wrk thread, histograms summed in done(). wrk 4.1's own percentiles are
   corrected for coordinated omission with made-up samples (at one connection dozens per stall; at
   16, on a busy machine, p50 +5-35% and p99 up to 2x, unequally per lane); they are kept as
   wrk_corrected. p50_us etc. and added_p50_ms are per call. Each run's little_check compares the
   mean with connections / throughput (Little's law; 0.95-0.98, the rest is wrk's time between a
   response and the next request); wrk_cpu_us_per_call is wrk's own CPU. Rounds: per_round.
2. VmRSS/VmHWM of the proxy process (not its children): the demo config (stdio upstreams)
   after startup and after a short load; the bench portal after startup and after the load.
4. Sessions (e2e/bench/sessions.py): --sessions (default 1,000) legacy sessions (initialize +
   notifications/initialized + tools/call each) and as many modern clients, all in parallel on
   one portal; errors; VmRSS before/after -> memory per idle session; the proxy's CPU time over
   --idle-seconds (default 10) without sessions and with them all idle; each session reused.
3. tools/list with 50 upstream servers x 20 tools (19 generated + `echo` = 1,000 tools): p50/p99
   over sequential keep-alive requests (http.client), following the portal's cursors; bytes.

Numbers are printed and written as JSON (default target/bench/portal.json); nothing is asserted.
Every child runs in its own process group and is killed (SIGTERM, then SIGKILL) on the way out,
and dies with this script (PR_SET_PDEATHSIG; for nginx that reaches the master only: its workers
share the master's group and go with it on the way out, but outlive a SIGKILL of this script).

    python3 e2e/bench/run.py [--duration 10] [--rounds 3] [--connections 16] [--threads 2] [--skip-legacy]
                             [--no-nginx | --nginx PATH]
                             [--latency-duration 5] [--latency-rounds 3] [--latency-connections 1]
                             [--no-latency-phase] [--sessions 1000] [--idle-seconds 10]
                             [--only calls|memory|list|sessions ...]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

E2E = Path(__file__).resolve().parents[1]
VENV_PYTHON = E2E / ".venv" / "bin" / "python"

try:  # the e2e harness's dependencies (httpx); they live in the e2e virtualenv
    import httpx  # noqa: F401
except ImportError:
    # Compared by prefix: the venv's python is a symlink to the system's.
    if VENV_PYTHON.exists() and Path(sys.prefix).resolve() != VENV_PYTHON.parents[1].resolve():
        os.execv(VENV_PYTHON, [str(VENV_PYTHON), __file__, *sys.argv[1:]])
    sys.exit(f"run.py needs the e2e virtualenv ({VENV_PYTHON}): make e2e-setup")

sys.path.insert(0, str(E2E))

from bench import servers  # noqa: E402
from bench.calls import bench_calls  # noqa: E402
from bench.lists import bench_list  # noqa: E402
from bench.report import table  # noqa: E402
from bench.rss import bench_demo_memory  # noqa: E402
from bench.sessions import bench_sessions  # noqa: E402
from bench.servers import DEMO, PROXY  # noqa: E402

ROOT = E2E.parent


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=float, default=10.0, help="seconds per wrk run")
    ap.add_argument("--warmup", type=float, default=2.0, help="seconds of wrk warm-up before each run")
    ap.add_argument("--rounds", type=int, default=3, help="alternating direct/portal(/nginx) rounds of tools/call")
    ap.add_argument("--connections", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--skip-legacy", action="store_true", help="skip the legacy-session runs")
    ap.add_argument("--latency-duration", type=float, default=5.0,
                    help="seconds per wrk run of the unsaturated tools/call phase")
    ap.add_argument("--latency-rounds", type=int, default=3,
                    help="alternating direct/portal(/nginx) rounds of the unsaturated phase")
    ap.add_argument("--latency-connections", type=int, default=1,
                    help="wrk connections (on one thread) in the unsaturated phase")
    ap.add_argument("--no-latency-phase", action="store_true",
                    help="skip the unsaturated (one connection) phase of the modern tools/call runs")
    ap.add_argument("--no-nginx", action="store_true", help="skip the nginx reference lane of tools/call")
    # Not $NGINX: nginx itself reads that variable (inherited listening sockets).
    ap.add_argument("--nginx", default=os.environ.get("BENCH_NGINX"),
                    help="nginx binary for the reference lane (default $BENCH_NGINX, else nginx on PATH or /usr/sbin/nginx)")
    ap.add_argument("--demo-load", type=float, default=3.0, help="seconds of load on the demo portal")
    ap.add_argument("--list-servers", type=int, default=50)
    ap.add_argument("--list-tools", type=int, default=20, help="tools per server, echo included")
    ap.add_argument("--list-requests", type=int, default=200)
    ap.add_argument("--sessions", type=int, default=1000,
                    help="legacy sessions (and as many modern clients) opened in parallel")
    ap.add_argument("--idle-seconds", type=float, default=10.0,
                    help="seconds over which the proxy's CPU is measured with sessions idle")
    ap.add_argument("--proxy-log", default="warn", help="PORTCULLIS_LOG for the proxy")
    ap.add_argument("--only", choices=["calls", "memory", "list", "sessions"], action="append",
                    help="run only these parts (repeatable)")
    ap.add_argument("--out", type=Path, default=ROOT / "target" / "bench" / "portal.json")
    ap.add_argument("--wrk", default=shutil.which("wrk") or "wrk")
    args = ap.parse_args()

    if args.latency_connections < 1 or args.latency_rounds < 1 or args.rounds < 1:
        ap.error("--rounds, --latency-rounds and --latency-connections must be at least 1")

    for b in (PROXY, DEMO):
        if not b.exists():
            print(f"missing {b}: cargo build --release -p portcullis-proxy -p portcullis-demo --bins", file=sys.stderr)
            return 2
    if not shutil.which(args.wrk):
        print("missing wrk: apt-get install -y wrk (or make e2e-setup)", file=sys.stderr)
        return 2

    args.out.parent.mkdir(parents=True, exist_ok=True)
    logs = args.out.parent / "logs"
    if logs.exists():
        shutil.rmtree(logs)
    out: dict = {
        "machine": {"cpus": os.cpu_count(), "kernel": platform.release(),
                    "loadavg_at_start": [round(x, 2) for x in os.getloadavg()]},
        "load": {"tool": "wrk", "threads": args.threads, "connections": args.connections,
                 "duration_s": args.duration, "warmup_s": args.warmup,
                 "unsaturated": None if args.no_latency_phase else
                 {"threads": 1, "connections": args.latency_connections, "duration_s": args.latency_duration,
                  "rounds": args.latency_rounds}},
        "calls": {},
        "memory": {},
    }
    parts = args.only or ["memory", "calls", "list", "sessions"]
    started = time.monotonic()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        with tempfile.TemporaryDirectory(prefix="portcullis-bench-") as tmp:
            work = Path(tmp)
            if "memory" in parts:
                bench_demo_memory(args, work, logs, out)
            if "calls" in parts:
                bench_calls(args, work, logs, out)
            if "list" in parts:
                bench_list(args, work, logs, out)
            if "sessions" in parts:
                bench_sessions(args, work, logs, out)
    finally:
        servers.stop_all()
    out["elapsed_s"] = round(time.monotonic() - started, 1)
    out["machine"]["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print()
    print(table(out))
    la = out["machine"]
    print(f"\n(json: {args.out}; logs: {logs}; {out['elapsed_s']} s; "
          f"load average at start {la['loadavg_at_start'][0]}, at end {la['loadavg_at_end'][0]} on {la['cpus']} CPUs: "
          "other work on the machine skews every figure)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
