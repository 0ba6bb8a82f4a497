"""`tx serve`: the typer command.

The socket is bound and the HTTP server started before the models load, so `/health` answers
"loading" (503) until they are ready. SIGTERM or SIGINT drain: stop accepting, finish the
requests in flight (at most --drain-seconds), exit 0; a second signal stops at once.
"""

from __future__ import annotations

import signal
import socket
from pathlib import Path
from typing import List, Optional

import typer

from ..errors import TxError, UsageError
from .common import DeviceOpt, EngineOpt, ThreadsOpt, decode_options, err, escape, user_errors, warn


def _need_serve_extra() -> None:
    try:
        import starlette  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        raise UsageError("tx serve needs its HTTP libraries: pip install -e '.[serve]'") from None


def _languages(values: list[str], models: int) -> list[Optional[tuple[str, str]]]:
    pairs = []
    for value in values:
        source, _, target = value.partition(":")
        if not source or not target:
            raise UsageError(f"--languages {value!r}: expected SOURCE:TARGET, e.g. en:de")
        pairs.append((source, target))
    if len(pairs) > models:
        raise UsageError(f"--languages given {len(pairs)} times for {models} model(s): one per RUN_DIR, in order")
    return pairs + [None] * (models - len(pairs))


def _api_keys(key: Optional[str], key_file: Optional[Path]) -> tuple[bytes, ...]:
    keys = [key] if key else []
    if key_file is not None:
        try:
            text = key_file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise UsageError(f"--api-key-file {key_file}: cannot read it ({e})") from None
        keys += [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]
        if not keys:
            raise UsageError(f"--api-key-file {key_file}: no key in it (one a line)")
    return tuple(k.encode("utf-8") for k in keys)


def _bind(host: str, port: int) -> socket.socket:
    from ..commands.http_app import bind

    try:
        return bind(host, port)
    except OSError as e:
        raise TxError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None


def _model_names(run_dirs: list[Path]) -> list[str]:
    names = [Path(p).resolve().name for p in run_dirs]
    for name in names:
        if names.count(name) > 1:
            raise UsageError(f"two RUN_DIRs are named {name!r}: a client picks a model by its directory's name")
    return names


@user_errors
@decode_options
def serve(
    run_dirs: List[Path] = typer.Argument(..., help="Run directory (or checkpoint or `tx export ctranslate2` directory) to serve; several: several models, picked by the request's `model` field (the directory's name), the first by default."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on (0.0.0.0: every interface)."),
    port: int = typer.Option(8080, "--port", min=0, max=65535, help="Port (0: any free one; the address is printed)."),
    max_batch_tokens: int = typer.Option(8192, "--max-batch-tokens", min=1, help="Source tokens of all the requests decoded together in one batch."),
    max_wait_ms: float = typer.Option(5.0, "--max-wait-ms", min=0, max=60000, help="How long a batch waits for more requests, from the oldest one's arrival or the end of the last decode, whichever is later (0: take what has arrived); it starts sooner once as many requests have come back as the last batch answered."),
    max_lines: int = typer.Option(256, "--max-lines", min=1, help="Sentences per request (more: 413)."),
    max_queue: int = typer.Option(2048, "--max-queue", min=1, help="Sentences waiting per model (more: 503 with Retry-After)."),
    max_request_bytes: int = typer.Option(1 << 20, "--max-request-bytes", min=64, help="Body size of a request (more: 413)."),
    api_key: Optional[str] = typer.Option(None, "--api-key", help="Require this key (api_key field, or Authorization: Bearer KEY) on the translate endpoints."),
    api_key_file: Optional[Path] = typer.Option(None, "--api-key-file", help="Require one of the keys in this file (one a line)."),
    languages: Optional[List[str]] = typer.Option(None, "--languages", help="SOURCE:TARGET of each RUN_DIR, in order (repeatable): LibreTranslate clients pick the model by source and target."),
    drain_seconds: float = typer.Option(30.0, "--drain-seconds", min=0, help="On SIGTERM/SIGINT, how long the requests in flight may take to finish."),
    engine: str = EngineOpt,
    device: str = DeviceOpt, threads: Optional[int] = ThreadsOpt,
    decode=None,
):
    """Serve translations over HTTP: LibreTranslate's POST /translate, tx's POST /v1/translate,
    GET /health, /metrics (Prometheus), /v1/models. Requests arriving together are decoded in
    one batch. Runs until SIGTERM or Ctrl-C, which finish the requests in flight."""
    _need_serve_extra()
    from ..commands.http_app import Server, start_server
    from ..commands.serve import Limits, Service
    from ..engines import open_engine

    pairs = _languages(languages or [], len(run_dirs))
    names = _model_names(run_dirs)
    keys = _api_keys(api_key, api_key_file)
    limits = Limits(max_batch_tokens, max_wait_ms, max_lines, max_queue, max_request_bytes)
    service = Service(limits)
    sock = _bind(host, port)
    bound_host, bound_port = sock.getsockname()[:2]
    server, thread = start_server(Server(service, keys).app(), sock, drain_seconds)
    stop = []

    def on_signal(signum, frame):
        stop.append(signal.Signals(signum).name)
        if len(stop) == 1:
            err.print(f"{stop[0]}: finishing the requests in flight (at most {drain_seconds:g} s), then exiting")
            service.drain()  # the batchers stop waiting for requests that will not come
            server.should_exit = True
        else:
            server.force_exit = True

    before = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        where = f"[{bound_host}]" if ":" in bound_host else bound_host
        err.print(f"tx serve: listening on http://{where}:{bound_port} (loading {len(run_dirs)} model(s))",
                  highlight=False)
        for run_dir, name, pair in zip(run_dirs, names, pairs):
            if stop:
                break
            translator = open_engine(engine, run_dir, decode, device, threads)
            warn(translator.warning)
            service.add(name, translator, decode, pair)
        if not stop:
            service.ready = True
            err.print(f"tx serve: ready ({', '.join(escape(n) for n in names)}; engine {engine})", highlight=False)
        while thread.is_alive():
            thread.join(0.5)  # a timeout, so that the signal handler runs promptly
    finally:
        server.should_exit = True
        thread.join(drain_seconds + 5)
        service.close()
        for s, handler in before.items():
            signal.signal(s, handler)
    if not server.started and not stop:  # uvicorn stopped before serving; it said why on stderr
        raise TxError(f"the HTTP server on {host}:{bound_port} did not start")
    answered = int(service.metrics.total("tx_serve_requests_total"))
    err.print(f"tx serve: stopped ({answered} requests answered)")
