#!/usr/bin/env python3
"""Soak: mixed MCP load on one portal for minutes, one upstream restarting now and then.

One portal (release build by default) over two `portcullis-demo synthetic` upstreams on
loopback: `syn`, which stays up, and `flaky`, which is killed (SIGKILL) every --restart-min to
--restart-max seconds and started again on the same port. --connections workers (one HTTP
connection each; asyncio + httpx) send requests back to back (after --pause s each) for
--duration seconds. Half the workers are legacy (2025-11-25 sessions: initialize +
notifications/initialized, a new session every --session-requests requests, DELETE at the end
of one), half are modern (2026-07-28, stateless). Each worker cycles through the kinds of its
era: tools/list, tools/call on syn, tools/call on flaky, and Code Mode execute (the portal URL
with ?codemode=search_and_execute; the script calls codemode.syn_echo).

A request is an error when it fails to connect, gets an HTTP status other than 200 (202 for
notifications, 200/204 for DELETE), a JSON-RPC error or an answer without the expected content.

Restart window: from the moment the flaky upstream is killed until the portal, after the new
process listens, both reports it ready on /admin/upstreams and answers a probe tools/call on
flaky_echo, plus --grace seconds. An error whose request overlaps a window (started before its
end and ended after its start) is "inside"; every other error is "outside", and there should
be none. Errors and calls are counted per kind.

Legacy workers behave like the official SDKs' clients (the Python `mcp` client's
`streamable_http_client`): a failed request (an upstream restarting, a tool error) leaves the
session in use; a 404 for it starts a new one; a session that ends is ended with DELETE
(`terminate_on_close`), also when the worker stops. --abandon-sessions makes them drop their
sessions after any failure without DELETE instead (a client that crashes): those stay in the
portal's memory until `sessionIdleTimeoutSeconds` (--session-idle-timeout).

The proxy's VmRSS and open file descriptors (/proc/PID/fd) are sampled every second, the legacy
sessions in its memory (`portcullis_active_sessions`) every 10 s: printed as start (after
--warmup s of load) / end / max, with the figure at startup.

Flat, the criterion (exit 1 otherwise): the highest RSS of the second half of the load exceeds
the highest of the first half (after --warmup) by at most max(--rss-slack MiB, 10 %), and the
same for open fds with --fd-slack. A leak grows with time, so its second half tops the first
by what leaked meanwhile (the abandoned sessions that rmcp's idle timer never ended grew 5 MiB
per upstream restart: ~30 MiB over the second half of 10 minutes); a healthy run's RSS rises
during warm-up and then moves by a few MiB either way.

    python3 e2e/bench/soak.py [--duration 600] [--connections 64] [--debug] [--json PATH]

Prints a summary and writes JSON (default target/bench/soak.json); exits 1 when an error fell
outside the restart windows, a kind of call never succeeded, or RSS or fds were not flat.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import resource
import signal
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

E2E = Path(__file__).resolve().parents[1]
VENV_PYTHON = E2E / ".venv" / "bin" / "python"

try:  # the e2e harness's dependencies (httpx); they live in the e2e virtualenv
    import httpx
except ImportError:
    if __name__ == "__main__" and VENV_PYTHON.exists() and Path(sys.prefix).resolve() != VENV_PYTHON.parents[1].resolve():
        os.execv(VENV_PYTHON, [str(VENV_PYTHON), __file__, *sys.argv[1:]])
    raise

if str(E2E) not in sys.path:
    sys.path.insert(0, str(E2E))

from harness import paths  # noqa: E402
from harness.ports import free_port  # noqa: E402
from harness.procs import ProcessManager  # noqa: E402
from harness.proxy import Portal, start_proxy  # noqa: E402
from bench.mcp import rpc_message  # noqa: E402

API = "portcullis.dev/v1alpha1"
MODERN = "2026-07-28"
LEGACY = "2025-11-25"
META = {
    "io.modelcontextprotocol/protocolVersion": MODERN,
    "io.modelcontextprotocol/clientInfo": {"name": "portcullis-soak", "version": "1"},
    "io.modelcontextprotocol/clientCapabilities": {},
}
CODE_MODE = "?codemode=search_and_execute"
EXECUTE = "portal_codemode_execute"
KINDS = ("list", "call", "call_flaky", "codemode")
ROOT = E2E.parent


# --- processes -----------------------------------------------------------------------------

def binaries(debug: bool) -> tuple[Path, Path]:
    d = paths.TARGET_DIR.resolve() / ("debug" if debug else "release")
    return d / "portcullis-proxy", d / "portcullis-demo"


def start_upstream(pm: ProcessManager, demo: Path, name: str, port: int):
    proc = pm.start(name, [demo, "synthetic", "--tools", "5", "--listen", f"127.0.0.1:{port}"])
    proc.wait_for(r"serving (http://\S+/mcp)", timeout=30)
    return proc


def write_manifests(path: Path, servers: dict[str, str], limits: dict | None = None) -> Path:
    docs = [{"apiVersion": API, "kind": "McpServer", "metadata": {"name": n}, "spec": {"remote": {"url": u}}}
            for n, u in servers.items()]
    spec: dict = {"public": True, "servers": {"names": list(servers)}}
    if limits:
        spec["limits"] = limits
    docs.append({"apiVersion": API, "kind": "McpPortal", "metadata": {"name": "soak"}, "spec": spec})
    path.write_text("\n---\n".join(json.dumps(d) for d in docs) + "\n", encoding="utf-8")
    return path


def proc_figures(pid: int) -> tuple[float, int]:
    """VmRSS (MiB) and open file descriptors of `pid`."""
    rss = 0.0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1]) / 1024
    return round(rss, 1), len(os.listdir(f"/proc/{pid}/fd"))


# --- the restart windows -------------------------------------------------------------------

@dataclass
class Windows:
    grace: float
    spans: list[list[float]] = field(default_factory=list)  # [kill, healthy + grace]; end inf while open
    lock: threading.Lock = field(default_factory=threading.Lock)

    def open(self, t: float) -> None:
        with self.lock:
            self.spans.append([t, float("inf")])

    def close(self, t: float) -> None:
        with self.lock:
            self.spans[-1][1] = t + self.grace

    def overlaps(self, start: float, end: float) -> bool:
        with self.lock:
            return any(s <= end and start <= e for s, e in self.spans)


def echo_through(url: str, tool: str, timeout: float = 5.0) -> bool:
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/call",
            "params": {"name": tool, "arguments": {"message": "probe"}, "_meta": META}}
    try:
        r = httpx.post(url, json=body, timeout=timeout, headers=modern_headers("tools/call", tool))
        return r.status_code == 200 and "probe" in r.text and '"error"' not in r.text
    except httpx.HTTPError:
        return False


def upstream_state(portal: Portal, name: str) -> str | None:
    try:
        return next((u.get("state") for u in portal.upstreams() if u.get("name") == name), None)
    except (httpx.HTTPError, ValueError):
        return None


def restarter(stop: threading.Event, pm: ProcessManager, demo: Path, port: int, portal: Portal,
              windows: Windows, args: argparse.Namespace, log: list[dict], state: dict) -> None:
    rng = random.Random(args.seed)
    while not stop.wait(rng.uniform(args.restart_min, args.restart_max)):
        proc = state["flaky"]
        t_kill = time.monotonic()
        windows.open(t_kill)
        proc.popen.send_signal(signal.SIGKILL)
        proc.popen.wait(timeout=10)
        time.sleep(args.down_seconds)
        state["flaky"] = start_upstream(pm, demo, "flaky", port)
        t_up = time.monotonic()
        # Healthy again: the portal says ready and a call through it succeeds.
        deadline = t_up + 120
        while time.monotonic() < deadline:
            if upstream_state(portal, "flaky") == "ready" and echo_through(portal.url, "flaky_echo"):
                break
            time.sleep(0.1)
        t_ok = time.monotonic()
        windows.close(t_ok)
        entry = {"killed_at_s": round(t_kill - state["t0"], 1), "listening_after_s": round(t_up - t_kill, 2),
                 "healthy_after_s": round(t_ok - t_kill, 2)}
        log.append(entry)
        print(f"  restart {len(log)}: flaky killed at {entry['killed_at_s']} s, healthy again after "
              f"{entry['healthy_after_s']} s", flush=True)


# --- the load ------------------------------------------------------------------------------

def modern_headers(method: str, name: str | None = None) -> dict[str, str]:
    h = {"content-type": "application/json", "accept": "application/json, text/event-stream",
         "mcp-protocol-version": MODERN, "mcp-method": method}
    if name:
        h["mcp-name"] = name
    return h


def legacy_headers(sid: str | None = None) -> dict[str, str]:
    h = {"content-type": "application/json", "accept": "application/json, text/event-stream"}
    if sid:
        h.update({"mcp-session-id": sid, "mcp-protocol-version": LEGACY})
    return h


class Failure(Exception):
    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


@dataclass
class Tally:
    calls: dict[str, int] = field(default_factory=dict)
    ok: dict[str, int] = field(default_factory=dict)
    inside: dict[str, int] = field(default_factory=dict)
    outside: dict[str, int] = field(default_factory=dict)
    samples: list[str] = field(default_factory=list)

    def count(self, kind: str, ok: bool, inside: bool, why: str = "") -> None:
        self.calls[kind] = self.calls.get(kind, 0) + 1
        if ok:
            self.ok[kind] = self.ok.get(kind, 0) + 1
            return
        bucket = self.inside if inside else self.outside
        bucket[kind] = bucket.get(kind, 0) + 1
        if not inside and len(self.samples) < 20:
            self.samples.append(f"{kind}: {why[:300]}")


class Worker:
    def __init__(self, n: int, legacy: bool, url: str, args: argparse.Namespace, tally: Tally, windows: Windows):
        self.n, self.legacy, self.url, self.args = n, legacy, url, args
        self.tally, self.windows = tally, windows
        self.era = "legacy" if legacy else "modern"
        self.sid: str | None = None
        self.cm_sid: str | None = None
        self.session_requests = 0
        self.seq = 0

    async def post(self, c: httpx.AsyncClient, url: str, body: dict, headers: dict[str, str],
                   want: tuple[int, ...] = (200,)) -> httpx.Response:
        try:
            r = await c.post(url, content=json.dumps(body), headers=headers)
        except httpx.HTTPError as e:
            raise Failure(f"{type(e).__name__}: {e}") from e
        if r.status_code not in want:
            raise Failure(f"HTTP {r.status_code}: {r.text[:300]}", r.status_code)
        return r

    async def rpc(self, c: httpx.AsyncClient, method: str, params: dict, name: str | None = None,
                  codemode: bool = False) -> dict:
        self.seq += 1
        url = self.url + (CODE_MODE if codemode else "")
        if self.legacy:
            sid = await self.session(c, codemode)
            headers = legacy_headers(sid)
        else:
            params = dict(params, _meta=META)
            headers = modern_headers(method, name)
        try:
            r = await self.post(c, url, {"jsonrpc": "2.0", "id": self.seq, "method": method, "params": params},
                                headers)
        except Failure as e:
            if self.legacy and e.status == 404:
                # The portal no longer knows the session: start a new one next time (what an
                # SDK's caller does after "Session terminated").
                setattr(self, "cm_sid" if codemode else "sid", None)
            raise
        msg = rpc_message(r.content)
        if "error" in msg:
            raise Failure(f"JSON-RPC error: {json.dumps(msg['error'])[:300]}")
        return msg.get("result", {})

    async def session(self, c: httpx.AsyncClient, codemode: bool) -> str:
        """The worker's legacy session (one on the plain URL, one on the Code Mode URL); a new
        one every --session-requests requests (the old one ended with DELETE)."""
        self.session_requests += 1
        if self.session_requests > self.args.session_requests:
            self.session_requests = 1
            await self.close_sessions(c)
        attr = "cm_sid" if codemode else "sid"
        if getattr(self, attr):
            return getattr(self, attr)
        url = self.url + (CODE_MODE if codemode else "")
        init = {"jsonrpc": "2.0", "id": 0, "method": "initialize",
                "params": {"protocolVersion": LEGACY, "capabilities": {},
                           "clientInfo": {"name": "portcullis-soak", "version": "1"}}}
        r = await self.post(c, url, init, legacy_headers())
        sid = r.headers.get("mcp-session-id")
        if not sid:
            raise Failure(f"initialize: no session id: {r.text[:200]}")
        await self.post(c, url, {"jsonrpc": "2.0", "method": "notifications/initialized"}, legacy_headers(sid),
                        want=(200, 202))
        setattr(self, attr, sid)
        return sid

    async def close_sessions(self, c: httpx.AsyncClient) -> None:
        """Ends the worker's sessions with DELETE, as the SDKs do when a client closes (the
        Python `mcp` client's `terminate_on_close`, also when it closes on an exception)."""
        for attr, cm in (("sid", False), ("cm_sid", True)):
            old = getattr(self, attr)
            if old:
                setattr(self, attr, None)
                try:
                    r = await c.delete(self.url + (CODE_MODE if cm else ""), headers=legacy_headers(old))
                except httpx.HTTPError as e:
                    raise Failure(f"DELETE: {type(e).__name__}: {e}") from e
                if r.status_code not in (200, 202, 204):
                    raise Failure(f"DELETE: HTTP {r.status_code}: {r.text[:200]}", r.status_code)

    async def one(self, c: httpx.AsyncClient, kind: str) -> None:
        tag = f"soak-{self.n}-{self.seq}"
        if kind == "list":
            res = await self.rpc(c, "tools/list", {})
            names = {t["name"] for t in res.get("tools", [])}
            if "syn_echo" not in names:
                raise Failure(f"tools/list without syn_echo: {sorted(names)[:10]}")
        elif kind in ("call", "call_flaky"):
            tool = "syn_echo" if kind == "call" else "flaky_echo"
            res = await self.rpc(c, "tools/call", {"name": tool, "arguments": {"message": tag}}, name=tool)
            text = (res.get("content") or [{}])[0].get("text")
            if res.get("isError") or text != tag:
                raise Failure(f"tools/call {tool}: {json.dumps(res)[:300]}")
        else:
            code = (f'async () => {{ const r = await codemode.syn_echo({{message: "{tag}"}}); '
                    f'return JSON.stringify(r).includes("{tag}") ? "ok {tag}" : r; }}')
            res = await self.rpc(c, "tools/call", {"name": EXECUTE, "arguments": {"code": code}}, name=EXECUTE,
                                 codemode=True)
            body = res.get("structuredContent") or {}
            if res.get("isError") or body.get("result") != f"ok {tag}":
                raise Failure(f"Code Mode execute: {json.dumps(res)[:300]}")

    async def run(self, until: float) -> None:
        limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
        async with httpx.AsyncClient(limits=limits, timeout=httpx.Timeout(30.0)) as c:
            i = self.n  # workers start at different kinds
            while time.monotonic() < until:
                kind = KINDS[i % len(KINDS)]
                i += 1
                label = f"{self.era} {kind}"
                started = time.monotonic()
                try:
                    await self.one(c, kind)
                    self.tally.count(label, True, False)
                except (Failure, ValueError, KeyError, TypeError, AttributeError, IndexError) as e:
                    ended = time.monotonic()
                    # Like an SDK client, the worker keeps its session after a failed request
                    # (a tool error, an upstream restarting) and starts a new one only when the
                    # portal answers 404 for it (`rpc`). --abandon-sessions: a client that
                    # drops its sessions after any failure without DELETE (they stay in the
                    # portal's memory until sessionIdleTimeoutSeconds).
                    if self.args.abandon_sessions:
                        self.sid = self.cm_sid = None
                    self.tally.count(label, False, self.windows.overlaps(started, ended), str(e))
                if self.args.pause:
                    await asyncio.sleep(self.args.pause)
            if self.legacy:
                try:
                    await self.close_sessions(c)
                except Failure as e:
                    self.tally.count(f"{self.era} delete", False, False, str(e))


# --- the run -------------------------------------------------------------------------------

def soak(args: argparse.Namespace) -> dict:
    proxy_bin, demo_bin = binaries(args.debug)
    for b in (proxy_bin, demo_bin):
        if not b.exists():
            raise SystemExit(f"missing {b}: cargo build {'' if args.debug else '--release '}"
                             "-p portcullis-proxy -p portcullis-demo --bins")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 4096)), hard))
    with tempfile.TemporaryDirectory(prefix="portcullis-soak-") as tmp:
        work = Path(tmp)
        pm = ProcessManager(args.logs or work / "logs")
        try:
            return run_soak(args, pm, work, proxy_bin, demo_bin)
        finally:
            pm.stop_all()


def run_soak(args: argparse.Namespace, pm: ProcessManager, work: Path, proxy_bin: Path, demo_bin: Path) -> dict:
    syn_port, flaky_port = free_port(), free_port()
    start_upstream(pm, demo_bin, "syn", syn_port)
    state: dict = {"flaky": start_upstream(pm, demo_bin, "flaky", flaky_port)}
    limits = {"sessionIdleTimeoutSeconds": args.session_idle_timeout} if args.session_idle_timeout else None
    manifests = write_manifests(work / "soak.yaml", {"syn": f"http://127.0.0.1:{syn_port}/mcp",
                                                      "flaky": f"http://127.0.0.1:{flaky_port}/mcp"}, limits)
    env = {"PORTCULLIS_LOG": "warn", **dict(kv.split("=", 1) for kv in args.proxy_env)}
    portal = start_proxy(pm, manifests, "soak", name="proxy", binary=args.proxy_binary or proxy_bin,
                         env=env, extra=["--no-audit-stdout"])
    portal.wait_upstreams(["syn", "flaky"])
    pid = portal.proc.pid
    rss0, fds0 = proc_figures(pid)
    print(f"== soak: {args.duration:g} s, {args.connections} connections (half legacy sessions, half 2026-07-28), "
          f"kinds {', '.join(KINDS)}; upstream 'flaky' killed every {args.restart_min:g}-{args.restart_max:g} s; "
          f"proxy at startup: RSS {rss0} MiB, {fds0} fds", flush=True)

    tally, windows, restarts = Tally(), Windows(args.grace), []
    samples: list[tuple[float, float, int, float | None]] = []
    stop = threading.Event()
    state["t0"] = t0 = time.monotonic()
    until = t0 + args.duration
    threads = [threading.Thread(target=restarter, daemon=True,
                                args=(stop, pm, demo_bin, flaky_port, portal, windows, args, restarts, state))]

    def sampler() -> None:
        n = 0
        while not stop.wait(1.0):
            try:
                rss, fds = proc_figures(pid)
            except OSError:
                return
            # Legacy sessions in memory every 10 s (each sample kept in the series).
            sessions = sessions_in_memory(portal) if n % 10 == 0 else None
            samples.append((time.monotonic() - t0, rss, fds, sessions))
            if n % 30 == 0:
                print(f"  {samples[-1][0]:6.0f} s: RSS {rss} MiB, {fds} fds, {sessions} legacy sessions in memory",
                      flush=True)
            n += 1

    threads.append(threading.Thread(target=sampler, daemon=True))
    for t in threads:
        t.start()

    async def load() -> None:
        workers = [Worker(i, i % 2 == 0, portal.url, args, tally, windows) for i in range(args.connections)]
        await asyncio.gather(*(w.run(until) for w in workers))

    try:
        asyncio.run(load())
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=150)
    if not portal.proc.alive:
        raise SystemExit(f"the proxy exited during the soak:\n{portal.proc.tail()}")
    elapsed = time.monotonic() - t0
    rss1, fds1 = proc_figures(pid)
    after_warmup = [s for s in samples if s[0] >= args.warmup] or samples
    start = after_warmup[0] if after_warmup else (0.0, rss1, fds1)
    result = {
        "duration_s": round(elapsed, 1),
        "connections": args.connections,
        "calls": dict(sorted(tally.calls.items())),
        "ok": dict(sorted(tally.ok.items())),
        "calls_total": sum(tally.calls.values()),
        "calls_per_s": round(sum(tally.calls.values()) / elapsed, 1),
        "errors_inside_restart_windows": dict(sorted(tally.inside.items())),
        "errors_outside_restart_windows": dict(sorted(tally.outside.items())),
        "error_samples_outside": tally.samples,
        "restarts": restarts,
        "restart_windows_s": [[round(s - t0, 1), round(e - t0, 1)] for s, e in windows.spans],
        "grace_s": args.grace,
        "rss_mib": {"startup": rss0, "start": start[1], "end": rss1,
                    "max": max([s[1] for s in samples] + [rss1])},
        "open_fds": {"startup": fds0, "start": start[2], "end": fds1,
                     "max": max([s[2] for s in samples] + [fds1])},
        "start_sample_at_s": round(start[0], 1),
        # Every 10th sample (about every 10 s): [seconds into the load, RSS MiB, fds, legacy
        # sessions in the proxy's memory].
        "series": [[round(t, 1), r, f, n] for t, r, f, n in samples[::10]],
        "sessions_in_memory_end": sessions_in_memory(portal),
    }
    never = [f"{era} {k}" for era in ("legacy", "modern") for k in KINDS if not tally.ok.get(f"{era} {k}")]
    result["kinds_never_ok"] = never
    result["flat"] = flatness(after_warmup, args)
    return result


def flatness(samples: list, args: argparse.Namespace) -> dict:
    """The flat criterion (module docstring): per figure, the first half's and the second
    half's highest value, the growth, the allowed growth and whether it held."""
    out: dict = {}
    half = len(samples) // 2
    for key, i, slack in (("rss_mib", 1, args.rss_slack), ("open_fds", 2, args.fd_slack)):
        if half < 2:
            out[key] = {"ok": True, "note": "too few samples"}
            continue
        first = max(x[i] for x in samples[:half])
        second = max(x[i] for x in samples[half:])
        allowed = max(slack, first * 0.10)
        out[key] = {"first_half_max": first, "second_half_max": second,
                    "growth": round(second - first, 1), "allowed": round(allowed, 1),
                    "ok": second - first <= allowed}
    return out


def sessions_in_memory(portal: Portal) -> float | None:
    """The proxy's `portcullis_active_sessions` (legacy sessions in its memory)."""
    try:
        text = httpx.get(f"{portal.admin}/metrics", timeout=5).text
    except httpx.HTTPError:
        return None
    for line in text.splitlines():
        if line.startswith("portcullis_active_sessions "):
            return float(line.split()[1])
    return None


def summary(r: dict) -> str:
    lines = [f"soak: {r['duration_s']} s at {r['connections']} connections: {r['calls_total']} requests "
             f"({r['calls_per_s']}/s), {len(r['restarts'])} upstream restarts"]
    w = max(len(k) for k in r["calls"]) if r["calls"] else 10
    lines.append(f"  {'kind':<{w}}  {'calls':>8}  {'ok':>8}  {'err in window':>13}  {'err outside':>11}")
    for k in r["calls"]:
        lines.append(f"  {k:<{w}}  {r['calls'][k]:>8}  {r['ok'].get(k, 0):>8}  "
                     f"{r['errors_inside_restart_windows'].get(k, 0):>13}  "
                     f"{r['errors_outside_restart_windows'].get(k, 0):>11}")
    rs, fd = r["rss_mib"], r["open_fds"]
    lines.append(f"  proxy RSS MiB   start/end/max {rs['start']} / {rs['end']} / {rs['max']} "
                 f"(startup {rs['startup']}; start = {r['start_sample_at_s']} s into the load)")
    lines.append(f"  proxy open fds  start/end/max {fd['start']} / {fd['end']} / {fd['max']} (startup {fd['startup']})")
    for key, label in (("rss_mib", "RSS MiB"), ("open_fds", "open fds")):
        f = r["flat"][key]
        if "growth" in f:
            lines.append(f"  {label} flat: second half's max {f['second_half_max']} vs first half's "
                         f"{f['first_half_max']}: {f['growth']:+} (allowed +{f['allowed']}): "
                         f"{'flat' if f['ok'] else 'NOT FLAT'}")
    peak = max((x[3] for x in r["series"] if x[3] is not None), default=None)
    lines.append(f"  legacy sessions in the proxy's memory: at most {peak} while loaded; "
                 f"{r['sessions_in_memory_end']} at the end (after the workers' DELETEs)")
    if r["restarts"]:
        healthy = [x["healthy_after_s"] for x in r["restarts"]]
        lines.append(f"  restart windows: kill -> healthy {min(healthy)}-{max(healthy)} s, + {r['grace_s']} s grace")
    outside = sum(r["errors_outside_restart_windows"].values())
    lines.append(f"  errors outside restart windows: {outside}"
                 + (f"; first: {r['error_samples_outside'][:3]}" if outside else ""))
    if r["kinds_never_ok"]:
        lines.append(f"  kinds that never succeeded: {r['kinds_never_ok']}")
    return "\n".join(lines)


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=float, default=600.0, help="seconds of load")
    ap.add_argument("--connections", type=int, default=64, help="workers, one connection each")
    ap.add_argument("--pause", type=float, default=0.0, help="seconds each worker waits between requests")
    ap.add_argument("--restart-min", type=float, default=30.0)
    ap.add_argument("--restart-max", type=float, default=60.0)
    ap.add_argument("--down-seconds", type=float, default=1.0, help="seconds the flaky upstream stays down")
    ap.add_argument("--grace", type=float, default=2.0, help="seconds added to each restart window")
    ap.add_argument("--warmup", type=float, default=30.0,
                    help="seconds of load before the 'start' RSS/fd sample and the flat criterion's first half")
    ap.add_argument("--rss-slack", type=float, default=8.0,
                    help="MiB the second half's highest RSS may exceed the first half's (or 10 %%, if more)")
    ap.add_argument("--fd-slack", type=float, default=32.0,
                    help="open fds the second half's highest count may exceed the first half's (or 10 %%)")
    ap.add_argument("--session-requests", type=int, default=50, help="requests per legacy session")
    ap.add_argument("--seed", type=int, default=18)
    ap.add_argument("--abandon-sessions", action="store_true",
                    help="legacy workers drop their sessions after any failure without DELETE (a misbehaving "
                         "client: the sessions stay in memory until the portal's idle timeout)")
    ap.add_argument("--session-idle-timeout", type=int, default=None,
                    help="the portal's spec.limits.sessionIdleTimeoutSeconds (default: the portal's default, 300)")
    ap.add_argument("--debug", action="store_true", help="the debug binaries (target/debug) instead of release")
    ap.add_argument("--proxy-binary", type=Path, default=None,
                    help="run this instead of the built proxy (e.g. a script that runs it under heaptrack)")
    ap.add_argument("--proxy-env", action="append", default=[], metavar="NAME=VALUE",
                    help="an environment variable for the proxy (e.g. MALLOC_ARENA_MAX=2); repeatable")
    ap.add_argument("--logs", type=Path, default=None, help="directory for the processes' logs")
    ap.add_argument("--json", type=Path, default=ROOT / "target" / "bench" / "soak.json")
    return ap


def main() -> int:
    args = parser().parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    result = soak(args)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(summary(result))
    print(f"(json: {args.json})")
    flat = all(f["ok"] for f in result["flat"].values())
    return 1 if result["errors_outside_restart_windows"] or result["kinds_never_ok"] or not flat else 0


if __name__ == "__main__":
    sys.exit(main())
