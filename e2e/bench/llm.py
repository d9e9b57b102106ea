#!/usr/bin/env python3
"""LLM gateway benchmark: the Portcullis gateway against calling the provider directly, side by
side with LiteLLM's proxy (pinned from PyPI) in front of the same provider, budgets on in both.

Python 3.11 stdlib + the e2e virtualenv. Everything runs on 127.0.0.1; the Portcullis proxy is
the release build (`cargo build --release -p portcullis-proxy`).

The provider is the e2e emulator (e2e/servers/llm_emulator.py, OpenAI Chat Completions): one
Python process (ThreadingHTTPServer). Lanes, same requests, same connections, one run:
- direct:     POST {emulator}/v1/chat/completions with the provider key;
- portcullis: POST {portal}/llm/openai/v1/chat/completions, a bearer JWT per user (RS256, signed
              with the key of the e2e IdP, e2e/idp/provider.mjs, whose JWKS the portal reads),
              users cycled; route `bench` -> the emulator; McpPolicy budget per user (scope
              user, hard, tokens per UTC day, in-memory store); audit events to a file;
- litellm:    POST {litellm}/v1/chat/completions, its master key, `user` cycled; no database
              (see LITELLM below for why and what its budgets are here).

Phases (wrk, one connection per wrk thread so that each thread times its own calls exactly:
request() and response() alternate on a connection, no coordinated-omission correction):
1. `latency`: 1 connection, non-streamed: p50/p99 per lane, added p50 = lane p50 - direct p50.
2. `throughput`: --connections connections, non-streamed: calls/s, p50/p99, CPU microseconds per
   call of the gateway process (LiteLLM: its process tree) and of the emulator. The emulator is
   one Python process: when direct and Portcullis are both near the emulator's own rate, the
   emulator is the bottleneck and calls/s says little about the gateway; "calls per gateway
   CPU-second" (1e6 / gateway CPU us per call) is what isolates the gateway, and the printed
   table says which lanes were provider-bound.
3. `stream`: 1 connection, streamed answers of --stream-words words (one SSE event per word; the
   emulator writes each event separately, 2 ms apart): per-stream p50, and the overhead per
   streamed chunk = (lane p50 - direct p50) / chunks, and the gateway's CPU per chunk.
4. `users`: a fresh Portcullis proxy (in-memory budget store): VmRSS after one call, then after
   --users distinct subjects (each its own token) made one call each under the per-user budget,
   and the growth; /admin/spend checked for the last subject. Each call's token is new to the
   proxy, so the growth includes whatever the proxy keeps per token and per subject.

LITELLM: `litellm[proxy]==LITELLM_VERSION` is installed by this script into its own virtualenv
(target/bench/litellm-venv; --litellm-venv) when it is missing; nothing else installs it. Its
per-user budgets (internal users, customers/`user`, virtual keys) are enforced only with its
database: PostgreSQL through Prisma, whose query-engine binaries Prisma downloads from its own
host at `prisma generate` time, which cannot be reached from here (only the package registries
can). So LiteLLM runs without a database, with the budget it enforces without one:
`router_settings.provider_budget_config` (spend per provider per day, kept in its in-memory
cache; checked before every call, incremented after every call from the price of gpt-4o-mini
in its bundled cost map). The bench checks that this budget refuses once crossed (a second
LiteLLM with a tiny limit) unless --skip-litellm-budget-check. Auth: its master key (virtual
keys need the database too). `user` is sent and ignored for budgets.

Results: target/bench/llm.json and a table; nothing is asserted.

    python3 e2e/bench/llm.py [--duration 10] [--connections 16] [--users 10000] [--skip-litellm]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

E2E = Path(__file__).resolve().parents[1]
VENV_PYTHON = E2E / ".venv" / "bin" / "python"

try:  # the e2e harness's dependencies (httpx, jwt); they live in the e2e virtualenv
    import httpx
    import jwt
except ImportError:
    if VENV_PYTHON.exists() and Path(sys.prefix).resolve() != VENV_PYTHON.parents[1].resolve():
        os.execv(VENV_PYTHON, [str(VENV_PYTHON), __file__, *sys.argv[1:]])
    sys.exit(f"llm.py needs the e2e virtualenv ({VENV_PYTHON}): make e2e-setup")

sys.path.insert(0, str(E2E))

from bench import servers  # noqa: E402
from bench.rss import memory  # noqa: E402
from bench.servers import PROXY  # noqa: E402
from bench.wrk import cpu_seconds, children_of, wrk  # noqa: E402
from harness import manifests, paths  # noqa: E402
from harness.ports import free_port  # noqa: E402
from tests.auth_support import Idp, start_idp  # noqa: E402

ROOT = E2E.parent
LITELLM_VERSION = "1.106.12"
PROVIDER_KEY = "sk-bench-provider"
LITELLM_MASTER = "sk-bench-litellm-master"
AUDIENCE = "portcullis-llm-bench"
PROMPT = "hello from the gateway benchmark"

LUA = r"""
-- generated by e2e/bench/llm.py: one connection per thread, each call timed from request() to
-- response() (they alternate on a connection), users cycled through `heads`
local ffi = require("ffi")
ffi.cdef[[
typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
int clock_gettime(int clk, bench_timespec *tp);
]]
local ts = ffi.new("bench_timespec")
local function now_us()
  ffi.C.clock_gettime(1, ts)
  return tonumber(ts.tv_sec) * 1000000 + tonumber(ts.tv_nsec) / 1000
end
local path = %(path)s
local body = %(body)s
local marker = %(marker)s
local heads = {
%(heads)s
}
local threads = {}
function setup(thread)
  thread:set("idx", #threads)
  table.insert(threads, thread)
end
function init(args)
  bad = 0
  good = 0
  hist = {}
  unmatched = 0
  counter = idx * 7919
  t0 = nil
end
function request()
  counter = counter + 1
  local h = heads[(counter %% #heads) + 1]
  local req = wrk.format("POST", path, h, body)
  t0 = now_us()
  return req
end
function response(status, headers, resp)
  local now = now_us()
  if t0 then
    local us = math.floor(now - t0)
    hist[us] = (hist[us] or 0) + 1
    t0 = nil
  else
    unmatched = unmatched + 1
  end
  if status ~= 200 or not string.find(resp, marker, 1, true) then bad = bad + 1 else good = good + 1 end
end
function done(summary, latency, requests)
  local b, g, u, h = 0, 0, 0, {}
  for _, t in ipairs(threads) do
    b = b + t:get("bad")
    g = g + t:get("good")
    u = u + t:get("unmatched")
    for k, v in pairs(t:get("hist")) do h[k] = (h[k] or 0) + v end
  end
  local e = summary.errors
  io.write(string.format(
    "BENCH_JSON {\"requests\":%%d,\"duration_us\":%%d,\"bytes\":%%d,\"bad\":%%d,\"good\":%%d," ..
    "\"errors\":{\"connect\":%%d,\"read\":%%d,\"write\":%%d,\"status\":%%d,\"timeout\":%%d}," ..
    "\"p50_us\":%%d,\"p90_us\":%%d,\"p99_us\":%%d,\"p999_us\":%%d,\"max_us\":%%d,\"mean_us\":%%.1f}\n",
    summary.requests, summary.duration, summary.bytes, b, g,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency:percentile(99.9),
    latency.max, latency.mean))
  local parts = {}
  for k, v in pairs(h) do parts[#parts + 1] = string.format('"%%d":%%d', k, v) end
  io.write('BENCH_TIMED {"unmatched":' .. u .. ',"hist_us":{' .. table.concat(parts, ",") .. '}}\n')
end
"""


def lua_str(s: str) -> str:
    return json.dumps(s)


def write_lua(path: Path, url_path: str, body: dict, heads: list[dict[str, str]], marker: str) -> Path:
    rows = ",\n".join("  {" + ", ".join(f"[{lua_str(k)}] = {lua_str(v)}" for k, v in h.items()) + "}" for h in heads)
    path.write_text(LUA % {"path": lua_str(url_path), "body": lua_str(json.dumps(body, separators=(",", ":"))),
                           "marker": lua_str(marker), "heads": rows})
    return path


def tree_cpu(pid: int) -> float:
    """CPU seconds of a process and all its descendants (LiteLLM's uvicorn workers)."""
    return cpu_seconds(pid) + sum(tree_cpu(c) for c in children_of(pid))


def tree_rss(pid: int) -> float:
    total = 0.0
    for p in [pid, *children_of(pid)]:
        try:
            total += memory(p).get("VmRSS", 0.0)
        except OSError:
            pass
    return round(total, 1)


# --- the processes ----------------------------------------------------------------------------

def start_emulator(logs: Path) -> tuple[servers.Proc, str]:
    python = paths.require(paths.VENV_PYTHON, "the e2e virtualenv")
    proc = servers.processes(logs).start("llm-emulator", [python, paths.SERVERS / "llm_emulator.py", "--port", "0",
                                                          "--name", "emu", "--key", PROVIDER_KEY])
    m = proc.wait_for(r"llm-emulator: \S+ listening (http://\S+)", timeout=30, stream="stdout")
    return proc, m.group(1)


def reset_emulator(url: str) -> None:
    """The emulator records every request: forget them between runs (memory, lock time)."""
    httpx.post(f"{url}/_emulator/reset", timeout=10).raise_for_status()


def portal_docs(idp: Idp, emulator: str, tokens_per_day: int) -> list[dict]:
    portal = manifests.portal("llmbench", names=[], extra_spec={
        "auth": {"issuer": idp.issuer, "audience": AUDIENCE, "scopes": ["mcp"], "groupsClaim": "groups"},
        "llm": {"routes": [{"alias": "bench", "targets": [{
            "provider": "openAICompatible", "baseUrl": f"{emulator}/v1", "model": "gpt-4o-mini",
            "apiKeyFrom": {"name": "llm-keys", "key": "openai"}, "timeoutSeconds": 30,
            "price": {"input": "0.15", "output": "0.60"}}]}]},
    })
    del portal["spec"]["public"]
    return [
        manifests.secret("portal-session", {"key": manifests.session_key()}),
        manifests.secret("llm-keys", {"openai": PROVIDER_KEY}),
        portal,
        {"apiVersion": manifests.API, "kind": "McpPolicy", "metadata": {"name": "bench-users"},
         "spec": {"portals": ["llmbench"], "include": [{"group": "bench"}], "models": ["*"],
                  "budgets": [{"name": "daily", "scope": "user", "tokens": tokens_per_day,
                               "window": {"calendar": "day"}, "enforcement": "hard"}]}},
    ]


def start_portcullis(name: str, idp: Idp, emulator: str, work: Path, logs: Path) -> servers.Portal:
    manifest = manifests.write(work / name, portal_docs(idp, emulator, 1_000_000_000))
    portal = servers.start_portal(name, manifest, "llmbench", logs, env={"PORTCULLIS_LOG": "warn", "RUST_LOG": "warn"},
                                  extra=["--audit-file", str(work / f"{name}-audit.jsonl"), "--no-audit-stdout"])
    return portal


_KEYS: dict[str, tuple[Any, str]] = {}


def token(idp: Idp, sub: str) -> str:
    """An RS256 access token signed with the IdP's key (read and parsed once: `Idp.sign` parses
    the JWK on every call, minutes for 10,000 tokens)."""
    if idp.issuer not in _KEYS:
        jwk = idp.private_jwk()
        _KEYS[idp.issuer] = (jwt.algorithms.RSAAlgorithm.from_jwk(json.dumps(jwk)), jwk["kid"])
    key, kid = _KEYS[idp.issuer]
    now = int(time.time())
    return jwt.encode({"iss": idp.issuer, "aud": AUDIENCE, "sub": sub, "groups": ["bench"], "scope": "mcp",
                       "iat": now, "exp": now + 7200}, key, algorithm="RS256", headers={"kid": kid, "typ": "at+jwt"})


def chat(base: str, headers: dict[str, str], body: dict, timeout: float = 30) -> httpx.Response:
    return httpx.post(base, headers=headers, json=body, timeout=timeout)


def wait_answering(url: str, headers: dict[str, str], body: dict, what: str, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        try:
            r = chat(url, headers, body)
            if r.status_code == 200:
                return
            last = f"HTTP {r.status_code}: {r.text[:300]}"
        except httpx.HTTPError as e:
            last = repr(e)
        time.sleep(0.5)
    raise RuntimeError(f"{what} does not answer: {last}")


# --- LiteLLM ----------------------------------------------------------------------------------

def litellm_binary(venv: Path, version: str) -> Path:
    """LiteLLM's proxy CLI from its own virtualenv, installed there (pinned) when missing."""
    python, cli = venv / "bin" / "python", venv / "bin" / "litellm"
    have = ""
    if python.exists():
        r = subprocess.run([python, "-c", "import importlib.metadata as m; print(m.version('litellm'))"],
                           capture_output=True, text=True)
        have = r.stdout.strip()
    if have != version or not cli.exists():
        print(f"== installing litellm[proxy]=={version} into {venv} (its own virtualenv)", flush=True)
        if not python.exists():
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([python, "-m", "pip", "install", "-q", f"litellm[proxy]=={version}"], check=True)
    return cli


LITELLM_CONF = """# generated by e2e/bench/llm.py
model_list:
  - model_name: bench
    litellm_params:
      model: openai/gpt-4o-mini
      api_base: {api_base}
      api_key: {key}
general_settings:
  master_key: {master}
router_settings:
  provider_budget_config:
    openai:
      budget_limit: {limit}
      time_period: 1d
"""

LITELLM_ENV = {"LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_TELEMETRY": "False", "LITELLM_LOG": "ERROR",
               "DATABASE_URL": None, "NO_DOCKER": "True"}


def start_litellm(cli: Path, name: str, emulator: str, limit: str, workers: int, work: Path,
                  logs: Path) -> tuple[servers.Proc, str]:
    conf = work / f"{name}.yaml"
    conf.write_text(LITELLM_CONF.format(api_base=f"{emulator}/v1", key=PROVIDER_KEY, master=LITELLM_MASTER,
                                        limit=limit))
    shutil.copy(conf, logs / conf.name)
    port = free_port()
    proc = servers.processes(logs).start(name, [cli, "--config", conf, "--host", "127.0.0.1", "--port", str(port),
                                                "--num_workers", str(workers)], env=LITELLM_ENV)
    url = f"http://127.0.0.1:{port}"
    wait_answering(f"{url}/v1/chat/completions", litellm_headers(), litellm_body("warm", False), name, timeout=180)
    return proc, url


def litellm_headers() -> dict[str, str]:
    return {"Authorization": f"Bearer {LITELLM_MASTER}", "Content-Type": "application/json"}


def litellm_body(user: str, stream: bool, words: int = 0) -> dict:
    b = {"model": "bench", "messages": [{"role": "user", "content": prompt(words)}], "user": user}
    if stream:
        b["stream"] = True
    return b


def prompt(words: int) -> str:
    if words <= 0:
        return PROMPT
    return " ".join(f"w{i}" for i in range(words))


def check_litellm_budget(cli: Path, emulator: str, work: Path, logs: Path) -> dict:
    """A LiteLLM with a tiny provider budget: the first call is served, a later one refused."""
    proc, url = start_litellm(cli, "litellm-tiny", emulator, "0.0000001", 1, work, logs)
    try:
        codes = []
        for _ in range(3):
            r = chat(f"{url}/v1/chat/completions", litellm_headers(), litellm_body("u1", False))
            codes.append(r.status_code)
            if r.status_code != 200:
                return {"enforced": True, "statuses": codes, "refusal": r.text[:300]}
            time.sleep(1.5)  # its spend is added after the answer (a success callback)
        return {"enforced": False, "statuses": codes}
    finally:
        proc.kill()


# --- phases -----------------------------------------------------------------------------------

def run_lane(label: str, url: str, url_path: str, body: dict, heads: list[dict[str, str]], marker: str,
             conns: int, duration: float, warmup: float, work: Path, logs: Path,
             watch: dict, args: argparse.Namespace) -> dict:
    script = write_lua(work / f"{label.replace(' ', '_')}.lua", url_path, body, heads, marker)
    if warmup > 0:
        wrk(url, script, args, warmup, logs / "wrk.log", conns=(conns, conns))
    res = wrk(url, script, args, duration, logs / "wrk.log", watch=watch, conns=(conns, conns))
    # A call is good when response() saw 200 and the marker. The emulator ends a stream by
    # closing the connection (no length, no chunking): wrk completes the response at EOF, then
    # counts a read error and reconnects, so for streams read errors are not failed calls.
    res["ok_rps"] = round(res["good"] / (res["duration_us"] / 1e6), 1)
    failed = res["requests"] - res["good"]
    cpu = "   ".join(f"{k} {v:.0f}" for k, v in res.get("cpu_us_per_call", {}).items())
    print(f"  {label:<28} {res['ok_rps']:>8.1f} ok calls/s   p50 {res['p50_us'] / 1000:8.3f}   "
          f"p99 {res['p99_us'] / 1000:8.3f} ms   failed {failed}   cpu us/call: {cpu}", flush=True)
    return res


def lanes(env: dict, stream: bool, words: int) -> dict[str, tuple[str, str, dict, list[dict[str, str]], str, dict]]:
    """Per lane: base URL, path, body, header sets (one per user), marker, processes to watch."""
    marker = "[DONE]" if stream else "says:"
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": prompt(words)}]}
    if stream:
        body["stream"] = True
    out = {
        "direct": (env["emulator"], "/v1/chat/completions", body,
                   [{"Authorization": f"Bearer {PROVIDER_KEY}", "Content-Type": "application/json"}], marker,
                   {"emulator": env["emulator_pid"]}),
        "portcullis": (env["portal"], "/llm/openai/v1/chat/completions", dict(body, model="bench"),
                       [{"Authorization": f"Bearer {t}", "Content-Type": "application/json"} for t in env["tokens"]],
                       marker, {"gateway": env["portal_pid"], "emulator": env["emulator_pid"]}),
    }
    if env.get("litellm"):
        pid = env["litellm_pid"]
        # `user` cycles with the header sets: one body per user would need one script per
        # user; LiteLLM's provider budget does not depend on it.
        out["litellm"] = (env["litellm"], "/v1/chat/completions", dict(body, model="bench", user="bench-user"),
                          [litellm_headers()], marker,
                          {"gateway": lambda: tree_cpu(pid), "emulator": env["emulator_pid"]})
    return out


def phase(name: str, env: dict, stream: bool, words: int, conns: int, duration: float, args: argparse.Namespace,
          work: Path, logs: Path) -> dict:
    out: dict = {}
    for lane, (url, path, body, heads, marker, watch) in lanes(env, stream, words).items():
        reset_emulator(env["emulator"])
        out[lane] = run_lane(f"{name} {lane}", url, path, body, heads, marker, conns, duration, args.warmup, work,
                             logs, watch, args)
    return out


def chunks_of_stream(env: dict, words: int) -> int:
    """SSE data events of one direct streamed answer (what each gateway relays per stream)."""
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": prompt(words)}], "stream": True}
    r = chat(f"{env['emulator']}/v1/chat/completions", {"Authorization": f"Bearer {PROVIDER_KEY}"}, body)
    return sum(1 for line in r.text.splitlines() if line.startswith("data: "))


def users_rss(args: argparse.Namespace, idp: Idp, emulator: str, work: Path, logs: Path) -> dict:
    print(f"== RSS with {args.users} users' budgets tracked (fresh proxy, in-memory budget store)", flush=True)
    portal = start_portcullis("proxy-users", idp, emulator, work, logs)
    url = f"{portal.base}/llm/openai/v1/chat/completions"
    body = {"model": "bench", "messages": [{"role": "user", "content": PROMPT}], "max_tokens": 16}
    t0 = time.monotonic()
    toks = [token(idp, f"user-{i:05d}") for i in range(args.users + 1)]
    mint_s = time.monotonic() - t0
    wait_answering(url, {"Authorization": f"Bearer {toks[0]}"}, body, "the portal")
    reset_emulator(emulator)
    time.sleep(1.0)
    before = memory(portal.proc.pid)
    t0 = time.monotonic()

    # Each worker reuses one connection for a slice of the users.
    def worker(ts: list[str]) -> int:
        bad = 0
        with httpx.Client(timeout=30) as c:
            for t in ts:
                if c.post(url, headers={"Authorization": f"Bearer {t}"}, json=body).status_code != 200:
                    bad += 1
        return bad

    workers = 8
    slices = [toks[1 + i::workers] for i in range(workers)]
    with concurrent.futures.ThreadPoolExecutor(workers) as ex:
        failures = sum(ex.map(worker, slices))
    calls_s = time.monotonic() - t0
    time.sleep(1.0)
    after = memory(portal.proc.pid)
    spend = httpx.get(f"{portal.admin}/admin/spend", params={"subject": f"user-{args.users:05d}", "group": "bench"},
                      timeout=10).json()
    usage = httpx.get(f"{emulator}/_emulator/usage", timeout=10).json()
    portal.proc.kill()
    res = {"users": args.users, "failed_calls": failures, "rss_before_mib": before.get("VmRSS"),
           "rss_after_mib": after.get("VmRSS"), "hwm_after_mib": after.get("VmHWM"),
           "rss_growth_mib": round(after.get("VmRSS", 0) - before.get("VmRSS", 0), 1),
           "calls_seconds": round(calls_s, 1), "token_minting_seconds": round(mint_s, 1),
           "emulator_calls": usage["total"]["calls"], "last_user_spend": spend}
    print(f"  RSS {res['rss_before_mib']} MiB -> {res['rss_after_mib']} MiB after {args.users} users "
          f"(+{res['rss_growth_mib']} MiB; {failures} failed; {usage['total']['calls']} provider calls)", flush=True)
    return res


def summarize(out: dict) -> dict:
    s: dict = {}
    lat, thr, st = out.get("latency", {}), out.get("throughput", {}), out.get("stream", {})
    for lane in ("portcullis", "litellm"):
        row: dict = {}
        if lane in lat:
            row["added_p50_ms_1c"] = round((lat[lane]["p50_us"] - lat["direct"]["p50_us"]) / 1000, 3)
            row["added_p99_ms_1c"] = round((lat[lane]["p99_us"] - lat["direct"]["p99_us"]) / 1000, 3)
        if lane in thr:
            t = thr[lane]
            row["ok_rps"] = t["ok_rps"]
            row["rps_vs_direct"] = round(t["ok_rps"] / thr["direct"]["ok_rps"], 3) if thr["direct"]["ok_rps"] else None
            g = t.get("cpu_us_per_call", {}).get("gateway")
            if g:
                row["gateway_cpu_us_per_call"] = g
                row["calls_per_gateway_cpu_second"] = round(1e6 / g)
        if lane in st and out.get("stream_chunks"):
            n = out["stream_chunks"]
            row["stream_added_p50_ms"] = round((st[lane]["p50_us"] - st["direct"]["p50_us"]) / 1000, 3)
            row["added_ms_per_chunk"] = round(row["stream_added_p50_ms"] / n, 4)
            g = st[lane].get("cpu_us_per_call", {}).get("gateway")
            if g:
                row["gateway_cpu_us_per_chunk"] = round(g / n, 1)
        s[lane] = row
    p, l_ = s.get("portcullis", {}), s.get("litellm", {})
    if p.get("ok_rps") and l_.get("ok_rps"):
        s["throughput_ratio_portcullis_to_litellm"] = round(p["ok_rps"] / l_["ok_rps"], 1)
    if p.get("calls_per_gateway_cpu_second") and l_.get("calls_per_gateway_cpu_second"):
        s["cpu_efficiency_ratio_portcullis_to_litellm"] = round(
            p["calls_per_gateway_cpu_second"] / l_["calls_per_gateway_cpu_second"], 1)
    if thr.get("direct") and thr.get("portcullis"):
        # Provider-bound: the gateway lane reaches most of what the provider serves alone.
        s["portcullis_provider_bound"] = thr["portcullis"]["ok_rps"] >= 0.8 * thr["direct"]["ok_rps"]
    return s


def table(out: dict) -> str:
    s = out["summary"]
    lines = ["", "LLM gateway bench (chat completions; provider = the e2e emulator, one Python process)", ""]
    thr, lat, st = out.get("throughput", {}), out.get("latency", {}), out.get("stream", {})
    head = f"{'lane':<12} {'p50 1c ms':>10} {'p99 1c ms':>10} {'calls/s @' + str(out['load']['connections']) + 'c':>13} " \
           f"{'p50 ms':>8} {'p99 ms':>8} {'gw cpu us/call':>15} {'stream p50 ms':>14} {'gw cpu us/chunk':>16}"
    lines.append(head)
    for lane in ("direct", "portcullis", "litellm"):
        if lane not in thr and lane not in lat:
            continue
        lt, tt, ss = lat.get(lane, {}), thr.get(lane, {}), st.get(lane, {})
        g = tt.get("cpu_us_per_call", {}).get("gateway")
        gs = ss.get("cpu_us_per_call", {}).get("gateway")
        n = out.get("stream_chunks") or 1
        lines.append(f"{lane:<12} {lt.get('p50_us', 0) / 1000:>10.3f} {lt.get('p99_us', 0) / 1000:>10.3f} "
                     f"{tt.get('ok_rps', 0):>13.1f} {tt.get('p50_us', 0) / 1000:>8.2f} {tt.get('p99_us', 0) / 1000:>8.2f} "
                     f"{(f'{g:.0f}' if g else '-'):>15} {ss.get('p50_us', 0) / 1000:>14.2f} "
                     f"{(f'{gs / n:.1f}' if gs else '-'):>16}")
    lines.append("")
    for lane in ("portcullis", "litellm"):
        r = s.get(lane)
        if not r:
            continue
        lines.append(f"{lane}: added p50 {r.get('added_p50_ms_1c')} ms (1 connection), "
                     f"{r.get('rps_vs_direct')}x direct's calls/s, {r.get('calls_per_gateway_cpu_second')} calls per "
                     f"gateway CPU-second, streamed: +{r.get('added_ms_per_chunk')} ms per chunk")
    if "throughput_ratio_portcullis_to_litellm" in s:
        lines.append(f"portcullis / litellm: {s['throughput_ratio_portcullis_to_litellm']}x calls/s at "
                     f"{out['load']['connections']} connections; {s.get('cpu_efficiency_ratio_portcullis_to_litellm')}x "
                     "calls per gateway CPU-second")
    if s.get("portcullis_provider_bound"):
        lines.append("note: portcullis reached >= 80% of the emulator's own calls/s: the Python emulator is the "
                     "bottleneck of that lane, so compare calls per gateway CPU-second for the gateway itself")
    u = out.get("users")
    if u:
        lines.append(f"RSS with {u['users']} users' budgets (in-memory store): {u['rss_before_mib']} -> "
                     f"{u['rss_after_mib']} MiB (+{u['rss_growth_mib']} MiB), {u['failed_calls']} failed calls")
    lit = out.get("litellm")
    if lit:
        lines.append(f"litellm {lit['version']}: {lit['budgets']}; budget check: {lit.get('budget_check')}")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=float, default=10.0, help="seconds per measured wrk run")
    ap.add_argument("--warmup", type=float, default=2.0)
    ap.add_argument("--connections", type=int, default=16, help="connections of the throughput phase")
    ap.add_argument("--stream-words", type=int, default=48, help="prompt words; the answer has 2 more")
    ap.add_argument("--bench-users", type=int, default=100, help="distinct users cycled in the wrk phases")
    ap.add_argument("--users", type=int, default=10_000, help="distinct subjects of the RSS phase")
    ap.add_argument("--litellm-version", default=LITELLM_VERSION)
    ap.add_argument("--litellm-venv", type=Path, default=ROOT / "target" / "bench" / "litellm-venv")
    ap.add_argument("--litellm-workers", type=int, default=1,
                    help="uvicorn workers of LiteLLM (its default, 1; with 2, 1.106.12's workers died at start here)")
    ap.add_argument("--skip-litellm", action="store_true")
    ap.add_argument("--skip-litellm-budget-check", action="store_true")
    ap.add_argument("--only", choices=["latency", "throughput", "stream", "users"], action="append")
    ap.add_argument("--out", type=Path, default=ROOT / "target" / "bench" / "llm.json")
    ap.add_argument("--wrk", default=shutil.which("wrk") or "wrk")
    args = ap.parse_args()
    args.threads, args.connections_default = 1, args.connections  # for bench.wrk's signature

    if not PROXY.exists():
        print(f"missing {PROXY}: cargo build --release -p portcullis-proxy", file=sys.stderr)
        return 2
    if not shutil.which(args.wrk):
        print("missing wrk: apt-get install -y wrk (or make e2e-setup)", file=sys.stderr)
        return 2
    args.out.parent.mkdir(parents=True, exist_ok=True)
    logs = args.out.parent / "llm-logs"
    if logs.exists():
        shutil.rmtree(logs)
    logs.mkdir(parents=True)
    parts = args.only or ["latency", "throughput", "stream", "users"]
    out: dict = {"machine": {"cpus": os.cpu_count(), "kernel": platform.release(),
                             "loadavg_at_start": [round(x, 2) for x in os.getloadavg()]},
                 "load": {"tool": "wrk", "connections": args.connections, "duration_s": args.duration,
                          "warmup_s": args.warmup, "stream_words": args.stream_words, "bench_users": args.bench_users}}
    started = time.monotonic()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        with tempfile.TemporaryDirectory(prefix="portcullis-llmbench-") as tmp:
            work = Path(tmp)
            pm = servers.processes(logs)
            idp = start_idp(pm, work)
            emu, emulator = start_emulator(logs)
            env: dict = {"emulator": emulator, "emulator_pid": emu.pid}
            if set(parts) & {"latency", "throughput", "stream"}:
                portal = start_portcullis("proxy-bench", idp, emulator, work, logs)
                env.update(portal=portal.base, portal_pid=portal.proc.pid,
                           tokens=[token(idp, f"bench-{i:03d}") for i in range(args.bench_users)])
                wait_answering(f"{portal.base}/llm/openai/v1/chat/completions",
                               {"Authorization": f"Bearer {env['tokens'][0]}"},
                               {"model": "bench", "messages": [{"role": "user", "content": PROMPT}]}, "the portal")
                if not args.skip_litellm:
                    cli = litellm_binary(args.litellm_venv, args.litellm_version)
                    lit = {"version": args.litellm_version, "venv": str(args.litellm_venv),
                           "workers": args.litellm_workers, "database": None,
                           "budgets": "router_settings.provider_budget_config openai 1000000 USD/1d (in-memory); "
                                      "per-user budgets need its PostgreSQL+Prisma database, not runnable here",
                           "auth": "master key"}
                    if not args.skip_litellm_budget_check:
                        print("== LiteLLM budget check (provider budget 1e-7 USD/day)", flush=True)
                        lit["budget_check"] = check_litellm_budget(cli, emulator, work, logs)
                        print(f"  {lit['budget_check']}", flush=True)
                    lp, lurl = start_litellm(cli, "litellm", emulator, "1000000", args.litellm_workers, work, logs)
                    env.update(litellm=lurl, litellm_pid=lp.pid)
                    out["litellm"] = lit
                if "latency" in parts:
                    print("== latency: 1 connection, non-streamed", flush=True)
                    out["latency"] = phase("1c", env, False, 0, 1, args.duration, args, work, logs)
                if "throughput" in parts:
                    print(f"== throughput: {args.connections} connections, non-streamed", flush=True)
                    out["throughput"] = phase(f"{args.connections}c", env, False, 0, args.connections, args.duration,
                                              args, work, logs)
                if "stream" in parts:
                    out["stream_chunks"] = chunks_of_stream(env, args.stream_words)
                    print(f"== stream: 1 connection, {out['stream_chunks']} SSE events per answer", flush=True)
                    out["stream"] = phase("stream", env, True, args.stream_words, 1, args.duration, args, work, logs)
                portal.proc.kill()
                if env.get("litellm"):
                    out["litellm"]["rss_mib"] = tree_rss(env["litellm_pid"])
            if "users" in parts:
                out["users"] = users_rss(args, idp, emulator, work, logs)
    finally:
        servers.stop_all()
    out["summary"] = summarize(out)
    out["elapsed_s"] = round(time.monotonic() - started, 1)
    out["machine"]["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(table(out))
    la = out["machine"]
    print(f"\n(json: {args.out}; logs: {logs}; {out['elapsed_s']} s; load average at start "
          f"{la['loadavg_at_start'][0]}, at end {la['loadavg_at_end'][0]} on {la['cpus']} CPUs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
