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
3. tools/list with 50 upstream servers x 20 tools (19 generated + `echo` = 1,000 tools): p50/p99
   over sequential keep-alive requests (http.client), following the portal's cursors; bytes.

Numbers are printed and written as JSON (default target/bench/portal.json); nothing is asserted.
Every child runs in its own process group and is killed (SIGTERM, then SIGKILL) on the way out,
and dies with this script (PR_SET_PDEATHSIG; for nginx that reaches the master only: its workers
share the master's group and go with it on the way out, but outlive a SIGKILL of this script).

    python3 e2e/bench/run.py [--duration 10] [--rounds 3] [--connections 16] [--threads 2] [--skip-legacy]
                             [--no-nginx | --nginx PATH]
                             [--latency-duration 5] [--latency-rounds 3] [--latency-connections 1]
                             [--no-latency-phase]
"""

from __future__ import annotations

import argparse
import atexit
import ctypes
import http.client
import json
import os
import platform
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[2]
# Release binaries of the workspace; CARGO_TARGET_DIR moves them, as it does for cargo and the
# e2e harness (e2e/harness/paths.py).
RELEASE = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target")).resolve() / "release"
PROXY = RELEASE / "portcullis-proxy"
DEMO = RELEASE / "portcullis-demo"
DEMO_MANIFESTS = ROOT / "examples" / "demo" / "portal.yaml"

MODERN = "2026-07-28"
LEGACY = "2025-11-25"
API = "portcullis.dev/v1alpha1"
MESSAGE = "portcullis-bench"

# --------------------------------------------------------------------------------------------
# Processes
# --------------------------------------------------------------------------------------------

_libc = ctypes.CDLL(None, use_errno=True)
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


_LIVE: list["Proc"] = []


class Proc:
    """A child in its own process group; stdout/stderr drained to log files and memory."""

    def __init__(self, name: str, cmd: list[str], log_dir: Path, env: dict[str, str | None] | None = None):
        self.name = name
        self.lines: list[str] = []
        self._cond = threading.Condition()
        log_dir.mkdir(parents=True, exist_ok=True)
        self.log = log_dir / f"{name}.log"
        full_env = dict(os.environ)
        full_env.update(env or {})
        full_env = {k: v for k, v in full_env.items() if v is not None}  # None: not inherited
        self.popen = subprocess.Popen(
            [str(c) for c in cmd],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=full_env,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        self.pid = self.popen.pid
        _LIVE.append(self)
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self) -> None:
        assert self.popen.stdout is not None
        with open(self.log, "w", encoding="utf-8", errors="replace") as log:
            for raw in iter(self.popen.stdout.readline, b""):
                line = raw.decode("utf-8", "replace").rstrip("\n")
                log.write(line + "\n")
                with self._cond:
                    self.lines.append(line)
                    self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def wait_for(self, pattern: str, timeout: float = 30.0) -> re.Match[str]:
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        seen = 0
        with self._cond:
            while True:
                for line in self.lines[seen:]:
                    m = rx.search(line)
                    if m:
                        return m
                seen = len(self.lines)
                if self.popen.poll() is not None:
                    raise RuntimeError(f"{self.name} exited ({self.popen.returncode}) before /{pattern}/:\n{self.tail()}")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise RuntimeError(f"{self.name} did not print /{pattern}/ within {timeout}s:\n{self.tail()}")
                self._cond.wait(min(left, 0.2))

    def count(self, pattern: str) -> int:
        rx = re.compile(pattern)
        with self._cond:
            return sum(1 for line in self.lines if rx.search(line))

    def tail(self, n: int = 30) -> str:
        with self._cond:
            return "\n".join(self.lines[-n:])

    def kill(self, grace: float = 3.0) -> None:
        if self in _LIVE:
            _LIVE.remove(self)
        if self.popen.poll() is None:
            try:
                os.killpg(self.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.popen.wait(grace)
            except subprocess.TimeoutExpired:
                pass
        # The group may hold children (stdio upstreams) even when the leader is gone.
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            self.popen.wait(2)
        except subprocess.TimeoutExpired:
            pass


def kill_all() -> None:
    for p in list(reversed(_LIVE)):
        p.kill(grace=2.0)


atexit.register(kill_all)


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


# --------------------------------------------------------------------------------------------
# Servers and manifests
# --------------------------------------------------------------------------------------------

SERVING = r"serving (http://\S+/mcp)"
PORTAL_SERVING = r"portcullis-proxy: portal (\S+) serving (http://\S+/mcp)"
PORTAL_ADMIN = r"portcullis-proxy: admin (http://\S+?)/?$"


def start_synthetic(name: str, tools: int, logs: Path) -> tuple[Proc, str]:
    proc = Proc(name, [DEMO, "synthetic", "--tools", str(tools), "--listen", "127.0.0.1:0"], logs)
    return proc, proc.wait_for(SERVING).group(1)


def write_manifests(path: Path, servers: dict[str, str], portal: str) -> Path:
    """JSON documents (YAML is a superset) for `--manifests`: remote servers + a public portal."""
    docs = [
        {
            "apiVersion": API,
            "kind": "McpServer",
            "metadata": {"name": name},
            "spec": {"remote": {"url": url}},
        }
        for name, url in servers.items()
    ]
    docs.append(
        {
            "apiVersion": API,
            "kind": "McpPortal",
            "metadata": {"name": portal},
            "spec": {"public": True, "servers": {"names": list(servers)}},
        }
    )
    path.write_text("\n---\n".join(json.dumps(d) for d in docs) + "\n", encoding="utf-8")
    return path


class Portal:
    def __init__(self, proc: Proc, url: str, admin: str):
        self.proc, self.url, self.admin = proc, url, admin

    def upstreams(self) -> list[dict]:
        with urllib.request.urlopen(f"{self.admin}/admin/upstreams", timeout=5) as r:
            body = json.load(r)
        return body["upstreams"] if isinstance(body, dict) else body

    def wait_ready(self, names: list[str], timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            states = {u.get("name"): u.get("state") for u in self.upstreams()}
            if all(states.get(n) == "ready" for n in names):
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"upstreams not ready after {timeout}s: {states}\n{self.proc.tail()}")
            time.sleep(0.1)


def start_portal(name: str, manifests: Path, portal: str, logs: Path, env: dict[str, str] | None = None,
                 extra: list[str] | None = None) -> Portal:
    cmd = [PROXY, "--manifests", manifests, "--portal", portal, "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0",
           *(extra or [])]
    proc = Proc(name, cmd, logs, env=env)
    url = proc.wait_for(PORTAL_SERVING, timeout=60).group(2)
    admin = proc.wait_for(PORTAL_ADMIN, timeout=60).group(1).rstrip("/")
    return Portal(proc, url, admin)


# nginx as the reference lane: a reverse proxy that only forwards (HTTP/1.1, upstream keepalive).
NGINX_WORKERS = 2
NGINX_KEEPALIVE = 64
NGINX_CONF = """# generated by e2e/bench/run.py; relative paths are under -p {prefix}
daemon off;
worker_processes {workers};
pid nginx.pid;
error_log error.log warn;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  client_body_temp_path client_body_temp;
  proxy_temp_path proxy_temp;
  fastcgi_temp_path fastcgi_temp;
  uwsgi_temp_path uwsgi_temp;
  scgi_temp_path scgi_temp;
  # wrk's connections and the upstream ones stay open for the whole run, as with the portal
  # (the default closes them every 1,000 requests).
  keepalive_requests 1000000;
  upstream synthetic {{
    server {upstream};
    keepalive {keepalive};
    keepalive_requests 1000000;
  }}
  server {{
    listen 127.0.0.1:{port};
    location / {{
      proxy_pass http://synthetic;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      # The synthetic upstream checks Host against loopback names.
      proxy_set_header Host $http_host;
      proxy_buffering off;
    }}
  }}
}}
"""


def find_nginx(args: argparse.Namespace) -> tuple[str | None, str]:
    """The nginx binary, or None and why the lane is skipped."""
    if args.no_nginx:
        return None, "--no-nginx"
    if args.nginx:
        found = shutil.which(args.nginx)
        return (found, "") if found else (None, f"nginx not found at {args.nginx} (--nginx / $BENCH_NGINX)")
    found = shutil.which("nginx") or shutil.which("/usr/sbin/nginx")
    if found:
        return found, ""
    return None, "nginx not found on PATH or at /usr/sbin/nginx (apt-get install -y nginx, or make e2e-setup)"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_nginx(binary: str, upstream: str, work: Path, logs: Path) -> tuple[Proc, str, str]:
    """nginx in front of `upstream` (http://host:port/path); returns the process, the URL with
    the same path, and the version. Waits until a tools/call through it answers."""
    hostport, _, path = upstream.split("://", 1)[1].partition("/")
    prefix = work / "nginx"
    prefix.mkdir(parents=True, exist_ok=True)
    conf, errlog = prefix / "nginx.conf", prefix / "error.log"
    version = subprocess.run([binary, "-v"], capture_output=True, text=True, timeout=10).stderr.strip()
    version = version.split(":", 1)[-1].strip() or "unknown"
    last = ""
    for _ in range(3):  # the free port may be taken between the probe and nginx's bind
        port = free_port()
        conf.write_text(NGINX_CONF.format(prefix=prefix, workers=NGINX_WORKERS, upstream=hostport,
                                          keepalive=NGINX_KEEPALIVE, port=port), encoding="utf-8")
        shutil.copy(conf, logs / "nginx.conf")
        # -e: the error log from the start, before the config is read (not a path under /var).
        # nginx reads $NGINX as listening sockets inherited from an old master: never pass one on.
        proc = Proc("nginx", [binary, "-p", f"{prefix}/", "-c", conf, "-e", errlog], logs, env={"NGINX": None})
        url = f"http://127.0.0.1:{port}/{path}"
        deadline = time.monotonic() + 15
        while proc.popen.poll() is None and time.monotonic() < deadline:
            try:
                check_call(url, "echo")
                return proc, url, version
            except Exception as e:  # not listening yet, or a 502 while the workers start
                last = f"{type(e).__name__}: {e}"
                time.sleep(0.05)
        rc = proc.popen.poll()
        log_tail = errlog.read_text(errors="replace")[-2000:] if errlog.exists() else ""
        proc.kill()
        why = f"exited with status {rc}" if rc is not None else f"no answer within 15 s ({last})"
        last = " | ".join(x for x in (why, *proc.tail().splitlines(), *log_tail.splitlines()) if x.strip())
        if "Address already in use" not in log_tail:
            break
    raise RuntimeError(last)


# --------------------------------------------------------------------------------------------
# MCP over http.client
# --------------------------------------------------------------------------------------------

META = {
    "io.modelcontextprotocol/protocolVersion": MODERN,
    "io.modelcontextprotocol/clientInfo": {"name": "portcullis-bench", "version": "1"},
    "io.modelcontextprotocol/clientCapabilities": {},
}


def modern_headers(method: str, name: str | None = None) -> dict[str, str]:
    h = {
        "content-type": "application/json",
        "accept": "application/json, text/event-stream",
        "mcp-protocol-version": MODERN,
        "mcp-method": method,
    }
    if name is not None:
        h["mcp-name"] = name
    return h


def call_body(tool: str, rid: int = 2, modern: bool = True) -> str:
    params: dict = {"name": tool, "arguments": {"message": MESSAGE}}
    if modern:
        params["_meta"] = META
    return json.dumps({"jsonrpc": "2.0", "id": rid, "method": "tools/call", "params": params}, separators=(",", ":"))


def rpc_message(body: bytes) -> dict:
    """The JSON-RPC message of a JSON or SSE response (the last `data:` event that parses)."""
    text = body.decode("utf-8")
    if text.lstrip().startswith("{"):
        return json.loads(text)
    last = None
    for line in text.splitlines():
        if line.startswith("data:") and line[5:].strip():
            try:
                last = json.loads(line[5:].strip())
            except ValueError:
                pass
    if last is None:
        raise ValueError(f"no JSON-RPC message in response: {text[:300]!r}")
    return last


class Client:
    """One keep-alive HTTP/1.1 connection to an MCP endpoint."""

    def __init__(self, url: str):
        rest = url.split("://", 1)[1]
        hostport, _, path = rest.partition("/")
        host, _, port = hostport.partition(":")
        self.path = "/" + path
        self.conn = http.client.HTTPConnection(host, int(port), timeout=30)

    def post(self, body: str, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        self.conn.request("POST", self.path, body=body.encode(), headers=headers)
        r = self.conn.getresponse()
        data = r.read()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, data

    def close(self) -> None:
        self.conn.close()


def check_call(url: str, tool: str) -> None:
    c = Client(url)
    try:
        status, _, body = c.post(call_body(tool), modern_headers("tools/call", tool))
        msg = rpc_message(body)
        text = msg.get("result", {}).get("content", [{}])[0].get("text")
        if status != 200 or text != MESSAGE:
            raise RuntimeError(f"tools/call {tool} at {url}: HTTP {status}: {body[:300]!r}")
    finally:
        c.close()


def legacy_session(url: str) -> str:
    """initialize + notifications/initialized; returns the Mcp-Session-Id."""
    c = Client(url)
    try:
        init = {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "initialize",
            "params": {"protocolVersion": LEGACY, "capabilities": {}, "clientInfo": {"name": "portcullis-bench", "version": "1"}},
        }
        h = {"content-type": "application/json", "accept": "application/json, text/event-stream"}
        status, headers, body = c.post(json.dumps(init), h)
        sid = headers.get("mcp-session-id")
        if status != 200 or not sid:
            raise RuntimeError(f"initialize at {url}: HTTP {status} {headers} {body[:300]!r}")
        rpc_message(body)
        h2 = dict(h, **{"mcp-session-id": sid, "mcp-protocol-version": LEGACY})
        status, _, body = c.post(json.dumps({"jsonrpc": "2.0", "method": "notifications/initialized"}), h2)
        if status not in (200, 202):
            raise RuntimeError(f"notifications/initialized at {url}: HTTP {status} {body[:300]!r}")
        return sid
    finally:
        c.close()


def check_legacy_call(url: str, sid: str, tool: str) -> None:
    c = Client(url)
    try:
        h = legacy_headers(sid)
        status, _, body = c.post(call_body(tool, modern=False), h)
        text = rpc_message(body).get("result", {}).get("content", [{}])[0].get("text")
        if status != 200 or text != MESSAGE:
            raise RuntimeError(f"legacy tools/call {tool} at {url}: HTTP {status}: {body[:300]!r}")
    finally:
        c.close()


def legacy_headers(sid: str) -> dict[str, str]:
    return {
        "content-type": "application/json",
        "accept": "application/json, text/event-stream",
        "mcp-protocol-version": LEGACY,
        "mcp-session-id": sid,
    }


# --------------------------------------------------------------------------------------------
# wrk
# --------------------------------------------------------------------------------------------

LUA = r"""
-- generated by e2e/bench/run.py
wrk.method = "POST"
wrk.body = %(body)s
%(headers)s
local marker = %(marker)s
%(timing)slocal threads = {}
function setup(thread)
  -- ids of this thread's requests start above those of the threads before it
  thread:set("base", #threads * 1000000000)
  table.insert(threads, thread)
end
function init(args) bad = 0%(init)s end
%(request)s
function response(status, headers, body)
%(response_pre)s  if status ~= 200 or not string.find(body, marker, 1, true) then bad = bad + 1 end
%(response_post)send
function done(summary, latency, requests)
  local b = 0
  for _, t in ipairs(threads) do b = b + t:get("bad") end
  local e = summary.errors
  io.write(string.format(
    "BENCH_JSON {\"requests\":%%d,\"duration_us\":%%d,\"bytes\":%%d,\"bad\":%%d," ..
    "\"errors\":{\"connect\":%%d,\"read\":%%d,\"write\":%%d,\"status\":%%d,\"timeout\":%%d}," ..
    "\"p50_us\":%%d,\"p90_us\":%%d,\"p99_us\":%%d,\"p999_us\":%%d,\"max_us\":%%d,\"mean_us\":%%.1f}\n",
    summary.requests, summary.duration, summary.bytes, b,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency:percentile(99.9),
    latency.max, latency.mean))
%(done)send
"""

# Per-call timing, in every tools/call script (`write_lua(timed=True)`, both phases). wrk 4.1's own
# latency figures are corrected for coordinated omission (stats_correct: each sample longer than
# twice the mean interval between one connection's requests adds samples at that interval below
# it). At one connection the interval is the ~50-200 us of one call, so every scheduler stall of a
# few ms adds dozens of samples, and more for the faster lane; at 16 connections the interval is
# ~1 ms and the made-up samples still lift p50 (direct 0.72 ms corrected vs 0.57 ms per call), p99
# and the mean above connections / throughput, by an amount that depends on the run's stalls. Here
# each call is timed as it is: from just before its request is handed to wrk to its response()
# (CLOCK_MONOTONIC through LuaJIT's ffi), matched by JSON-RPC id, into a histogram of whole
# microseconds. Every wrk thread has its own Lua state (ids, start times, histogram); done() sums
# the threads' histograms (thread:get copies them out) and prints the sum as BENCH_TIMED. Cost at
# 16 connections, against the same script untimed (static body): +2-4 us of wrk CPU per call in
# every lane (one wrk.format, two clock reads, one string.match), throughput within the noise;
# wrk's CPU per call is reported per run (wrk_cpu_us_per_call).
LUA_TIMING = r"""-- per-call timing (no coordinated-omission correction), see run.py LUA_TIMING
local ffi = require("ffi")
ffi.cdef[[
typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
int clock_gettime(int clk, bench_timespec *tp);
]]
local ts = ffi.new("bench_timespec")
local function now_us()
  ffi.C.clock_gettime(1, ts)  -- CLOCK_MONOTONIC
  return tonumber(ts.tv_sec) * 1000000 + tonumber(ts.tv_nsec) / 1000
end
local started = {}
"""
LUA_TIMED_REQUEST = r"""function request()
  counter = counter + 1
  local id = base + counter
  local req = wrk.format(nil, nil, nil, prefix .. string.format("%d", id) .. suffix)
  started[id] = now_us()
  return req
end"""
LUA_TIMED_RESPONSE_PRE = "  local now = now_us()\n"
LUA_TIMED_RESPONSE_POST = r"""  local id = tonumber(string.match(body, '"id":(%d+)'))
  local t0 = id and started[id]
  if t0 then
    started[id] = nil
    local us = math.floor(now - t0)
    hist[us] = (hist[us] or 0) + 1
  else
    unmatched = unmatched + 1
  end
"""
LUA_TIMED_DONE = r"""  local h, u = {}, 0
  for _, t in ipairs(threads) do
    u = u + t:get("unmatched")
    for k, v in pairs(t:get("hist")) do h[k] = (h[k] or 0) + v end
  end
  local parts = {}
  for k, v in pairs(h) do parts[#parts + 1] = string.format('"%d":%d', k, v) end
  io.write('BENCH_TIMED {"unmatched":' .. u .. ',"hist_us":{' .. table.concat(parts, ",") .. '}}\n')
"""


def lua_str(s: str) -> str:
    return json.dumps(s)  # a JSON string literal is a valid Lua string literal for ASCII text


def write_lua(path: Path, body: str, headers: dict[str, str], timed: bool = True) -> Path:
    """A wrk script posting `body`, the one generator of every lane's script in both phases.
    `timed` (default) gives every request its own JSON-RPC id (requests in flight at once in one
    legacy session must not share one either) and times each call (LUA_TIMING); untimed, `body`
    is sent as is. The headers and the check of each answer are the same either way."""
    hl = "\n".join(f"wrk.headers[{lua_str(k)}] = {lua_str(v)}" for k, v in headers.items())
    request = ""
    if timed:
        prefix, sep, suffix = body.partition('"id":2,')
        assert sep, body
        head, tail = lua_str(prefix + '"id":'), lua_str("," + suffix)
        request = f"local prefix, suffix = {head}, {tail}\nlocal counter = 0\n" + LUA_TIMED_REQUEST
    # Both eras answer echo with the message as text; a JSON-RPC error or isError would not.
    path.write_text(LUA % {"body": lua_str(body), "headers": hl, "marker": lua_str(f'"text":"{MESSAGE}"'),
                           "request": request,
                           "timing": LUA_TIMING if timed else "",
                           "init": " hist = {} unmatched = 0" if timed else "",
                           "response_pre": LUA_TIMED_RESPONSE_PRE if timed else "",
                           "response_post": LUA_TIMED_RESPONSE_POST if timed else "",
                           "done": LUA_TIMED_DONE if timed else ""})
    return path


def cpu_seconds(pid: int) -> float:
    """utime + stime of a whole process (all threads), seconds."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat[stat.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children_of(ppid: int) -> list[int]:
    """Pids of the processes whose parent is `ppid` (from /proc)."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        if int(stat[stat.rindex(")") + 2:].split()[1]) == ppid:
            out.append(int(entry))
    return sorted(out)


def children_cpu(ppid: int) -> Callable[[], float]:
    """utime + stime summed over the children of `ppid` (nginx's workers), read at each call."""
    return lambda: sum(cpu_seconds(pid) for pid in children_of(ppid))


# What `watch` measures: a pid (the whole process) or a function returning CPU seconds.
Watched = int | Callable[[], float]


def sample_cpu(target: Watched) -> float:
    return target() if callable(target) else cpu_seconds(target)


def wrk(url: str, script: Path, args: argparse.Namespace, duration: float, log: Path,
        watch: dict[str, Watched] | None = None, conns: tuple[int, int] | None = None) -> dict:
    """One wrk run; `watch` names processes whose CPU time per call is reported; `conns` is
    (threads, connections), --threads and --connections by default."""
    threads, connections = conns or (args.threads, args.connections)
    cmd = [
        args.wrk, "-t", str(threads), "-c", str(connections), "-d", f"{duration:g}s",
        "--timeout", "5s", "--latency", "-s", str(script), url,
    ]
    before = {k: sample_cpu(t) for k, t in (watch or {}).items()}
    # wrk's own CPU: it is the only child of this script that is reaped during the run.
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, preexec_fn=_die_with_parent)
    try:
        stdout, stderr = proc.communicate(timeout=duration + 60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    after = {k: sample_cpu(t) for k, t in (watch or {}).items()}
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    with open(log, "a", encoding="utf-8") as f:
        f.write(f"$ {' '.join(cmd)}\n{stdout}{stderr}\n")
    m = re.search(r"^BENCH_JSON (\{.*\})$", stdout, re.M)
    if proc.returncode != 0 or not m:
        raise RuntimeError(f"wrk failed ({proc.returncode}):\n{stdout}\n{stderr}")
    res = json.loads(m.group(1))
    res["rps"] = round(res["requests"] / (res["duration_us"] / 1e6), 1)
    t = re.search(r"^BENCH_TIMED (\{.*\})$", stdout, re.M)
    if t:
        # A timed script: its own per-call percentiles replace wrk's corrected ones, which are
        # kept under wrk_corrected.
        timed = json.loads(t.group(1))
        res["wrk_corrected"] = {k: res[k] for k in ("p50_us", "p90_us", "p99_us", "p999_us", "max_us", "mean_us")}
        res.update(hist_stats({int(k): v for k, v in timed["hist_us"].items()}))
        res["timed_unmatched"] = timed["unmatched"]
        # Little's law: each connection has one call in flight from request() to response(), so
        # mean latency = connections / throughput less wrk's own time between a response and the
        # connection's next request (small at saturation). Far from 1: the histogram misses or
        # makes up calls. wrk's corrected mean is given for comparison.
        if res["rps"]:
            n = connections // threads * threads  # wrk gives each thread connections // threads
            expected = n / res["rps"] * 1e6
            res["little_check"] = {
                "connections": n, "connections_over_rps_us": round(expected, 1), "mean_us": res["mean_us"],
                "ratio": round(res["mean_us"] / expected, 3),
                "wrk_corrected_ratio": round(res["wrk_corrected"]["mean_us"] / expected, 3),
            }
    # Failed calls (HTTP errors, JSON-RPC errors, isError) are cheap and must not count.
    failed = res["bad"] + sum(res["errors"].values())
    res["ok_rps"] = round(max(0, res["requests"] - failed) / (res["duration_us"] / 1e6), 1)
    if res["requests"]:
        wrk_cpu = ru1.ru_utime + ru1.ru_stime - ru0.ru_utime - ru0.ru_stime
        res["wrk_cpu_us_per_call"] = round(wrk_cpu / res["requests"] * 1e6, 1)
    if watch and res["requests"]:
        res["cpu_us_per_call"] = {k: round((after[k] - before[k]) / res["requests"] * 1e6, 1) for k in watch}
        res["cpu_percent"] = {k: round((after[k] - before[k]) / (res["duration_us"] / 1e6) * 100, 1) for k in watch}
    return res


def hist_stats(hist: dict[int, int]) -> dict:
    """Percentiles (nearest rank) and mean of a histogram {microseconds: calls}."""
    total = sum(hist.values())
    out: dict = {"timed_calls": total}
    if not total:
        return out | {k: 0 for k in ("p50_us", "p90_us", "p99_us", "p999_us", "max_us", "mean_us")}
    keys = sorted(hist)
    for name, p in (("p50_us", 50), ("p90_us", 90), ("p99_us", 99), ("p999_us", 99.9)):
        rank, seen = max(1, -(-total * p // 100)), 0
        for k in keys:
            seen += hist[k]
            if seen >= rank:
                out[name] = k
                break
    out["max_us"] = keys[-1]
    out["mean_us"] = round(sum(k * v for k, v in hist.items()) / total, 1)
    return out


def load(label: str, url: str, script: Path, args: argparse.Namespace, log: Path,
         watch: dict[str, Watched] | None = None, conns: tuple[int, int] | None = None,
         duration: float | None = None) -> dict:
    """Warm-up, then one measured run. `conns` (threads, connections) and `duration` default to
    the saturated phase's; the unsaturated phase passes its own."""
    if args.warmup > 0:
        wrk(url, script, args, args.warmup, log, conns=conns)
    res = wrk(url, script, args, args.duration if duration is None else duration, log, watch, conns)
    cpu = "   ".join(f"{k} {v:.0f}" for k, v in res.get("cpu_us_per_call", {}).items())
    if "wrk_cpu_us_per_call" in res:
        cpu += f"   wrk {res['wrk_cpu_us_per_call']:.0f}"
    lc = res.get("little_check")
    mean = (f"mean {res['mean_us'] / 1000:.3f} ms = {lc['ratio']:.2f} x {lc['connections']}/throughput   "
            if lc else "")
    if "timed_calls" in res and res["timed_calls"] != res["requests"]:
        mean += f"(timed {res['timed_calls']} of {res['requests']} calls)   "
    if res.get("timed_unmatched"):
        mean += f"({res['timed_unmatched']} answers without a timed request: not in the percentiles)   "
    print(f"  {label:<20} {res['ok_rps']:>8.0f} ok calls/s   p50 {res['p50_us'] / 1000:.3f}   "
          f"p90 {res['p90_us'] / 1000:.3f}   p99 {res['p99_us'] / 1000:.3f} ms   {mean}"
          f"bad {res['bad'] + sum(res['errors'].values())}   cpu us/call: {cpu}", flush=True)
    return res


def median_of(runs: list[dict]) -> dict:
    """The median of each figure over rounds (CPU per process, wrk's corrected percentiles and
    the Little's-law check too); failures and calls are summed."""
    def med(xs: list) -> float | int:
        m = statistics.median(xs)
        return int(m) if m == int(m) else round(m, 3)

    res = {k: med([r[k] for r in runs])
           for k in ("ok_rps", "rps", "p50_us", "p90_us", "p99_us", "mean_us", "wrk_cpu_us_per_call")
           if all(k in r for r in runs)}
    for k in ("requests", "bad", "timed_calls", "timed_unmatched"):
        if all(k in r for r in runs):
            res[k] = sum(r[k] for r in runs)
    res["errors"] = {k: sum(r["errors"][k] for r in runs) for k in runs[0]["errors"]}
    for key in ("cpu_us_per_call", "wrk_corrected", "little_check"):
        if all(key in r for r in runs):
            res[key] = {k: med([r[key][k] for r in runs]) for k in runs[0][key]}
    return res


# Each round's figures per lane, kept in the JSON next to the medians taken over them.
ROUND_KEYS = ("ok_rps", "requests", "bad", "p50_us", "p90_us", "p99_us", "p999_us", "max_us", "mean_us",
              "cpu_us_per_call", "wrk_cpu_us_per_call", "timed_calls", "timed_unmatched", "wrk_corrected",
              "little_check")


def per_round(runs: dict[str, list[dict]]) -> dict[str, list[dict]]:
    return {k: [{f: r[f] for f in ROUND_KEYS if f in r} | {"failed": r["bad"] + sum(r["errors"].values())}
                for r in v] for k, v in runs.items() if v}


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


# --------------------------------------------------------------------------------------------
# tools/list
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# The benchmark
# --------------------------------------------------------------------------------------------


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
    portal.wait_ready(["syn"])
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
    out["calls"]["upstream_down_events"] = portal.proc.count(r"upstream down")
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


def bench_demo_memory(args: argparse.Namespace, work: Path, logs: Path, out: dict) -> None:
    print("== proxy memory with the demo config (examples/demo/portal.yaml, stdio upstreams)", flush=True)
    portal = start_portal("proxy-demo", DEMO_MANIFESTS, "demo", logs, env={"PORTCULLIS_LOG": args.proxy_log})
    portal.wait_ready(["tickets", "docs"])
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
    out["calls"]["demo_upstream_down_events"] = portal.proc.count(r"upstream down")
    portal.proc.kill()


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
    portal.wait_ready(list(servers), timeout=120)
    ready_s = time.monotonic() - t0
    time.sleep(0.5)
    out["memory"]["list_portal_after_startup"] = memory(portal.proc.pid)
    res = list_tools_loop(portal.url, args.list_requests, warmup=10)
    res["servers"] = n_servers
    res["startup_to_ready_s"] = round(ready_s, 2)
    out["memory"]["list_portal_after_load"] = memory(portal.proc.pid)
    res["upstream_down_events"] = portal.proc.count(r"upstream down")
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


def conn_label(n: int, short: bool = False) -> str:
    return f"{n} conn" if short else f"{n} connection{'' if n == 1 else 's'}"


def cpu_row(d: dict, p: dict, n: dict | None) -> str | None:
    """CPU per call of each lane's processes, or None when not measured."""
    if "cpu_us_per_call" not in d or "cpu_us_per_call" not in p:
        return None
    dc, pc = d["cpu_us_per_call"], p["cpu_us_per_call"]
    cpu = f"direct: upstream {dc['upstream']:.0f}; portal: proxy {pc['proxy']:.0f} + upstream {pc['upstream']:.0f}"
    if n and "cpu_us_per_call" in n:
        nc = n["cpu_us_per_call"]
        cpu += f"; nginx: workers {nc['workers']:.0f} + upstream {nc['upstream']:.0f}"
    lanes = [x for x in (d, p, n) if x]
    if all("wrk_cpu_us_per_call" in x for x in lanes):
        cpu += f"; wrk ({'/'.join('dpn'[:len(lanes)])}) " + " / ".join(f"{x['wrk_cpu_us_per_call']:.0f}" for x in lanes)
    return cpu


def little_row(lanes: list[dict]) -> str | None:
    """Mean per-call latency of each lane against connections / throughput (Little's law)."""
    if not all("little_check" in x for x in lanes):
        return None
    checks = [x["little_check"] for x in lanes]
    return (" / ".join(f"{x['mean_us'] / 1000:.3f}" for x in checks) + " ms = "
            + " / ".join(f"{x['ratio']:.2f}" for x in checks)
            + f" x {checks[0]['connections']:g}/throughput (wrk's corrected mean: "
            + " / ".join(f"{x['wrk_corrected_ratio']:.2f}" for x in checks) + " x)")


def unsaturated_rows(era: str, u: dict) -> list[tuple[str, str]]:
    """Table rows of the unsaturated phase (`unsaturated` in bench_calls), or why it was skipped."""
    if "skipped" in u:
        return [(f"{era} unsaturated phase", f"skipped: {u['skipped']}")]
    d, p, n = u["direct"], u["portal"], u.get("nginx")
    lanes = [d, p] + ([n] if n else [])
    k = conn_label(u["connections"], short=True)
    names = "d / p" + (" / n" if n else "")

    def added(key: str) -> str:
        text = f"{u[key]:.3f} ms" + (f" (nginx {u['nginx_' + key]:.3f} ms)" if n else "")
        return text

    per_round = ", ".join(f"{x:.3f}" for x in u["added_p50_rounds_ms"])
    rows = [
        (f"{era} added p50, {conn_label(u['connections'])}",
         added("added_p50_ms") + f"; medians of {u['round_count']} rounds of {u['duration_s']:g} s, "
                                 f"portal per round {per_round}"),
        (f"{era} added p99, {conn_label(u['connections'])}", added("added_p99_ms")),
    ]
    rows += latency_rows(f"{era} {{}} {k} {names}", lanes)
    rows += [
        (f"{era} ok calls/s {k} {names}", " / ".join(f"{x['ok_rps']:.0f}" for x in lanes)),
        (f"{era} failed calls {k} ({names.replace(' ', '')})",
         " / ".join(str(x["bad"] + sum(x["errors"].values())) for x in lanes)),
    ]
    cpu = cpu_row(d, p, n)
    if cpu:
        rows.append((f"{era} CPU us/call {k}", cpu))
    return rows


def latency_rows(label: str, lanes: list[dict]) -> list[tuple[str, str]]:
    """p50/p90/p99 of every lane, and their means against Little's law; `label` has a `{}` for
    the figure's name."""
    rows = [
        (label.format(q), " / ".join(f"{x[q + '_us'] / 1000:.3f}" for x in lanes) + " ms")
        for q in ("p50", "p90", "p99")
    ]
    little = little_row(lanes)
    if little:
        rows.append((label.format("mean"), little))
    return rows


def table(out: dict) -> str:
    rows: list[tuple[str, str]] = []
    conns = out["load"]["connections"]
    for era in ("modern", "legacy"):
        c = out["calls"].get(era)
        if not c:
            continue
        d, p = c["direct"], c["portal"]
        # The nginx reference lane (modern only): figures, or why it was skipped.
        n = c.get("nginx") if isinstance(c.get("nginx"), dict) and "ok_rps" in c["nginx"] else None
        lanes = [d, p] + ([n] if n else [])
        names = "direct / portal" + (" / nginx" if n else "")

        def per_round(ratios: list[float]) -> str:
            return f"medians of {len(ratios)} rounds; per round {', '.join(f'{x:.2f}' for x in ratios)}"

        rows += [
            (f"{era} ok calls/s direct", f"{d['ok_rps']:.0f}"),
            (f"{era} ok calls/s portal", f"{p['ok_rps']:.0f}"),
        ]
        if n:
            rows.append((f"{era} ok calls/s nginx", f"{n['ok_rps']:.0f}"))
        rows.append((f"{era} ratio portal/direct", f"{c['throughput_ratio']:.2f}x ({per_round(c['rounds'])})"))
        if n:
            rows += [
                (f"{era} ratio nginx/direct", f"{c['nginx_ratio']:.2f}x ({per_round(c['nginx_rounds'])})"),
                (f"{era} ratio portal/nginx", f"{c['portal_to_nginx_ratio']:.2f}x (medians)"),
            ]
        elif isinstance(c.get("nginx"), dict) and "skipped" in c["nginx"]:
            rows.append((f"{era} nginx lane", f"skipped: {c['nginx']['skipped']}"))
        # At saturation p50 is mostly queueing (about connections / throughput): labelled with
        # the connections, next to the unsaturated phase's added latency.
        k = conn_label(conns, short=True)
        rows += latency_rows(f"{era} {{}} {k} {names}", lanes)
        rows += [
            (f"{era} added p50, {conn_label(conns)}",
             f"{c['added_p50_ms']:.3f} ms" + (f" (nginx {c['nginx_added_p50_ms']:.3f} ms)" if n else "")),
            (f"{era} added p99, {conn_label(conns)}",
             f"{c['added_p99_ms']:.3f} ms" + (f" (nginx {c['nginx_added_p99_ms']:.3f} ms)" if n else "")),
            (f"{era} failed calls ({'/'.join(x[0] for x in names.split(' / '))})",
             " / ".join(str(x["bad"] + sum(x["errors"].values())) for x in lanes)),
        ]
        cpu = cpu_row(d, p, n)
        if cpu:
            rows.append((f"{era} CPU us/call", cpu))
        if isinstance(c.get("unsaturated"), dict):
            rows += unsaturated_rows(era, c["unsaturated"])
    if "upstream_down_events" in out["calls"]:
        rows.append(("upstream marked down (calls)", str(out["calls"]["upstream_down_events"])))
    if "demo_stdio" in out["calls"]:
        r = out["calls"]["demo_stdio"]
        rows.append(("demo stdio calls/s (p50)", f"{r['ok_rps']:.0f} ({r['p50_us'] / 1000:.3f} ms)"))
    m = out["memory"]
    for key, label in (
        ("demo_after_startup", "RSS demo config, idle"),
        ("demo_after_load", "RSS demo config, after load"),
        ("bench_portal_after_startup", "RSS bench portal, idle"),
        ("bench_portal_after_load", "RSS bench portal, after load"),
        ("list_portal_after_startup", "RSS list portal, idle"),
        ("list_portal_after_load", "RSS list portal, after lists"),
    ):
        if key in m:
            rows.append((label, f"{m[key]['VmRSS']:.1f} MiB (peak {m[key]['VmHWM']:.1f})"))
    if "list" in out:
        p, b = out["list"]["portal"], out["list"]["direct_one_server"]
        rows += [
            ("tools/list portal p50 / p99", f"{p['full_p50_ms']:.2f} / {p['full_p99_ms']:.2f} ms "
                                            f"({p['tools']} tools, {p['pages']} pages)"),
            ("tools/list portal bytes", f"{p['bytes']} ({' + '.join(map(str, p['page_bytes']))})"),
            ("tools/list tools seen min/max", f"{p['tools_min']} / {p['tools_max']} "
                                              f"(upstream-down events: {p['upstream_down_events']})"),
            ("tools/list direct p50 / p99", f"{b['full_p50_ms']:.2f} / {b['full_p99_ms']:.2f} ms "
                                            f"({b['tools']} tools, 1 server, {b['bytes']} B)"),
        ]
    w = max(len(r[0]) for r in rows)
    return "\n".join(f"{k:<{w}}  {v}" for k, v in rows)


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
    ap.add_argument("--proxy-log", default="warn", help="PORTCULLIS_LOG for the proxy")
    ap.add_argument("--only", choices=["calls", "memory", "list"], action="append",
                    help="run only these parts (repeatable)")
    ap.add_argument("--out", type=Path, default=ROOT / "target" / "bench" / "portal.json")
    ap.add_argument("--wrk", default=shutil.which("wrk") or "wrk")
    args = ap.parse_args()

    if args.latency_connections < 1 or args.latency_rounds < 1 or args.rounds < 1:
        ap.error("--rounds, --latency-rounds and --latency-connections must be at least 1")

    for b in (PROXY, DEMO):
        if not b.exists():
            print(f"missing {b}: cargo build --release -p portcullis-proxy --bins", file=sys.stderr)
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
    parts = args.only or ["memory", "calls", "list"]
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
    finally:
        kill_all()
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
