"""An LLM provider emulator: the one stand-in of the e2e suite (real providers cannot be reached
from here). One process is one provider endpoint that speaks both wire formats faithfully:

- OpenAI Chat Completions: `POST /v1/chat/completions` (JSON, or SSE `data:` chunks ending with
  `data: [DONE]`, the usage chunk only with `stream_options.include_usage`), `GET /v1/models`,
  key in `Authorization: Bearer`; errors `{"error": {"message", "type", "param", "code"}}`.
- Anthropic Messages: `POST /v1/messages` (JSON, or SSE `event:`/`data:` events message_start,
  content_block_start/delta/stop, message_delta with usage, message_stop; `ping`), key in
  `x-api-key`, `anthropic-version` required; errors `{"type": "error", "error": {...}}`.

Answers are deterministic: with tools offered and no tool result yet in the conversation, the
model calls the first tool with `{"<its first property>": "Paris"}`; otherwise it answers
"<name> says: <last user text>". Tokens: whitespace-separated words (prompt: every message
text; completion: the answer).

Control (same port), so each test injects failures and reads what the provider saw:
- `POST /_emulator/fail` `{"status": 429, "count": 1, "retry_after": "7"}` (an error answer in the
  request's format; 529 is `overloaded_error`), `{"hang": true, "count": 1}` (never answers);
  `count` requests are affected, then it answers normally again.
- `GET /_emulator/requests`: every request received (path, headers, parsed body), in order.
- `POST /_emulator/reset`: forget requests, pending failures and the usage accounting.
- `GET /_emulator/usage`: the provider's own accounting of the tokens it billed, as it reported
  them in answers: `{"total": {"input", "output", "calls"}, "by_user": {user: {...}}}`, where the
  user is the request's OpenAI `user` or Anthropic `metadata.user_id` ("" when absent).

The completion honours `max_tokens` (or `max_completion_tokens`): an answer longer than that is
cut to that many words and ends with `finish_reason: "length"` / `stop_reason: "max_tokens"`.
Failure injection can also change the next answers instead of failing them:
`{"overrun": 40, "count": 1}` ignores the limit and adds 40 words; `{"no_usage": true}` reports
no usage at all (neither in the JSON answer nor in the stream); `{"chunk_chars": 3}` streams the
text in pieces of 3 characters (not word by word), so a word is split across deltas.

- OpenAI Responses: `POST /v1/responses` (JSON Response object, or with `stream: true` the event
  sequence response.created, response.in_progress, response.output_item.added,
  response.content_part.added, response.output_text.delta..., response.output_text.done,
  response.content_part.done, response.output_item.done (function calls:
  response.function_call_arguments.delta/done), response.completed with usage; each event with
  `type` and `sequence_number`, as `event:`/`data:` pairs).
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

STATE_LOCK = threading.Lock()
REQUESTS: list[dict[str, Any]] = []
FAILURES: list[dict[str, Any]] = []
USAGE: dict[str, dict[str, int]] = {}
TOTAL: dict[str, int] = {"input": 0, "output": 0, "calls": 0}


def account(user: str, input_tokens: int, output_tokens: int) -> None:
    with STATE_LOCK:
        u = USAGE.setdefault(user, {"input": 0, "output": 0, "calls": 0})
        for d in (u, TOTAL):
            d["input"] += input_tokens
            d["output"] += output_tokens
            d["calls"] += 1
HANG = threading.Event()  # never set: hung requests wait on it until the process ends
ARGS: argparse.Namespace


def words(text: str) -> int:
    return len(text.split())


def text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        out = []
        for part in content:
            if isinstance(part, dict):
                if part.get("type") == "text":
                    out.append(part.get("text", ""))
                elif part.get("type") == "tool_result":
                    out.append(text_of(part.get("content", "")))
        return " ".join(out)
    return ""


def has_tool_result(messages: list[dict[str, Any]]) -> bool:
    for m in messages:
        if m.get("role") == "tool":
            return True
        c = m.get("content")
        if isinstance(c, list) and any(isinstance(p, dict) and p.get("type") == "tool_result" for p in c):
            return True
    return False


def last_user_text(messages: list[dict[str, Any]]) -> str:
    """The user's last words (tool results are not the user's: OpenAI sends them as `tool`
    messages, Anthropic as `tool_result` blocks in a user message; both are skipped)."""
    for m in reversed(messages):
        if m.get("role") == "user":
            c = m.get("content")
            parts = [c] if isinstance(c, str) else [p.get("text", "") for p in c or [] if isinstance(p, dict) and p.get("type") == "text"]
            t = " ".join(p for p in parts if p)
            if t:
                return t
    return ""


def plan(messages: list[dict[str, Any]], tools: list[dict[str, Any]], system: str,
         limit: int | None = None, overrun: int = 0) -> dict[str, Any]:
    """What the model answers: text, or a call of the first tool; cut at `limit` words (unless
    `overrun` words are added in disregard of it)."""
    prompt = " ".join([system] + [text_of(m.get("content")) for m in messages])
    if tools and not has_tool_result(messages):
        name, schema = tools[0]
        props = list((schema or {}).get("properties", {}).keys())
        args = {props[0] if props else "input": "Paris"}
        return {"tool": name, "args": args, "input_tokens": words(prompt), "output_tokens": 5, "cut": False}
    parts = f"{ARGS.name} says: {last_user_text(messages)}".split()
    cut = False
    if overrun:
        parts += [f"more{i}" for i in range(overrun)]
    elif limit is not None and len(parts) > limit:
        parts, cut = parts[:max(limit, 0)], True
    text = " ".join(parts)
    return {"text": text, "input_tokens": words(prompt), "output_tokens": words(text), "cut": cut}


def limit_of(req: dict[str, Any]) -> int | None:
    for f in ("max_completion_tokens", "max_tokens"):
        if isinstance(req.get(f), int):
            return int(req[f])
    return None


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # TCP_NODELAY: the head and the body are separate writes; with Nagle the body waits for the
    # peer's delayed ACK of the head (40 ms per kept-alive request).
    disable_nagle_algorithm = True

    def log_message(self, fmt: str, *args: Any) -> None:  # quiet
        pass

    # --- plumbing -----------------------------------------------------------------------------
    def body_json(self) -> Any:
        n = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(n) if n else b""
        try:
            return json.loads(raw) if raw else None
        except ValueError:
            return None

    def send_json(self, status: int, doc: Any, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def start_stream(self) -> None:
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("cache-control", "no-cache")
        self.send_header("connection", "close")
        self.end_headers()
        self.close_connection = True

    def emit(self, text: str) -> None:
        self.wfile.write(text.encode())
        self.wfile.flush()
        time.sleep(0.002)  # separate writes, as a real provider's tokens arrive

    # --- control ------------------------------------------------------------------------------
    def do_GET(self) -> None:
        if self.path == "/_emulator/usage":
            with STATE_LOCK:
                self.send_json(200, {"total": dict(TOTAL), "by_user": {k: dict(v) for k, v in USAGE.items()}})
            return
        if self.path == "/_emulator/requests":
            with STATE_LOCK:
                self.send_json(200, REQUESTS)
            return
        if self.path == "/v1/models":
            self.send_json(200, {"object": "list", "data": [{"id": ARGS.name, "object": "model", "created": 0, "owned_by": "emulator"}]})
            return
        self.send_json(404, {"error": {"message": "not found", "type": "invalid_request_error", "param": None, "code": None}})

    def do_POST(self) -> None:
        body = self.body_json()
        if self.path == "/_emulator/fail":
            with STATE_LOCK:
                for _ in range(int(body.get("count", 1))):
                    FAILURES.append(body)
            self.send_json(200, {"ok": True})
            return
        if self.path == "/_emulator/reset":
            with STATE_LOCK:
                REQUESTS.clear()
                FAILURES.clear()
                USAGE.clear()
                TOTAL.update({"input": 0, "output": 0, "calls": 0})
            self.send_json(200, {"ok": True})
            return
        if self.path == "/v1/responses":
            with STATE_LOCK:
                REQUESTS.append({"path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()}, "body": body})
            self.shape = {}
            if self.authorized(False):
                self.responses_api(body if isinstance(body, dict) else {})
            return
        if self.path not in ("/v1/chat/completions", "/v1/messages"):
            self.send_json(404, {"error": {"message": f"no route {self.path}", "type": "invalid_request_error", "param": None, "code": None}})
            return
        anthropic = self.path == "/v1/messages"
        with STATE_LOCK:
            REQUESTS.append({"path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()}, "body": body})
            failure = FAILURES.pop(0) if FAILURES else None
        if failure and failure.get("hang"):
            HANG.wait()
            return
        self.shape: dict[str, Any] = {}
        if failure and ("overrun" in failure or "no_usage" in failure or "chunk_chars" in failure):
            self.shape, failure = failure, None
        if failure:
            self.fail(anthropic, int(failure["status"]), failure.get("retry_after"), failure.get("message"))
            return
        if not self.authorized(anthropic):
            return
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
            self.fail(anthropic, 400, None, "messages: required")
            return
        if anthropic:
            self.anthropic(body)
        else:
            self.openai(body)

    def authorized(self, anthropic: bool) -> bool:
        if anthropic:
            ok = self.headers.get("x-api-key") == ARGS.key and self.headers.get("anthropic-version")
        else:
            ok = self.headers.get("authorization") == f"Bearer {ARGS.key}"
        if not ok:
            self.fail(anthropic, 401, None, "invalid x-api-key" if anthropic else "Incorrect API key provided")
        return bool(ok)

    def fail(self, anthropic: bool, status: int, retry_after: str | None, message: str | None) -> None:
        headers = {"retry-after": retry_after} if retry_after else {}
        if anthropic:
            kind = {400: "invalid_request_error", 401: "authentication_error", 429: "rate_limit_error", 529: "overloaded_error"}.get(status, "api_error")
            doc: Any = {"type": "error", "error": {"type": kind, "message": message or f"emulated {status}"}}
        else:
            kind = {400: "invalid_request_error", 401: "invalid_request_error", 429: "requests"}.get(status, "server_error")
            code = "content_policy_violation" if status == 400 else None
            doc = {"error": {"message": message or f"emulated {status}", "type": kind, "param": None, "code": code}}
        self.send_json(status, doc, headers)

    def pieces(self, text: str) -> list[str]:
        """The deltas a text is streamed in: words (with their leading space), or `chunk_chars`
        characters at a time when a test asked for split words."""
        n = int(self.shape.get("chunk_chars", 0))
        if n > 0:
            return [text[i:i + n] for i in range(0, len(text), n)]
        return [w if i == 0 else " " + w for i, w in enumerate(text.split(" "))]

    # --- OpenAI Responses ---------------------------------------------------------------------
    def responses_api(self, req: dict[str, Any]) -> None:
        inp = req.get("input")
        msgs: list[dict[str, Any]] = []
        if isinstance(inp, str):
            msgs.append({"role": "user", "content": inp})
        elif isinstance(inp, list):
            for item in inp:
                t = item.get("type", "message")
                if t == "message":
                    c = item.get("content")
                    text = c if isinstance(c, str) else " ".join(p.get("text", "") for p in c or [] if isinstance(p, dict))
                    msgs.append({"role": item.get("role"), "content": text})
                elif t == "function_call_output":
                    msgs.append({"role": "tool", "content": str(item.get("output", ""))})
        tools = [(t["name"], t.get("parameters")) for t in req.get("tools") or [] if t.get("type") == "function"]
        p = plan(msgs, tools, str(req.get("instructions") or ""), req.get("max_output_tokens"))
        account(str(req.get("user") or ""), p["input_tokens"], p["output_tokens"])
        rid = uuid.uuid4().hex[:12]
        usage = {"input_tokens": p["input_tokens"], "input_tokens_details": {"cached_tokens": 0},
                 "output_tokens": p["output_tokens"], "output_tokens_details": {"reasoning_tokens": 0},
                 "total_tokens": p["input_tokens"] + p["output_tokens"]}
        status = "incomplete" if p["cut"] else "completed"
        if "tool" in p:
            item: dict[str, Any] = {"id": f"fc_{rid}_0", "type": "function_call", "status": "completed",
                                    "call_id": "call_emu1", "name": p["tool"], "arguments": json.dumps(p["args"])}
        else:
            item = {"id": f"msg_{rid}", "type": "message", "status": "completed", "role": "assistant",
                    "content": [{"type": "output_text", "text": p["text"], "annotations": []}]}

        def response(st: str, output: list[Any], u: Any) -> dict[str, Any]:
            return {"id": f"resp_{rid}", "object": "response", "created_at": int(time.time()), "status": st,
                    "incomplete_details": {"reason": "max_output_tokens"} if st == "incomplete" else None,
                    "error": None, "model": req.get("model"), "output": output, "parallel_tool_calls": True,
                    "tool_choice": "auto", "tools": [], "usage": u}
        if not req.get("stream"):
            self.send_json(200, response(status, [item], usage))
            return
        self.start_stream()
        seq = [0]

        def event(kind: str, data: dict[str, Any]) -> None:
            data = {"type": kind, "sequence_number": seq[0], **data}
            seq[0] += 1
            self.emit(f"event: {kind}\ndata: {json.dumps(data)}\n\n")

        event("response.created", {"response": response("in_progress", [], None)})
        event("response.in_progress", {"response": response("in_progress", [], None)})
        if "tool" in p:
            event("response.output_item.added", {"output_index": 0, "item": dict(item, status="in_progress", arguments="")})
            args = item["arguments"]
            half = len(args) // 2
            for piece in (args[:half], args[half:]):
                event("response.function_call_arguments.delta", {"item_id": item["id"], "output_index": 0, "delta": piece})
            event("response.function_call_arguments.done", {"item_id": item["id"], "output_index": 0, "name": p["tool"], "arguments": args})
        else:
            event("response.output_item.added", {"output_index": 0, "item": dict(item, status="in_progress", content=[])})
            event("response.content_part.added", {"item_id": item["id"], "output_index": 0, "content_index": 0,
                                                  "part": {"type": "output_text", "text": "", "annotations": []}})
            for piece in self.pieces(p["text"]):
                event("response.output_text.delta", {"item_id": item["id"], "output_index": 0, "content_index": 0,
                                                     "delta": piece, "logprobs": []})
            event("response.output_text.done", {"item_id": item["id"], "output_index": 0, "content_index": 0,
                                                "text": p["text"], "logprobs": []})
            event("response.content_part.done", {"item_id": item["id"], "output_index": 0, "content_index": 0,
                                                 "part": item["content"][0]})
        event("response.output_item.done", {"output_index": 0, "item": item})
        event("response.incomplete" if p["cut"] else "response.completed", {"response": response(status, [item], usage)})

    # --- OpenAI -------------------------------------------------------------------------------
    def openai(self, req: dict[str, Any]) -> None:
        msgs = req["messages"]
        system = " ".join(text_of(m.get("content")) for m in msgs if m.get("role") in ("system", "developer"))
        tools = [(t["function"]["name"], t["function"].get("parameters")) for t in req.get("tools") or []]
        p = plan([m for m in msgs if m.get("role") not in ("system", "developer")], tools, system,
                 limit_of(req), int(self.shape.get("overrun", 0)))
        account(str(req.get("user") or ""), p["input_tokens"], p["output_tokens"])
        no_usage = bool(self.shape.get("no_usage"))
        cid = f"chatcmpl-{uuid.uuid4().hex[:12]}"
        usage = {"prompt_tokens": p["input_tokens"], "completion_tokens": p["output_tokens"],
                 "total_tokens": p["input_tokens"] + p["output_tokens"],
                 "prompt_tokens_details": {"cached_tokens": 0}, "completion_tokens_details": {"reasoning_tokens": 0}}
        finish = "tool_calls" if "tool" in p else ("length" if p["cut"] else "stop")
        if not req.get("stream"):
            msg: dict[str, Any] = {"role": "assistant", "content": p.get("text"), "refusal": None}
            if "tool" in p:
                msg["tool_calls"] = [{"id": "call_emu1", "type": "function", "function": {"name": p["tool"], "arguments": json.dumps(p["args"])}}]
            self.send_json(200, {"id": cid, "object": "chat.completion", "created": int(time.time()), "model": req.get("model"),
                                 "choices": [{"index": 0, "message": msg, "logprobs": None, "finish_reason": finish}],
                                 **({} if no_usage else {"usage": usage})})
            return
        self.start_stream()

        def chunk(delta: dict[str, Any], fin: str | None = None) -> None:
            c = {"id": cid, "object": "chat.completion.chunk", "created": int(time.time()), "model": req.get("model"),
                 "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": fin}]}
            self.emit(f"data: {json.dumps(c)}\n\n")

        chunk({"role": "assistant", "content": ""})
        if "tool" in p:
            args = json.dumps(p["args"])
            chunk({"tool_calls": [{"index": 0, "id": "call_emu1", "type": "function", "function": {"name": p["tool"], "arguments": ""}}]})
            half = len(args) // 2
            for piece in (args[:half], args[half:]):
                chunk({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]})
        else:
            for piece in self.pieces(p["text"]):
                chunk({"content": piece})
        chunk({}, finish)
        if (req.get("stream_options") or {}).get("include_usage") and not no_usage:
            c = {"id": cid, "object": "chat.completion.chunk", "created": int(time.time()), "model": req.get("model"), "choices": [], "usage": usage}
            self.emit(f"data: {json.dumps(c)}\n\n")
        self.emit("data: [DONE]\n\n")

    # --- Anthropic ----------------------------------------------------------------------------
    def anthropic(self, req: dict[str, Any]) -> None:
        if not isinstance(req.get("max_tokens"), int):
            self.fail(True, 400, None, "max_tokens: Field required")
            return
        system = req.get("system") or ""
        system = system if isinstance(system, str) else text_of(system)
        tools = [(t["name"], t.get("input_schema")) for t in req.get("tools") or []]
        p = plan(req["messages"], tools, system, limit_of(req), int(self.shape.get("overrun", 0)))
        account(str((req.get("metadata") or {}).get("user_id") or ""), p["input_tokens"], p["output_tokens"])
        no_usage = bool(self.shape.get("no_usage"))
        mid = f"msg_{uuid.uuid4().hex[:12]}"
        stop = "tool_use" if "tool" in p else ("max_tokens" if p["cut"] else "end_turn")
        content: list[dict[str, Any]] = []
        if "tool" in p:
            content.append({"type": "tool_use", "id": "toolu_emu1", "name": p["tool"], "input": p["args"]})
        else:
            content.append({"type": "text", "text": p["text"]})
        usage = {"input_tokens": p["input_tokens"], "output_tokens": p["output_tokens"],
                 "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}
        if not req.get("stream"):
            self.send_json(200, {"id": mid, "type": "message", "role": "assistant", "model": req.get("model"), "content": content,
                                 "stop_reason": stop, "stop_sequence": None, **({} if no_usage else {"usage": usage})})
            return
        self.start_stream()

        def event(name: str, data: dict[str, Any]) -> None:
            self.emit(f"event: {name}\ndata: {json.dumps(data)}\n\n")

        event("message_start", {"type": "message_start", "message": {
            "id": mid, "type": "message", "role": "assistant", "model": req.get("model"), "content": [],
            "stop_reason": None, "stop_sequence": None, **({} if no_usage else {"usage": dict(usage, output_tokens=1)})}})
        event("ping", {"type": "ping"})
        if "tool" in p:
            event("content_block_start", {"type": "content_block_start", "index": 0,
                                          "content_block": {"type": "tool_use", "id": "toolu_emu1", "name": p["tool"], "input": {}}})
            args = json.dumps(p["args"])
            half = len(args) // 2
            for piece in (args[:half], args[half:]):
                event("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": {"type": "input_json_delta", "partial_json": piece}})
        else:
            event("content_block_start", {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}})
            for piece in self.pieces(p["text"]):
                event("content_block_delta", {"type": "content_block_delta", "index": 0,
                                              "delta": {"type": "text_delta", "text": piece}})
        event("content_block_stop", {"type": "content_block_stop", "index": 0})
        event("message_delta", {"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": None},
                                **({} if no_usage else {"usage": {"output_tokens": p["output_tokens"]}})})
        event("message_stop", {"type": "message_stop"})


def main() -> None:
    global ARGS
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--host", default="127.0.0.1", help="address to listen on (a pod: 0.0.0.0)")
    ap.add_argument("--name", default="emulator")
    ap.add_argument("--key", required=True, help="the API key this provider accepts")
    ARGS = ap.parse_args()
    server = ThreadingHTTPServer((ARGS.host, ARGS.port), Handler)
    server.daemon_threads = True
    print(f"llm-emulator: {ARGS.name} listening http://127.0.0.1:{server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    sys.exit(0)


if __name__ == "__main__":
    main()
