"""`tx serve`: a real server on a free loopback port, real HTTP requests.

Most tests run the server in this process (uvicorn on a thread, as `tx serve` runs it) so that a
test can hold the batcher (GatedEngine) and count what is queued: nothing here waits for a
duration to pass, every wait is for an event or a count, with a generous limit. The drain on
SIGTERM and the missing-extra message run the real command in a subprocess.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")

from txcli.commands.http_app import Server, bind, start_server  # noqa: E402
from txcli.commands.serve import Limits, Service  # noqa: E402
from txcli.engines import open_engine  # noqa: E402
from txcli.options import DecodeOptions  # noqa: E402

from .conftest import ROOT, TINY_RECIPE, make_corpus, make_tiny_run  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")
WAIT = 120.0  # seconds any one event may take on a loaded machine before a test gives up
CT2_SAME_LIMIT = ["--max-len-a", "0", "--max-len-b", "8"]  # CTranslate2 has one length limit per batch


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("serve")
    make_corpus(folder)
    (folder / "recipe.yaml").write_text(TINY_RECIPE.format(kind="bpe", joint="true"), encoding="utf-8")
    return make_tiny_run(folder / "recipe.yaml")


def sentences(run_dir: Path, n: int, start: int = 0) -> list[str]:
    return (run_dir.parent / "train.src").read_text(encoding="utf-8").splitlines()[start:start + n]


class GatedEngine:
    """An engine whose decodes wait for `gate` (set it to let them run), so that a test can fill
    the queue while a batch is held. `entered` is set once a decode has started."""

    def __init__(self, engine):
        self.inner, self.gate, self.entered = engine, threading.Event(), threading.Event()

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def translate_rows(self, rows):
        self.entered.set()
        assert self.gate.wait(WAIT), "the test never opened the gate"
        return self.inner.translate_rows(rows)


@contextlib.contextmanager
def serving(run_dirs, engine="torch", decode=None, gated=False, ready=True, api_keys=(), **limits):
    """A server on 127.0.0.1:<free port> over these runs; yields (base URL, service, engines)."""
    decode = decode or DecodeOptions()
    service = Service(Limits(**limits))
    sock = bind("127.0.0.1", 0)
    server, thread = start_server(Server(service, api_keys).app(), sock, drain_seconds=WAIT)
    engines = []
    try:
        for path in run_dirs if isinstance(run_dirs, list) else [run_dirs]:
            translator = open_engine(engine, path, decode, "cpu", 1)
            translator = GatedEngine(translator) if gated else translator
            engines.append(translator)
            service.add(path.name, translator, decode)
        service.ready = ready
        wait_for(lambda: server.started, "the server to start")
        yield f"http://127.0.0.1:{sock.getsockname()[1]}", service, engines
    finally:
        for e in engines:
            if gated:
                e.gate.set()
        server.should_exit = True
        thread.join(WAIT)
        service.close()


def wait_for(condition, what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        assert time.monotonic() < deadline, f"waited {WAIT:g} s for {what}"
        time.sleep(0.01)


def request(base: str, method: str, path: str, body=None, headers=None, timeout: float = WAIT):
    """(status, parsed JSON or text, headers). body: a dict (sent as JSON), bytes, or None."""
    host, port = base.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    data = json.dumps(body).encode() if isinstance(body, dict) else body
    conn.request(method, path, body=data, headers={"Content-Type": "application/json", **(headers or {})})
    response = conn.getresponse()
    raw = response.read()
    conn.close()
    kind = response.getheader("Content-Type", "")
    return response.status, json.loads(raw) if kind.startswith("application/json") else raw.decode(), response


def post(base, path, body, headers=None):
    return request(base, "POST", path, body, headers)


def metric(base: str, name: str, labels: dict | None = None) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    status, text, _ = request(base, "GET", "/metrics")
    assert status == 200
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in (labels or {}).items()):
                total += sample.value
    return total


def tx_translate_jsonl(run_dir: Path, lines: list[str], tmp_path: Path, *flags: str) -> list[dict]:
    """What `tx translate --format jsonl` prints for these lines (the CLI's code, in-process)."""
    from typer.testing import CliRunner

    from txcli.cli import app

    src, out = tmp_path / "in.txt", tmp_path / "out.jsonl"
    src.write_text("\n".join(lines) + "\n", encoding="utf-8")
    result = CliRunner().invoke(app, ["translate", str(run_dir), "-i", str(src), "-o", str(out), "--format", "jsonl",
                                      "--device", "cpu", "--threads", "1", *flags])
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]


# --------------------------------------------------------------------------- answers


@pytest.mark.parametrize("engine", ["torch", "ctranslate2"])
def test_answers_equal_tx_translate_single_and_batched(run_dir, tmp_path, engine):
    if engine == "ctranslate2":
        pytest.importorskip("ctranslate2")
    flags = ["--engine", "ctranslate2", *CT2_SAME_LIMIT] if engine == "ctranslate2" else []
    long = " ".join(["the big dog"] * 40)  # past max_len 32: truncated, as tx translate does
    lines = sentences(run_dir, 12) + ["", long]
    expected = tx_translate_jsonl(run_dir, lines, tmp_path, *flags)
    decode = DecodeOptions(max_len_a=0.0, max_len_b=8) if flags else DecodeOptions()
    with serving(run_dir, engine, decode) as (base, service, _):
        status, one, _ = post(base, "/v1/translate", {"text": lines})
        assert status == 200 and one["results"] == expected
        assert one["truncated"] >= 1 and "truncated" in one["warning"]
        with ThreadPoolExecutor(len(lines)) as pool:  # every line its own request, decoded together
            answers = list(pool.map(lambda t: post(base, "/v1/translate", {"text": [t]}), lines))
        for (status, body, _), record in zip(answers, expected):
            assert status == 200
            assert body["results"][0]["src"] == record["src"] and body["results"][0]["hyps"] == record["hyps"]
        status, libre, _ = post(base, "/translate", {"q": lines, "source": "en", "target": "xx", "format": "text"})
        assert status == 200
        assert libre["translatedText"] == [r["hyps"][0]["text"] if r["hyps"] else "" for r in expected]
        status, libre, _ = post(base, "/translate", {"q": lines[0], "source": "auto", "target": "xx"})
        assert status == 200 and libre["translatedText"] == expected[0]["hyps"][0]["text"]


def test_per_request_settings_equal_the_same_flags(run_dir, tmp_path):
    lines = sentences(run_dir, 6)
    expected = tx_translate_jsonl(run_dir, lines, tmp_path, "--beam", "3", "--nbest", "3", "--alpha", "0.5")
    with serving(run_dir) as (base, _, _):
        status, body, _ = post(base, "/v1/translate", {"text": lines, "beam": 3, "nbest": 3, "alpha": 0.5})
        assert status == 200 and body["results"] == expected
        status, body, _ = post(base, "/v1/translate", {"text": lines[:1], "beam": 3, "nbest": 3, "alpha": 0.5,
                                                      "scores": False})
        assert body["results"][0]["hyps"] == [{"text": h["text"]} for h in expected[0]["hyps"]]
        status, libre, _ = post(base, "/translate", {"q": lines[0], "alternatives": 2, "source": "en", "target": "x"})
        assert status == 200 and len(libre["alternatives"]) == 2
        # a q with line breaks: line by line, joined again
        status, libre, _ = post(base, "/translate", {"q": "\n".join(lines[:2]), "source": "en", "target": "x"})
        plain = tx_translate_jsonl(run_dir, lines[:2], tmp_path)
        assert libre["translatedText"] == "\n".join(r["hyps"][0]["text"] for r in plain)
        # LibreTranslate's Python client (libretranslatepy) posts an urlencoded form, as here
        form = urllib.parse.urlencode({"q": lines[0], "source": "en", "target": "x"}).encode()
        with urllib.request.urlopen(urllib.request.Request(base + "/translate", data=form), timeout=WAIT) as r:
            assert json.loads(r.read())["translatedText"] == plain[0]["hyps"][0]["text"]


def test_32_concurrent_clients_get_their_own_lines_in_order_and_batches_form(run_dir):
    texts = sentences(run_dir, 64)
    mine = [texts[2 * c:2 * c + 2] for c in range(32)]  # client c sends two sentences of its own
    with serving(run_dir, gated=True, max_wait_ms=0) as (base, service, (engine,)):
        with ThreadPoolExecutor(32) as pool:
            futures = [pool.submit(post, base, "/v1/translate", {"text": m}) for m in mine]
            # the first decode is held; once every sentence is accepted, the rest wait together
            wait_for(lambda: metric(base, "tx_serve_lines_total") == 64, "all 64 sentences to be queued")
            engine.gate.set()
            answers = [f.result(WAIT) for f in futures]
        for m, (status, body, _) in zip(mine, answers):
            assert status == 200 and [r["src"] for r in body["results"]] == m
        reference = open_engine("torch", run_dir, DecodeOptions(), "cpu", 1)
        from txcli.translation import translate_lines

        for m, (_, body, _) in zip(mine, answers):
            hyps, _ = translate_lines(reference, m, reference.max_len)
            assert [r["hyps"][0]["text"] for r in body["results"]] == [reference.tgt_tok.decode(h[0].tokens) for h in hyps]
        batches = metric(base, "tx_serve_batch_requests_count")
        alone = metric(base, "tx_serve_batch_requests_bucket", {"le": "1.0"})
        assert batches < 32 and alone < batches, "no batch held more than one request"
        assert metric(base, "tx_serve_requests_total", {"endpoint": "v1_translate", "status": "200"}) == 32


def test_a_batch_waits_for_the_requests_the_last_one_answered_and_no_longer(run_dir):
    """--max-wait-ms longer than the test may take: each batch starts because its token budget
    is full (the first) or because as many requests have come back since the last decode as it
    answered (the second, of two: not as soon as one is back)."""
    from txcli.translation import encode_sources, translate_lines

    engine = open_engine("torch", run_dir, DecodeOptions(), "cpu", 1)
    texts = sentences(run_dir, 10)
    rows, _ = encode_sources(engine.src_tok, texts, engine.max_len)
    budget = sum(len(r) for r in rows[:8])  # the first two requests fill it; the next two do not
    service = Service(Limits(max_batch_tokens=budget, max_wait_ms=10 * WAIT * 1000))
    model = service.add("run", engine, DecodeOptions())
    service.ready = True
    try:
        first = [model.submit(texts[:4]), model.submit(texts[4:8])]
        answers = [f.result(WAIT) for f in first]
        second = [model.submit(texts[8:9])]
        assert model.waiting() == (1, 1)  # one of two back: it waits for the other
        second.append(model.submit(texts[9:10]))
        answers += [f.result(WAIT) for f in second]
    finally:
        service.close()
    batches = service.metrics.histograms["tx_serve_batch_requests"]
    assert (batches.count, batches.sum) == (2, 4)
    expected, _ = translate_lines(engine, texts, engine.max_len)
    got = [h for a in answers for h in a.hyps]
    assert [h[0].tokens for h in got] == [h[0].tokens for h in expected]


# --------------------------------------------------------------------------- refusals


def test_every_bad_input_gets_its_status_and_a_json_error(run_dir):
    good = {"text": ["the dog sees a cat"]}
    cases = [  # (path, body, headers, status, words the error names)
        ("/v1/translate", b'{"text": [', {}, 400, "malformed JSON"),
        ("/v1/translate", b'["a"]', {}, 400, "JSON object"),
        ("/v1/translate", {"text": "a dog"}, {}, 400, "text"),
        ("/v1/translate", {"text": ["a", 3]}, {}, 400, "text"),
        ("/v1/translate", {}, {}, 400, "text: missing"),
        ("/v1/translate", {**good, "beam": "3"}, {}, 400, "beam"),
        ("/v1/translate", {**good, "beam": True}, {}, 400, "beam"),
        ("/v1/translate", {**good, "beam": 0}, {}, 400, "beam"),
        ("/v1/translate", {**good, "beam": 1000}, {}, 400, "beam"),
        ("/v1/translate", {**good, "alpha": []}, {}, 400, "alpha"),
        ("/v1/translate", {**good, "nbest": 3, "beam": 2}, {}, 400, "nbest"),
        ("/v1/translate", {**good, "scores": "yes"}, {}, 400, "scores"),
        ("/v1/translate", {**good, "bream": 3}, {}, 400, "bream"),
        ("/v1/translate", {**good, "model": "nope"}, {}, 400, "model"),
        ("/v1/translate", {"text": ["one\ntwo"]}, {}, 400, "text[0]"),
        ("/v1/translate", b'{"text": ["\\ud800"]}', {}, 400, "text[0]"),
        ("/v1/translate", b'{"text": ["caf\xe9"]}', {}, 400, "UTF-8"),
        ("/v1/translate", {"text": ["a"] * 9}, {}, 413, "--max-lines"),
        ("/v1/translate", {"text": ["a " * 3000]}, {}, 413, "--max-request-bytes"),
        ("/v1/translate", b"text=a", {"Content-Type": "text/plain"}, 415, "Content-Type"),
        ("/translate", {"source": "en", "target": "de"}, {}, 400, "q"),
        ("/translate", {"q": 5}, {}, 400, "q"),
        ("/translate", {"q": "a", "format": "html"}, {}, 400, "format"),
        ("/translate", {"q": "a", "alternatives": -1}, {}, 400, "alternatives"),
        ("/translate", {"q": ["a"] * 9}, {}, 413, "--max-lines"),
    ]
    with serving(run_dir, max_lines=8, max_request_bytes=4096) as (base, _, _):
        for path, body, headers, status, words in cases:
            got, answer, _ = post(base, path, body, headers)
            assert got == status, (path, body, answer)
            assert isinstance(answer, dict) and words in answer["error"], (body, answer)
            assert "Traceback" not in answer["error"]
        for method, path, status in [("GET", "/translate", 405), ("GET", "/nope", 404), ("POST", "/health", 405)]:
            got, answer, _ = request(base, method, path, {} if method == "POST" else None)
            assert got == status and "error" in answer
        chunked = http.client.HTTPConnection("127.0.0.1", int(base.rsplit(":", 1)[1]), timeout=WAIT)
        chunked.request("POST", "/v1/translate", body=iter([b'{"text": ["'] + [b"a " * 1000] * 4 + [b'"]}']),
                        headers={"Content-Type": "application/json"}, encode_chunked=True)
        response = chunked.getresponse()
        assert response.status == 413 and "error" in json.loads(response.read())
        status, answer, _ = post(base, "/v1/translate", good)  # and it still answers
        assert status == 200 and answer["results"][0]["hyps"]
        assert metric(base, "tx_serve_errors_total", {"kind": "bad_request"}) >= 19


def test_full_queue_is_503_with_retry_after_and_a_gone_client_costs_nothing(run_dir):
    texts = sentences(run_dir, 8)
    with serving(run_dir, gated=True, max_queue=4, max_wait_ms=0) as (base, service, (engine,)):
        with ThreadPoolExecutor(4) as pool:
            held = pool.submit(post, base, "/v1/translate", {"text": texts[:1]})
            assert engine.entered.wait(WAIT)  # decoding, held at the gate
            queued = pool.submit(post, base, "/v1/translate", {"text": texts[1:5]})  # fills the queue (4)
            wait_for(lambda: service.models["run"].waiting() == (1, 4), "the queue to fill")
            status, answer, response = post(base, "/v1/translate", {"text": texts[5:6]})
            assert status == 503 and answer["kind"] == "queue_full" and response.getheader("Retry-After") == "1"
            engine.gate.set()
            assert held.result(WAIT)[0] == 200 and queued.result(WAIT)[0] == 200
        # a client that goes away while queued: its job is dropped, never decoded
        engine.gate.clear()
        engine.entered.clear()
        port = int(base.rsplit(":", 1)[1])
        body = json.dumps({"text": texts[6:8]}).encode()
        with ThreadPoolExecutor(2) as pool:
            held = pool.submit(post, base, "/v1/translate", {"text": texts[:1]})
            assert engine.entered.wait(WAIT)
            with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as s:
                s.sendall(b"POST /v1/translate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                          b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
                wait_for(lambda: service.models["run"].waiting()[0] == 1, "the request to queue")
            wait_for(lambda: metric(base, "tx_serve_errors_total", {"kind": "client_gone"}) == 1,
                     "the server to see the client go")
            engine.gate.set()
            assert held.result(WAIT)[0] == 200
        status, _, _ = post(base, "/v1/translate", {"text": texts[:2]})
        assert status == 200
        # decoded: 1 + 4 + 1 + 2 sentences; the gone client's 2 never were
        assert metric(base, "tx_serve_batch_sentences_sum") == 8


def test_api_key_is_required_when_set(run_dir):
    with serving(run_dir, api_keys=(b"k1", b"secret")) as (base, _, _):
        assert post(base, "/translate", {"q": "a dog"})[0] == 401
        assert post(base, "/translate", {"q": "a dog", "api_key": "wrong"})[0] == 401
        assert post(base, "/translate", {"q": "a dog", "api_key": "secret"})[0] == 200
        assert post(base, "/v1/translate", {"text": ["a"]}, {"Authorization": "Bearer k1"})[0] == 200
        assert post(base, "/v1/translate", {"text": ["a"]}, {"Authorization": "Bearer k2"})[0] == 401
        assert request(base, "GET", "/health")[0] == 200  # health and metrics stay open for probes


# --------------------------------------------------------------------------- health, metrics, models


def test_health_is_not_ready_before_the_models_load_and_metrics_parse(run_dir, tmp_path):
    from prometheus_client.parser import text_string_to_metric_families

    second = tmp_path / "other"
    import shutil

    shutil.copytree(run_dir, second)
    with serving([run_dir, second], ready=False) as (base, service, _):
        status, body, response = request(base, "GET", "/health")
        assert status == 503 and body["status"] == "loading" and response.getheader("Retry-After")
        assert post(base, "/translate", {"q": "a dog"})[1]["kind"] == "not_ready"
        assert metric(base, "tx_serve_ready") == 0
        service.ready = True
        status, body, _ = request(base, "GET", "/health")
        assert status == 200 and body == {"status": "ready", "models": ["run", "other"]}
        status, models, _ = request(base, "GET", "/v1/models")
        assert [m["name"] for m in models["models"]] == ["run", "other"] and models["models"][0]["engine"] == "torch"
        status, body, _ = post(base, "/v1/translate", {"text": ["a dog"], "model": "other"})
        assert status == 200 and body["model"] == "other"
        status, text, response = request(base, "GET", "/metrics")
        assert response.getheader("Content-Type").startswith("text/plain")
        families = {f.name: f for f in text_string_to_metric_families(text)}
        for name in ("tx_serve_requests", "tx_serve_lines", "tx_serve_batch_requests", "tx_serve_queue_wait_seconds",
                     "tx_serve_decode_seconds", "tx_serve_errors", "tx_serve_source_tokens"):
            assert name in families, sorted(families)
        assert families["tx_serve_decode_seconds"].type == "histogram"
        assert metric(base, "tx_serve_lines_total", {"model": "other"}) == 1


# --------------------------------------------------------------------------- the command


def test_sigterm_finishes_the_requests_in_flight_and_exits_0(run_dir):
    # --max-wait-ms at its maximum: the queued requests wait until the drain sends them out
    proc = subprocess.Popen([sys.executable, "-m", "txcli", "serve", str(run_dir), "--port", "0", "--threads", "1",
                             "--device", "cpu", "--max-wait-ms", "60000", "--max-batch-tokens", "100000"],
                            stderr=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        base = None
        for line in proc.stderr:
            if "listening on" in line:
                base = line.split("listening on ")[1].split()[0]
            if "ready" in line:
                break
        assert base, "no address printed"
        texts = sentences(run_dir, 8)
        with ThreadPoolExecutor(8) as pool:
            futures = [pool.submit(post, base, "/v1/translate", {"text": [t]}) for t in texts]
            wait_for(lambda: metric(base, "tx_serve_lines_total") == 8, "the requests to be queued")
            assert not any(f.done() for f in futures)  # in flight: waiting for their batch
            proc.send_signal(signal.SIGTERM)
            answers = [f.result(WAIT) for f in futures]
        assert [a[0] for a in answers] == [200] * 8
        assert [a[1]["results"][0]["src"] for a in answers] == texts
        assert proc.wait(WAIT) == 0
        rest = proc.stderr.read()
        assert "stopped" in rest and "Traceback" not in rest
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_without_the_serve_extra_one_line_says_what_to_install(run_dir):
    code = ("import sys; sys.modules['uvicorn'] = None; from txcli.cli import main; "
            f"sys.argv = ['tx', 'serve', {str(run_dir)!r}]; main()")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=WAIT,
                            env={**os.environ, "COLUMNS": "200"})
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "pip install -e '.[serve]'" in result.stderr
