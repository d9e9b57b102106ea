"""tools/list at scale: many upstreams through one portal vs one server listing as many tools."""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from harness.procs import Proc

from .mcp import META, Client, modern_headers, rpc_message
from .rss import memory
from .servers import count, start_portal, start_synthetic, write_manifests

def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    if not s:
        return float("nan")
    k = min(len(s) - 1, max(0, round(p / 100 * (len(s) - 1))))
    return s[k]


def list_tools_loop(url: str, n: int, warmup: int) -> dict:
    """`n` full listings (following cursors) on one keep-alive connection."""
    c = Client(url)
    full_ms: list[float] = []
    page_ms: list[float] = []
    pages = tools = total_bytes = 0
    page_bytes: list[int] = []
    counts: list[int] = []
    try:
        for i in range(warmup + n):
            cursor = None
            names: list[str] = []
            sizes: list[int] = []
            this_pages: list[float] = []
            while True:
                params: dict = {"_meta": META}
                if cursor:
                    params["cursor"] = cursor
                body = json.dumps({"jsonrpc": "2.0", "id": 3, "method": "tools/list", "params": params})
                p0 = time.perf_counter()
                status, _, data = c.post(body, modern_headers("tools/list"))
                this_pages.append((time.perf_counter() - p0) * 1000)
                if status != 200:
                    raise RuntimeError(f"tools/list at {url}: HTTP {status}: {data[:300]!r}")
                sizes.append(len(data))
                result = rpc_message(data)["result"]
                names.extend(t["name"] for t in result["tools"])
                cursor = result.get("nextCursor")
                if not cursor:
                    break
            # Time on the wire (request to last byte of every page); the client's JSON parsing
            # between pages is not the portal's time.
            elapsed = sum(this_pages)
            if i >= warmup:
                full_ms.append(elapsed)
                page_ms.extend(this_pages)
                counts.append(len(names))
            pages, tools, total_bytes, page_bytes = len(sizes), len(names), sum(sizes), sizes
    finally:
        c.close()
    return {
        "requests": n,
        "tools": tools,
        "tools_min": min(counts),
        "tools_max": max(counts),
        "pages": pages,
        "bytes": total_bytes,
        "page_bytes": page_bytes,
        "full_p50_ms": round(statistics.median(full_ms), 3),
        "full_p99_ms": round(pct(full_ms, 99), 3),
        "full_mean_ms": round(statistics.fmean(full_ms), 3),
        "page_p50_ms": round(statistics.median(page_ms), 3),
        "page_p99_ms": round(pct(page_ms, 99), 3),
    }


def bench_list(args: argparse.Namespace, work: Path, logs: Path, out: dict) -> None:
    n_servers, per = args.list_servers, args.list_tools
    print(f"== tools/list: {n_servers} upstream servers x {per} tools ({per - 1} generated + echo), "
          f"{args.list_requests} sequential keep-alive listings", flush=True)
    servers: dict[str, str] = {}
    procs: list[Proc] = []
    for i in range(n_servers):
        proc, servers[f"s{i:02d}"] = start_synthetic(f"list-upstream-{i:02d}", per - 1, logs)
        procs.append(proc)
    manifests = write_manifests(work / "list.yaml", servers, "many")
    t0 = time.monotonic()
    portal = start_portal("proxy-list", manifests, "many", logs, env={"PORTCULLIS_LOG": args.proxy_log})
    portal.wait_upstreams(list(servers), timeout=120)
    ready_s = time.monotonic() - t0
    time.sleep(0.5)
    out["memory"]["list_portal_after_startup"] = memory(portal.proc.pid)
    res = list_tools_loop(portal.url, args.list_requests, warmup=10)
    res["servers"] = n_servers
    res["startup_to_ready_s"] = round(ready_s, 2)
    out["memory"]["list_portal_after_load"] = memory(portal.proc.pid)
    res["upstream_down_events"] = count(portal.proc, r"upstream down")
    portal.proc.kill()
    for proc in procs:
        proc.kill()
    # Baseline: one upstream serving the same number of tools directly (serialization cost).
    big_proc, big = start_synthetic("list-direct-1000", n_servers * per - 1, logs)
    base = list_tools_loop(big, args.list_requests, warmup=10)
    out["list"] = {"portal": res, "direct_one_server": base}
    for label, r in ((f"portal ({n_servers} upstreams)", res), ("direct (1 server)", base)):
        print(f"  {label:<24} tools {r['tools']:>5}  pages {r['pages']}  bytes {r['bytes']:>8}  "
              f"full p50 {r['full_p50_ms']:.2f} ms  p99 {r['full_p99_ms']:.2f} ms  "
              f"(per page p50 {r['page_p50_ms']:.2f} ms)", flush=True)
    big_proc.kill()

