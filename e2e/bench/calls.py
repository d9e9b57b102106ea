"""tools/call: direct vs portal (vs nginx), saturated and at one connection, both eras."""

from __future__ import annotations

import argparse
import shutil
import subprocess
import time
from pathlib import Path

from harness.procs import Proc

from .mcp import call_body, check_call, check_legacy_call, legacy_headers, legacy_session, modern_headers
from .rss import memory, threads_of
from .servers import (NGINX_KEEPALIVE, NGINX_WORKERS, PROXY, count, find_nginx, start_nginx, start_portal,
                      start_synthetic, write_manifests)
from .wrk import Watched, children_cpu, children_of, load, median_of, per_round, write_lua

Lane = tuple[str, Path, dict[str, Watched]]  # url, wrk script, processes whose CPU is measured


def alternate(era: str, direct: Lane, portal: Lane, args: argparse.Namespace, log: Path,
              nginx: Lane | None = None) -> dict:
    """Direct, portal (and nginx) runs, alternating for `args.rounds` rounds: on two shared cores
    one run can land in a better or worse scheduling pattern than the next, so each side's
    figures are medians over rounds and a ratio is that of the medians (per-round ratios kept)."""
    d_runs, p_runs, n_runs = [], [], []
    for r in range(args.rounds):
        d_runs.append(load(f"{era} direct #{r + 1}", direct[0], direct[1], args, log, direct[2]))
        p_runs.append(load(f"{era} portal #{r + 1}", portal[0], portal[1], args, log, portal[2]))
        if nginx:
            n_runs.append(load(f"{era} nginx #{r + 1}", nginx[0], nginx[1], args, log, nginx[2]))
    dm, pm = median_of(d_runs), median_of(p_runs)
    c = compare(dm, pm)
    c["rounds"] = [round(p["ok_rps"] / d["ok_rps"], 3) for d, p in zip(d_runs, p_runs) if d["ok_rps"]]
    if nginx:
        nm = median_of(n_runs)
        c["nginx"] = nm
        c["nginx_ratio"] = round(nm["ok_rps"] / dm["ok_rps"], 3) if dm["ok_rps"] else None
        c["nginx_rounds"] = [round(n["ok_rps"] / d["ok_rps"], 3) for d, n in zip(d_runs, n_runs) if d["ok_rps"]]
        c["nginx_added_p50_ms"] = round((nm["p50_us"] - dm["p50_us"]) / 1000, 3)
        c["nginx_added_p99_ms"] = round((nm["p99_us"] - dm["p99_us"]) / 1000, 3)
        # How close the portal gets to a proxy that only forwards.
        c["portal_to_nginx_ratio"] = round(pm["ok_rps"] / nm["ok_rps"], 3) if nm["ok_rps"] else None
    c["per_round"] = per_round({"direct": d_runs, "portal": p_runs, "nginx": n_runs})
    return c


def compare(direct: dict, portal: dict) -> dict:
    return {
        "direct": direct,
        "portal": portal,
        "throughput_ratio": round(portal["ok_rps"] / direct["ok_rps"], 3) if direct["ok_rps"] else None,
        "added_p50_ms": round((portal["p50_us"] - direct["p50_us"]) / 1000, 3),
        "added_p99_ms": round((portal["p99_us"] - direct["p99_us"]) / 1000, 3),
    }


def unsaturated(era: str, direct: Lane, portal: Lane, args: argparse.Namespace, log: Path,
                nginx: Lane | None = None) -> dict:
    """The same lanes at --latency-connections (default 1) on one wrk thread, alternating for
    --latency-rounds rounds of --latency-duration seconds (after the usual warm-up). Nothing
    queues, so a lane's p50 is the time of one call and portal p50 - direct p50 is what the portal
    adds to it; medians over rounds as in `alternate`, added latencies are differences of medians."""
    conns = (1, args.latency_connections)
    lanes = {"direct": direct, "portal": portal, **({"nginx": nginx} if nginx else {})}
    runs: dict[str, list[dict]] = {k: [] for k in lanes}
    tag = f"{args.latency_connections}c"
    for r in range(args.latency_rounds):
        for name, (url, script, watch) in lanes.items():
            runs[name].append(load(f"{era} {name} {tag} #{r + 1}", url, script, args, log, watch, conns,
                                   args.latency_duration))
    med = {k: median_of(v) for k, v in runs.items()}
    c: dict = {"connections": args.latency_connections, "threads": 1, "duration_s": args.latency_duration,
               "warmup_s": args.warmup, "round_count": args.latency_rounds, **med}

    def added(lane: str) -> dict:
        m, d = med[lane], med["direct"]
        return {
            "added_p50_ms": round((m["p50_us"] - d["p50_us"]) / 1000, 3),
            "added_p90_ms": round((m["p90_us"] - d["p90_us"]) / 1000, 3),
            "added_p99_ms": round((m["p99_us"] - d["p99_us"]) / 1000, 3),
            # Per round (lane's run minus the direct run of the same round), for the spread.
            "added_p50_rounds_ms": [round((x["p50_us"] - y["p50_us"]) / 1000, 3)
                                    for x, y in zip(runs[lane], runs["direct"])],
            "throughput_ratio": round(m["ok_rps"] / d["ok_rps"], 3) if d["ok_rps"] else None,
        }

    c.update(added("portal"))
    if nginx:
        c.update({f"nginx_{k}": v for k, v in added("nginx").items()})
    c["per_round"] = per_round(runs)
    return c


def bench_calls(args: argparse.Namespace, work: Path, logs: Path, out: dict) -> None:
    nginx_bin, nginx_skipped = find_nginx(args)
    print(f"== tools/call: direct vs portal{' vs nginx' if nginx_bin else ''} (one synthetic upstream, wrk "
          f"-t{args.threads} -c{args.connections} -d{args.duration:g}s after {args.warmup:g}s warm-up; "
          "latency timed per call in the script)", flush=True)
    up_proc, upstream = start_synthetic("upstream", 20, logs)
    manifests = write_manifests(work / "calls.yaml", {"syn": upstream}, "bench")
    # Audit events go to a file sink, as in a deployment that keeps its own audit file: on
    # stdout they would be read line by line by this script, on the same two cores.
    audit_file = work / "audit-calls.jsonl"
    audit_file.unlink(missing_ok=True)
    portal = start_portal("proxy-calls", manifests, "bench", logs, env={"PORTCULLIS_LOG": args.proxy_log},
                          extra=["--audit-file", str(audit_file), "--no-audit-stdout"])
    portal.wait_upstreams(["syn"])
    time.sleep(0.5)
    out["memory"]["bench_portal_after_startup"] = memory(portal.proc.pid)
    out["memory"]["bench_portal_threads"] = threads_of(portal.proc.pid)
    out["urls"] = {"direct": upstream, "portal": portal.url}

    check_call(upstream, "echo")
    check_call(portal.url, "syn_echo")
    wlog = logs / "wrk.log"
    # One timed script per lane for both phases (LUA_TIMING); nginx runs direct's.
    modern_direct = write_lua(work / "modern_direct.lua", call_body("echo"), modern_headers("tools/call", "echo"))
    modern_portal = write_lua(work / "modern_portal.lua", call_body("syn_echo"), modern_headers("tools/call", "syn_echo"))
    wd: dict[str, Watched] = {"upstream": up_proc.pid}
    wp: dict[str, Watched] = {"proxy": portal.proc.pid, "upstream": up_proc.pid}

    # The reference lane: nginx forwarding to the same upstream, driven by the direct run's script.
    nginx_lane: Lane | None = None
    nginx_proc: Proc | None = None
    nginx_setup: dict = {}
    if nginx_bin:
        try:
            nginx_proc, nginx_url, version = start_nginx(nginx_bin, upstream, work, logs)
        except RuntimeError as e:
            nginx_skipped = f"nginx ({nginx_bin}) did not start: {e}"
        else:
            workers = children_of(nginx_proc.pid)
            nginx_setup = {"binary": nginx_bin, "version": version, "worker_processes": NGINX_WORKERS,
                           "upstream_keepalive": NGINX_KEEPALIVE, "worker_pids": workers}
            out["urls"]["nginx"] = nginx_url
            wn: dict[str, Watched] = {"workers": children_cpu(nginx_proc.pid), "upstream": up_proc.pid}
            nginx_lane = (nginx_url, modern_direct, wn)
    if nginx_skipped:
        print(f"  nginx lane skipped: {nginx_skipped}", flush=True)

    out["calls"]["modern"] = alternate("modern", (upstream, modern_direct, wd), (portal.url, modern_portal, wp),
                                       args, wlog, nginx_lane)
    # The unsaturated phase: the same lanes and scripts at one connection (--latency-connections).
    if args.no_latency_phase:
        out["calls"]["modern"]["unsaturated"] = {"skipped": "--no-latency-phase"}
    else:
        print(f"== tools/call unsaturated: direct vs portal{' vs nginx' if nginx_lane else ''} (wrk -t1 "
              f"-c{args.latency_connections} -d{args.latency_duration:g}s after {args.warmup:g}s warm-up, "
              f"{args.latency_rounds} rounds)", flush=True)
        out["calls"]["modern"]["unsaturated"] = unsaturated(
            "modern", (upstream, modern_direct, wd), (portal.url, modern_portal, wp), args, wlog, nginx_lane)
    if nginx_proc is not None:
        # A worker that died and was respawned mid-run would take its CPU time with it.
        now = children_of(nginx_proc.pid)
        if now != nginx_setup["worker_pids"]:
            print(f"  warning: nginx workers changed during the runs ({nginx_setup['worker_pids']} -> {now}); "
                  f"see {logs / 'nginx-error.log'}", flush=True)
            nginx_setup["workers_changed"] = now
        out["calls"]["modern"]["nginx_setup"] = nginx_setup
        nginx_proc.kill()
    else:
        out["calls"]["modern"]["nginx"] = {"skipped": nginx_skipped}
    errlog = work / "nginx" / "error.log"
    if errlog.exists():
        shutil.copy(errlog, logs / "nginx-error.log")

    if not args.skip_legacy:
        sid_d = legacy_session(upstream)
        sid_p = legacy_session(portal.url)
        check_legacy_call(upstream, sid_d, "echo")
        check_legacy_call(portal.url, sid_p, "syn_echo")
        legacy_direct = write_lua(work / "legacy_direct.lua", call_body("echo", modern=False), legacy_headers(sid_d))
        legacy_portal = write_lua(work / "legacy_portal.lua", call_body("syn_echo", modern=False),
                                  legacy_headers(sid_p))
        out["calls"]["legacy"] = alternate("legacy", (upstream, legacy_direct, wd), (portal.url, legacy_portal, wp),
                                           args, wlog)

    time.sleep(1.0)
    out["memory"]["bench_portal_after_load"] = memory(portal.proc.pid)
    out["calls"]["upstream_down_events"] = count(portal.proc, r"upstream down")
    portal.proc.kill()
    up_proc.kill()
    measured = [c for c in out["calls"].values() if isinstance(c, dict) and "portal" in c]
    measured += [c["unsaturated"] for c in measured if "portal" in c.get("unsaturated", {})]
    check_audit(audit_file, sum(c["portal"]["requests"] for c in measured), out)


def check_audit(path: Path, at_least: int, out: dict) -> None:
    """Every measured portal call left an audit event, and the file's hash chain verifies."""
    with open(path, "rb") as f:
        events = sum(1 for _ in f)
    verify = subprocess.run([str(PROXY), "audit", "verify", str(path)], capture_output=True, text=True, timeout=120)
    out["calls"]["audit_events"] = events
    print(f"  audit file: {events} events for {at_least} measured portal calls; "
          f"verify: {(verify.stdout or verify.stderr).strip().splitlines()[-1] if (verify.stdout or verify.stderr).strip() else verify.returncode}",
          flush=True)
    if events < at_least or verify.returncode != 0:
        raise RuntimeError(f"audit log incomplete or broken: {events} events < {at_least} calls, verify exit {verify.returncode}")

