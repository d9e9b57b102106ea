"""Many concurrent sessions on one replica: memory per idle legacy session, CPU of idle sessions.

One release portal over one `portcullis-demo synthetic` upstream (the calls bench's), driven by
asyncio with every request of a phase in flight at once (one connection each):


1. baseline: 2 x N modern 2026-07-28 clients in parallel (`tools/list` + `tools/call` each),
   no sessions. This also grows the proxy's memory for 2 x N connections, so what the next phase
   adds is the sessions, not the connections. Connections closed; VmRSS measured (rss_baseline).
2. sessions: N legacy 2025-11-25 sessions (initialize + notifications/initialized + tools/call
   each) and N modern clients (as above), all in parallel. Connections closed; VmRSS measured
   (rss_sessions) with the N sessions idle in the proxy's memory (`portcullis_active_sessions`
   on /metrics says how many). Memory per idle session = (rss_sessions - rss_baseline) / N.
3. idle CPU: the proxy's utime + stime (/proc/PID/stat) over --idle-seconds with no session
   (before phase 2) and with the N sessions idle (after it): CPU of idle sessions.
4. reuse: each of the N sessions calls `tools/call` once more (the sessions still work after
   idling; the portal restores any it no longer holds).

Each client has its own connection on raw asyncio streams (httpx's pool scans every connection
for each request: quadratic at thousands in flight). Errors (HTTP status other than 200/202, a
JSON-RPC error, a wrong answer, a failed connection)
are counted per phase; all figures printed and returned for the JSON. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import time
from pathlib import Path

import httpx

from .mcp import LEGACY, MESSAGE, META, call_body, modern_headers, rpc_message
from .rss import memory
from .servers import start_portal, start_synthetic, write_manifests
from .wrk import cpu_seconds

TOOL = "syn_echo"
JSON = {"content-type": "application/json", "accept": "application/json, text/event-stream"}


def raise_nofile(wanted: int) -> int:
    """Raises this process's soft open-files limit towards `wanted` (within the hard limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


class Errors:
    def __init__(self) -> None:
        self.by_kind: dict[str, int] = {}
        self.samples: list[str] = []

    def add(self, kind: str, detail: str) -> None:
        self.by_kind[kind] = self.by_kind.get(kind, 0) + 1
        if len(self.samples) < 5:
            self.samples.append(f"{kind}: {detail[:200]}")

    @property
    def total(self) -> int:
        return sum(self.by_kind.values())


class Response:
    def __init__(self, status: int, headers: dict[str, str], content: bytes):
        self.status_code, self.headers, self.content = status, headers, content

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")


class Conn:
    """One keep-alive HTTP/1.1 connection on asyncio streams. httpx's connection pool scans
    all its connections for every request (quadratic at thousands in flight), so each client
    here has its own connection and nothing else."""

    def __init__(self, url: str):
        hostport, _, path = url.split("://", 1)[1].partition("/")
        host, _, port = hostport.partition(":")
        self.host, self.port, self.path = host, int(port), "/" + path
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, body: str, headers: dict[str, str]) -> Response:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        data = body.encode()
        head = [f"POST {self.path} HTTP/1.1", f"host: {self.host}:{self.port}", f"content-length: {len(data)}"]
        head += [f"{k}: {v}" for k, v in headers.items()]
        self.writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + data)
        await self.writer.drain()
        status_line = await self.reader.readline()
        if not status_line:
            raise ConnectionError("connection closed by the server")
        status = int(status_line.split()[1])
        hdrs: dict[str, str] = {}
        while (line := await self.reader.readline()) not in (b"\r\n", b"\n", b""):
            k, _, v = line.decode("latin-1").partition(":")
            hdrs[k.strip().lower()] = v.strip()
        if "content-length" in hdrs:
            content = await self.reader.readexactly(int(hdrs["content-length"]))
        elif hdrs.get("transfer-encoding", "").lower() == "chunked":
            content = b""
            while True:
                size = int((await self.reader.readline()).split(b";")[0], 16)
                chunk = await self.reader.readexactly(size + 2)
                if size == 0:
                    break
                content += chunk[:-2]
        else:
            content = b""
        if hdrs.get("connection", "").lower() == "close":
            await self.close()
        return Response(status, hdrs, content)

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            try:
                await self.writer.wait_closed()
            except OSError:
                pass
            self.writer = self.reader = None


async def post(c: Conn, body: str, headers: dict[str, str], errors: Errors,
               kind: str, accepted: bool = False) -> Response | None:
    try:
        r = await c.post(body, headers)
    except (OSError, ValueError, IndexError, asyncio.IncompleteReadError) as e:
        errors.add(f"{kind}: {type(e).__name__}", str(e))
        await c.close()
        return None
    if r.status_code == 202 and accepted:
        return r
    if r.status_code != 200:
        errors.add(f"{kind}: HTTP {r.status_code}", r.text)
        return None
    return r


def answer_ok(r: Response | None, errors: Errors, kind: str, check) -> bool:
    if r is None:
        return False
    try:
        msg = rpc_message(r.content)
    except ValueError as e:
        errors.add(f"{kind}: unreadable", str(e))
        return False
    if "error" in msg or not check(msg.get("result", {})):
        errors.add(f"{kind}: bad answer", json.dumps(msg))
        return False
    return True


def echoed(result: dict) -> bool:
    return (result.get("content") or [{}])[0].get("text") == MESSAGE


async def modern_client(url: str, errors: Errors) -> None:
    c = Conn(url)
    try:
        body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {"_meta": META}})
        r = await post(c, body, modern_headers("tools/list"), errors, "modern tools/list")
        answer_ok(r, errors, "modern tools/list", lambda res: any(t["name"] == TOOL for t in res.get("tools", [])))
        r = await post(c, call_body(TOOL), modern_headers("tools/call", TOOL), errors, "modern tools/call")
        answer_ok(r, errors, "modern tools/call", echoed)
    finally:
        await c.close()


def legacy_headers(sid: str) -> dict[str, str]:
    return dict(JSON, **{"mcp-session-id": sid, "mcp-protocol-version": LEGACY})


async def legacy_session(url: str, errors: Errors) -> str | None:
    c = Conn(url)
    try:
        init = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "initialize",
                           "params": {"protocolVersion": LEGACY, "capabilities": {},
                                      "clientInfo": {"name": "portcullis-bench-sessions", "version": "1"}}})
        r = await post(c, init, JSON, errors, "legacy initialize")
        if not answer_ok(r, errors, "legacy initialize", lambda res: "protocolVersion" in res):
            return None
        sid = r.headers.get("mcp-session-id")
        if not sid:
            errors.add("legacy initialize: no session id", str(r.headers))
            return None
        r = await post(c, json.dumps({"jsonrpc": "2.0", "method": "notifications/initialized"}),
                       legacy_headers(sid), errors, "legacy notifications/initialized", accepted=True)
        if r is None:
            return None
        if not await legacy_call(c, sid, errors):
            return None
        return sid
    finally:
        await c.close()


async def legacy_call(c: Conn, sid: str, errors: Errors) -> bool:
    r = await post(c, call_body(TOOL, rid=2, modern=False), legacy_headers(sid), errors, "legacy tools/call")
    return answer_ok(r, errors, "legacy tools/call", echoed)


async def reuse(url: str, sid: str, errors: Errors) -> bool:
    c = Conn(url)
    try:
        return await legacy_call(c, sid, errors)
    finally:
        await c.close()


def metric(admin: str, name: str) -> float | None:
    """One unlabelled sample of the proxy's /metrics."""
    try:
        text = httpx.get(f"{admin}/metrics", timeout=10).text
    except httpx.HTTPError:
        return None
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None


def idle_cpu(pid: int, seconds: float) -> float:
    """CPU time (ms) the process used over `seconds` of doing nothing asked of it."""
    before = cpu_seconds(pid)
    time.sleep(seconds)
    return round((cpu_seconds(pid) - before) * 1000, 1)


async def phase(coros: list, label: str, errors: Errors) -> dict:
    started = time.monotonic()
    results = await asyncio.gather(*coros)
    elapsed = time.monotonic() - started
    print(f"  {label:<44} {elapsed:6.1f} s   errors {errors.total}", flush=True)
    return {"seconds": round(elapsed, 2), "results": results}


def bench_sessions(args: argparse.Namespace, work: Path, logs: Path, out: dict) -> None:
    n = args.sessions
    print(f"== sessions: {n} legacy sessions + {n} modern clients in parallel on one replica "
          f"(one synthetic upstream; {args.idle_seconds:g} s idle CPU windows)", flush=True)
    nofile = raise_nofile(4 * n + 1024)
    _, upstream = start_synthetic("upstream-sessions", 20, logs)
    manifests = write_manifests(work / "sessions.yaml", {"syn": upstream}, "bench")
    # A kept-alive connection may idle for headerReadTimeoutSeconds (default 10) between
    # requests; thousands of Python coroutines on a busy machine can take longer than that
    # between two requests of one client, and a POST on a connection the server just closed
    # fails. This bench measures sessions, not that timeout: it gets 120 s.
    docs = [json.loads(d) for d in manifests.read_text().split("\n---\n")]
    for d in docs:
        if d["kind"] == "McpPortal":
            d["spec"]["limits"] = {"headerReadTimeoutSeconds": 120}
    manifests.write_text("\n---\n".join(json.dumps(d) for d in docs) + "\n", encoding="utf-8")
    portal = start_portal("proxy-sessions", manifests, "bench", logs,
                          env={"PORTCULLIS_LOG": args.proxy_log}, extra=["--no-audit-stdout"])
    portal.wait_upstreams(["syn"])
    pid, url = portal.proc.pid, portal.url
    time.sleep(0.5)
    res: dict = {"sessions": n, "modern_clients": n, "client_open_files_limit": nofile,
                 "idle_seconds": args.idle_seconds, "rss_startup": memory(pid)}

    async def run() -> None:
        base_err, sess_err, reuse_err = Errors(), Errors(), Errors()
        p = await phase([modern_client(url, base_err) for _ in range(2 * n)],
                        f"baseline: {2 * n} modern clients", base_err)
        res["baseline"] = {"seconds": p["seconds"], "errors": base_err.total, "error_kinds": base_err.by_kind,
                           "samples": base_err.samples}
        time.sleep(1.0)
        res["rss_baseline"] = memory(pid)
        res["sessions_in_memory_baseline"] = metric(portal.admin, "portcullis_active_sessions")
        res["idle_cpu_ms_no_sessions"] = idle_cpu(pid, args.idle_seconds)

        coros = [legacy_session(url, sess_err) for _ in range(n)]
        coros += [modern_client(url, sess_err) for _ in range(n)]
        p = await phase(coros, f"{n} legacy sessions + {n} modern clients", sess_err)
        sids = [s for s in p["results"][:n] if s]
        res["open"] = {"seconds": p["seconds"], "sessions_opened": len(sids), "errors": sess_err.total,
                       "error_kinds": sess_err.by_kind, "samples": sess_err.samples}
        time.sleep(1.0)
        res["rss_sessions"] = memory(pid)
        res["sessions_in_memory"] = metric(portal.admin, "portcullis_active_sessions")
        res["idle_cpu_ms_sessions"] = idle_cpu(pid, args.idle_seconds)
        res["rss_sessions_after_idle"] = memory(pid)

        await phase([reuse(url, sid, reuse_err) for sid in sids],
                    f"reuse: tools/call in each of {len(sids)} sessions", reuse_err)
        res["reuse"] = {"errors": reuse_err.total, "error_kinds": reuse_err.by_kind, "samples": reuse_err.samples}
        res["sessions_evicted"] = metric(portal.admin, "portcullis_sessions_evicted_total")
        res["errors"] = base_err.total + sess_err.total + reuse_err.total

    asyncio.run(run())
    grown = res["rss_sessions"]["VmRSS"] - res["rss_baseline"]["VmRSS"]
    res["rss_per_idle_session_kib"] = round(grown * 1024 / n, 1)
    res["idle_cpu_ms_per_s_no_sessions"] = round(res["idle_cpu_ms_no_sessions"] / args.idle_seconds, 2)
    res["idle_cpu_ms_per_s_sessions"] = round(res["idle_cpu_ms_sessions"] / args.idle_seconds, 2)
    print(f"  RSS {res['rss_baseline']['VmRSS']:.1f} MiB -> {res['rss_sessions']['VmRSS']:.1f} MiB with {n} idle "
          f"sessions ({res['sessions_in_memory']:.0f} in memory): {res['rss_per_idle_session_kib']:.1f} KiB per session",
          flush=True)
    print(f"  idle CPU over {args.idle_seconds:g} s: {res['idle_cpu_ms_no_sessions']:.0f} ms without sessions, "
          f"{res['idle_cpu_ms_sessions']:.0f} ms with {n} idle sessions; errors {res['errors']}", flush=True)
    out["sessions"] = res
    portal.proc.kill()
