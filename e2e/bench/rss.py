"""Memory of the proxy process: the demo config idle and after a short load."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from .mcp import META, Client, modern_headers, rpc_message
from .servers import DEMO_MANIFESTS, count, start_portal
from .wrk import lua_str, wrk, write_lua
from .mcp import MESSAGE

def memory(pid: int) -> dict[str, float]:
    """VmRSS and VmHWM (peak) of one process, MiB."""
    out: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = round(int(value.split()[0]) / 1024, 1)
    return out


def threads_of(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    return 0


def bench_demo_memory(args: argparse.Namespace, work: Path, logs: Path, out: dict) -> None:
    print("== proxy memory with the demo config (examples/demo/portal.yaml, stdio upstreams)", flush=True)
    portal = start_portal("proxy-demo", DEMO_MANIFESTS, "demo", logs, env={"PORTCULLIS_LOG": args.proxy_log})
    portal.wait_upstreams(["tickets", "docs"])
    time.sleep(1.0)
    out["memory"]["demo_after_startup"] = memory(portal.proc.pid)
    out["memory"]["demo_threads"] = threads_of(portal.proc.pid)
    # A short load through the stdio upstream, then memory again.
    tool = "tickets_list_tickets"
    body = json.dumps({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
                       "params": {"name": tool, "arguments": {}, "_meta": META}}, separators=(",", ":"))
    c = Client(portal.url)
    try:
        status, _, data = c.post(body, modern_headers("tools/call", tool))
        msg = rpc_message(data)
        if status != 200 or "result" not in msg:
            raise RuntimeError(f"demo {tool}: HTTP {status}: {data[:300]!r}")
    finally:
        c.close()
    # The marker must appear in every good answer: the list has this ticket key.
    script = work / "demo.lua"
    write_lua(script, body, modern_headers("tools/call", tool))
    script.write_text(script.read_text().replace(lua_str(f'"text":"{MESSAGE}"'), lua_str('"result"')))
    res = wrk(portal.url, script, args, args.demo_load, logs / "wrk.log")
    print(f"  {'demo ' + tool:<24} {res['ok_rps']:>10.0f} ok calls/s   p50 {res['p50_us'] / 1000:.3f} ms   "
          f"p99 {res['p99_us'] / 1000:.3f} ms   bad {res['bad']}", flush=True)
    out["calls"]["demo_stdio"] = res
    time.sleep(1.0)
    out["memory"]["demo_after_load"] = memory(portal.proc.pid)
    out["calls"]["demo_upstream_down_events"] = count(portal.proc, r"upstream down")
    portal.proc.kill()

