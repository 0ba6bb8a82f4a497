"""The HTTP layer of `tx serve` (Starlette on uvicorn): parse and check each request, hand its
lines to the service (commands/serve.py), and answer JSON. Every refusal is one JSON object
`{"error": message, "kind": kind}` with its status; nothing a client sends reaches a traceback.

  POST /translate      LibreTranslate's API: q (a string or a list), source, target, format, alternatives, api_key
  POST /v1/translate   tx's own: text (a list), model, beam, nbest, alpha, ..., scores; `tx translate --format jsonl` fields
  GET  /health         200 once the models are loaded, 503 before
  GET  /metrics        Prometheus text format
  GET  /v1/models, GET /languages   what is served (the second in LibreTranslate's shape)
"""

from __future__ import annotations

import asyncio
import hmac
import json
from typing import Optional
from urllib.parse import parse_qs

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from .serve import REQUEST_OPTIONS, ServeError, Service, hypothesis_records, truncation_note

STATUS = {"bad_request": 400, "unauthorized": 401, "unknown_model": 400, "too_large": 413,
          "unsupported_media": 415, "queue_full": 503, "not_ready": 503, "shutting_down": 503,
          "decode_failed": 500, "internal": 500,
          "client_gone": 499}  # nginx's code for a client that closed first: no one reads it
RETRY_AFTER = {"queue_full": "1", "not_ready": "1", "shutting_down": "5"}  # seconds
LIBRE_FIELDS = {"q", "source", "target", "format", "alternatives", "api_key", "model"}
V1_FIELDS = {"text", "model", "scores"} | set(REQUEST_OPTIONS)


def json_response(body, status: int = 200, headers: Optional[dict] = None) -> Response:
    return Response(json.dumps(body, ensure_ascii=False), status, headers, media_type="application/json")


def error_response(kind: str, message: str) -> Response:
    headers = {"Retry-After": RETRY_AFTER[kind]} if kind in RETRY_AFTER else None
    return json_response({"error": message, "kind": kind}, STATUS[kind], headers)


def bad(message: str) -> ServeError:
    return ServeError("bad_request", message)


# --------------------------------------------------------------------------- request bodies


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refused (413) once it passes `limit` bytes: by Content-Length before reading,
    or while reading a chunked one, so an oversized body is never held whole."""
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        if not declared.isdigit():
            raise bad(f"Content-Length {declared!r} is not a number")
        raise ServeError("too_large", f"the body is {int(declared)} bytes, more than --max-request-bytes {limit}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ServeError("too_large", f"the body is more than --max-request-bytes {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def parse_body(raw: bytes, content_type: str, form_ok: bool) -> dict:
    """A JSON object (or, for LibreTranslate's clients, an urlencoded form) from UTF-8 bytes."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise bad(f"the body is not valid UTF-8 (byte {err.start})") from None
    media = content_type.split(";")[0].strip().lower()
    if media == "application/x-www-form-urlencoded" and text.lstrip().startswith("{"):
        media = "application/json"  # `curl -d '{...}'` without -H: JSON under a form's type
    if form_ok and media == "application/x-www-form-urlencoded":
        form = parse_qs(text, keep_blank_values=True)
        return {k: (v if k == "q" and len(v) > 1 else v[-1]) for k, v in form.items()}
    if media not in ("", "application/json", "text/json"):
        raise ServeError("unsupported_media", f"Content-Type {media}: send application/json"
                         + (" or application/x-www-form-urlencoded" if form_ok else ""))
    try:
        body = json.loads(text)
    except json.JSONDecodeError as err:
        raise bad(f"malformed JSON: {err.msg} at line {err.lineno} column {err.colno}") from None
    if not isinstance(body, dict):
        raise bad(f"the body must be a JSON object, not {type(body).__name__}")
    return body


def text_list(value, field: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(t, str) for t in value):
        raise bad(f"{field}: expected a list of strings")
    for i, t in enumerate(value):
        try:
            t.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate, written as \\udXXX in the JSON
            raise bad(f"{field}[{i}]: not valid Unicode (a lone surrogate)") from None
    return value


def number(body: dict, field: str):
    """A per-request decoding setting, type- and range-checked (bool is no number here)."""
    kind, low, high = REQUEST_OPTIONS[field]
    value = body[field]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and not isinstance(value, int)):
        raise bad(f"{field}: expected {'an integer' if kind is int else 'a number'}, got {json.dumps(value)}")
    if not low <= value <= high:
        raise bad(f"{field}: {value} is outside {low}..{high}")
    return kind(value)


def optional_str(body: dict, field: str) -> Optional[str]:
    value = body.get(field)
    if value is not None and not isinstance(value, str):
        raise bad(f"{field}: expected a string")
    return value


# --------------------------------------------------------------------------- the app


class Server:
    """The endpoints over one Service, and the API keys (none: no key asked for)."""

    def __init__(self, service: Service, api_keys: tuple[bytes, ...] = ()):
        self.service, self.api_keys = service, api_keys
        self.metrics = service.metrics

    def app(self) -> Starlette:
        routes = [Route("/translate", self.endpoint("translate", self.libre), methods=["POST"]),
                  Route("/v1/translate", self.endpoint("v1_translate", self.v1), methods=["POST"]),
                  Route("/health", self.endpoint("health", self.health), methods=["GET"]),
                  Route("/metrics", self.endpoint("metrics", self.prometheus), methods=["GET"]),
                  Route("/v1/models", self.endpoint("models", self.list_models), methods=["GET"]),
                  Route("/languages", self.endpoint("languages", self.languages), methods=["GET"])]
        return Starlette(routes=routes, exception_handlers={HTTPException: self.http_error})

    def endpoint(self, name: str, handler):
        """Refusals become their JSON error; every answer is counted by endpoint and status."""
        async def run(request: Request) -> Response:
            try:
                response = await handler(request)
            except ServeError as err:
                self.metrics.inc("tx_serve_errors_total", (("kind", err.kind),))
                response = error_response(err.kind, str(err))
            except Exception as err:  # a bug of ours: the client gets one line, the log the rest
                import traceback

                traceback.print_exc()
                self.metrics.inc("tx_serve_errors_total", (("kind", "internal"),))
                response = error_response("internal", f"internal error ({type(err).__name__}); see the server's log")
            self.metrics.inc("tx_serve_requests_total", (("endpoint", name), ("status", str(response.status_code))))
            return response
        return run

    async def http_error(self, request: Request, exc: HTTPException) -> Response:
        """Starlette's own 404 and 405, in the same JSON shape."""
        self.metrics.inc("tx_serve_requests_total", (("endpoint", "other"), ("status", str(exc.status_code))))
        message = {404: f"no such endpoint: {request.url.path}",
                   405: f"{request.method} is not allowed on {request.url.path}"}.get(exc.status_code, exc.detail)
        kind = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "bad_request")
        self.metrics.inc("tx_serve_errors_total", (("kind", kind),))
        return json_response({"error": message, "kind": kind}, exc.status_code, exc.headers)

    def check_key(self, request: Request, body: dict) -> None:
        """Any configured key, compared in constant time against every key (no early exit)."""
        if not self.api_keys:
            return
        given = body.get("api_key")
        header = request.headers.get("authorization", "")
        if header.lower().startswith("bearer "):
            given = header[7:].strip()
        given = request.headers.get("x-api-key", given)
        if not isinstance(given, str):
            raise ServeError("unauthorized", "an API key is needed (api_key, or Authorization: Bearer KEY)")
        candidate = given.encode("utf-8", "replace")
        matched = False
        for key in self.api_keys:
            matched |= hmac.compare_digest(candidate, key)
        if not matched:
            raise ServeError("unauthorized", "the API key is not valid")

    async def body(self, request: Request, form_ok: bool) -> dict:
        raw = await read_body(request, self.service.limits.max_request_bytes)
        body = parse_body(raw, request.headers.get("content-type", ""), form_ok)
        self.check_key(request, body)
        return body

    def lines(self, count: int) -> None:
        if count > self.service.limits.max_lines:
            raise ServeError("too_large", f"{count} sentences in one request, more than --max-lines "
                             f"{self.service.limits.max_lines}")

    async def decode(self, request: Request, model, texts: list[str], changes: dict):
        """Queue the lines and wait for them; a client that disconnects first cancels its job."""
        future = asyncio.wrap_future(model.submit(texts, changes))
        if future.done():
            return future.result()
        gone = asyncio.ensure_future(_disconnected(request))
        try:
            await asyncio.wait({future, gone}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            gone.cancel()
        if not future.done():
            future.cancel()  # a job not yet taken is dropped; one being decoded just finishes
            raise ServeError("client_gone", "the client went away")
        return future.result()

    # ------------------------------------------------------------------ endpoints

    async def libre(self, request: Request) -> Response:
        body = await self.body(request, form_ok=True)
        q = body.get("q")
        if q is None:
            raise bad("q: missing (a string or a list of strings)")
        single = isinstance(q, str)
        items = text_list([q] if single else q, "q")
        if body.get("format", "text") not in ("text", None):
            raise bad(f"format: {body['format']!r} is not supported (only text)")
        alternatives = body.get("alternatives", 0)
        if isinstance(alternatives, str) and alternatives.isdigit():  # forms carry strings
            alternatives = int(alternatives)
        if isinstance(alternatives, bool) or not isinstance(alternatives, int) or not 0 <= alternatives <= 15:
            raise bad(f"alternatives: expected an integer 0..15, got {json.dumps(alternatives)}")
        model = self.service.pick(optional_str(body, "model"), optional_str(body, "source"), optional_str(body, "target"))
        # a q with line breaks is translated line by line, as `tx translate` would, and joined again
        pieces = [t.split("\n") for t in items]
        texts = [line for p in pieces for line in p]
        self.lines(len(texts))
        nbest = alternatives + 1
        changes = {"nbest": nbest, "beam": max(nbest, model.beam())} if nbest > 1 else {}
        answer = await self.decode(request, model, texts, changes)
        tok = model.engine.tgt_tok
        outputs, at = [], 0
        for p in pieces:
            hyps = answer.hyps[at:at + len(p)]
            at += len(p)
            outputs.append(["\n".join(tok.decode(h[k].tokens) if len(h) > k else "" for h in hyps)
                            for k in range(nbest)])
        result = {"translatedText": outputs[0][0] if single else [o[0] for o in outputs]}
        if alternatives:
            result["alternatives"] = outputs[0][1:] if single else [o[1:] for o in outputs]
        if answer.truncated:
            result["truncated"] = answer.truncated
            result["warning"] = truncation_note(answer.truncated, model.engine.max_len)
        return json_response(result)

    async def v1(self, request: Request) -> Response:
        body = await self.body(request, form_ok=False)
        unknown = sorted(set(body) - V1_FIELDS - {"api_key"})
        if unknown:
            raise bad(f"{unknown[0]}: unknown field (known: {', '.join(sorted(V1_FIELDS))})")
        if "text" not in body:
            raise bad("text: missing (a list of strings)")
        texts = text_list(body["text"], "text")
        for i, t in enumerate(texts):
            if "\n" in t or "\r" in t:
                raise bad(f"text[{i}]: one sentence per entry (it holds a line break)")
        self.lines(len(texts))
        scores = body.get("scores", True)
        if not isinstance(scores, bool):
            raise bad("scores: expected true or false")
        model = self.service.pick(optional_str(body, "model"))
        changes = {k: number(body, k) for k in REQUEST_OPTIONS if k in body}
        answer = await self.decode(request, model, texts, changes)
        result = {"model": model.name, "results": hypothesis_records(model.engine.tgt_tok, texts, answer, scores),
                  "truncated": answer.truncated}
        note = truncation_note(answer.truncated, model.engine.max_len)
        if note:
            result["warning"] = note
        return json_response(result)

    async def health(self, request: Request) -> Response:
        if not self.service.ready:
            return json_response({"status": "loading"}, 503, {"Retry-After": "1"})
        return json_response({"status": "ready", "models": list(self.service.models)})

    async def prometheus(self, request: Request) -> Response:
        return Response(self.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    async def list_models(self, request: Request) -> Response:
        return json_response({"ready": self.service.ready,
                              "models": [m.info() for m in self.service.models.values()]})

    async def languages(self, request: Request) -> Response:
        """LibreTranslate's list: one entry per source language, with the targets it reaches."""
        pairs: dict[str, list[str]] = {}
        for m in self.service.models.values():
            if m.languages:
                pairs.setdefault(m.languages[0], []).append(m.languages[1])
        return json_response([{"code": s, "name": s, "targets": t} for s, t in pairs.items()])


async def _disconnected(request: Request) -> None:
    """Returns when the client closes the connection (the body has been read: the next ASGI
    message is the disconnect, sent by uvicorn when the socket closes)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


# --------------------------------------------------------------------------- the server


def bind(host: str, port: int):
    """A listening TCP socket. Made with proto IPPROTO_TCP, not socket.create_server's 0: asyncio
    sets TCP_NODELAY only on sockets whose proto says TCP, and without it a response written in
    two parts (head, body) waits for the client's delayed ACK: 40 ms more on every request."""
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(1024)
    except OSError:
        sock.close()
        raise
    return sock


def start_server(app, sock, drain_seconds: float):
    """uvicorn serving `app` on a bound socket, on a thread of its own (so uvicorn installs no
    signal handlers: the caller decides what a signal does, and `server.should_exit = True`
    drains: stop accepting, finish the requests in flight, at most drain_seconds). Returns
    (server, thread)."""
    import threading

    import uvicorn

    # "auto": httptools' parser and uvloop where installed (the serve extra has them), h11 and
    # asyncio's loop else; no access log (a line on stderr per request)
    config = uvicorn.Config(app, loop="auto", http="auto", log_level="warning", access_log=False, lifespan="off",
                            timeout_graceful_shutdown=drain_seconds)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="tx-serve-http", daemon=True)
    thread.start()
    return server, thread
