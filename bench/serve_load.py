"""`tx serve` under load, on loopback: throughput against `tx translate`, batching on and off,
latency at one client against the decoding time of one sentence, and memory under a flood.

    python bench/serve_load.py /tmp/golden/run [--requests 200] [--threads 1] [--waits 0,5,20] [--clients 1,8,32,128]
                               [--compare /path/to/another/checkout]

- `tx translate`'s figure is its own code (translate_stream over the same sentences, chunked and
  batched as the command does) in this process, timed without the model load: the ceiling. It is
  measured again before each row (the machine's load moves), and so are the same lines decoded
  in groups of as many sentences as there are clients ('groups'): N one-sentence clients make
  batches of at most N, so that is what the server can reach at best; 'x groups' is what the
  server keeps of it.
- --compare: the server of another checkout (run with its .venv's python where it has one) gets
  the same loads, row by row after this one's: a before/after in one run. That checkout's own
  `tx translate` and groups are measured next to each of its rows too (in a process of its own,
  its code), so its 'x translate' and 'x groups' are against its own decoding.
- CPU a sentence, from /proc and the server's tx_serve_decode_cpu_seconds_total: the server
  process (all threads), its decoding thread, and the load generator (this process, all of it).
- each server is the real command (`python -m txcli serve RUN --port 0 ...`), one per
  --max-wait-ms; every client is a coroutine with one keep-alive connection sending one sentence
  per request (`/v1/translate`), the next when the answer is in; a bounded number of requests,
  the first N lines of data/demo/test.src, in order.
- batching off: --max-batch-tokens 1 (a batch is one request), 32 clients.
- one sentence's decoding time: translate_lines on one sentence at a time, in this process; and,
  measured in the server at the same moment as the latencies, the mean time of its batched
  decodes (its tx_serve_decode_seconds histogram): at one client, a batch is one sentence, so
  latency minus that is what serving adds (HTTP, queue, --max-wait-ms).
- flood: --max-queue 32; 10,000 requests from 256 connections; the server's RSS sampled from
  /proc every 20 ms (VmRSS), and its VmHWM.

The load generator shares the machine with the server (raw HTTP/1.1 on asyncio streams: under
0.1 CPU ms a request, its own column), and on a shared machine the figures move between runs:
compare within one run.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import json
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


THREADS = ["--threads", "1"]
TICK = os.sysconf("SC_CLK_TCK")


def start_server(run: Path, *flags: str, tree: Path = ROOT):
    """`tx serve` of this checkout, or of another one (--compare: its .venv's python where it
    has one), on a free port; returns once it is ready."""
    python = tree / ".venv/bin/python" if tree != ROOT and (tree / ".venv/bin/python").exists() else Path(sys.executable)
    proc = subprocess.Popen([str(python), "-m", "txcli", "serve", str(run.resolve()), "--port", "0", *THREADS, *flags],
                            stderr=subprocess.PIPE, text=True, cwd=tree)
    host = port = None
    for line in proc.stderr:
        if "listening on" in line:
            host, port = line.split("http://")[1].split()[0].rsplit(":", 1)
        if "ready" in line:
            break
    else:
        raise SystemExit(f"the server did not start: {proc.stderr.read()}")
    threading.Thread(target=proc.stderr.read, daemon=True).start()  # keep the pipe drained
    return proc, host, int(port)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, all its threads (/proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def stop_server(proc) -> int:
    proc.terminate()
    return proc.wait(120)


async def http_post(reader, writer, body: bytes) -> tuple[int, bytes]:
    writer.write(b"POST /v1/translate HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
                 b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    return status, await reader.readexactly(length)


async def load(host: str, port: int, texts: list[str], clients: int) -> dict:
    """Send every text once (one request each) from `clients` connections; latencies and statuses."""
    todo = iter(range(len(texts)))
    latencies, statuses, answers = [], {}, [None] * len(texts)

    async def client():
        reader, writer = await asyncio.open_connection(host, port)
        for i in todo:
            start = time.perf_counter()
            try:
                status, body = await http_post(reader, writer, json.dumps({"text": [texts[i]]}).encode())
            except (asyncio.IncompleteReadError, ConnectionError):  # closed after a refusal: again
                writer.close()
                reader, writer = await asyncio.open_connection(host, port)
                status, body = 0, b""
            latencies.append(time.perf_counter() - start)
            statuses[status] = statuses.get(status, 0) + 1
            if status == 200:
                hyps = json.loads(body)["results"][0]["hyps"]
                answers[i] = hyps[0]["text"] if hyps else ""
        writer.close()

    start, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(client() for _ in range(clients)))
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    latencies.sort()
    return {"wall": wall, "rate": len(texts) / wall, "statuses": statuses, "answers": answers, "client_cpu": cpu,
            "mean": statistics.fmean(latencies),
            "p50": latencies[len(latencies) // 2], "p99": latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))]}


def scrape(host: str, port: int) -> dict:
    """The server's metrics by name, labelled series summed (histogram sums and counts among them)."""
    import urllib.request

    text = urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=60).read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#") and 'le="' not in line:
            name, value = line.rsplit(" ", 1)
            name = name.split("{")[0]
            out[name] = out.get(name, 0.0) + float(value)
    return out


def rss_kib(pid: int, field: str = "VmRSS") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


class Translate:
    """`tx translate` in this process (the engine loaded once): sentences/s and CPU per sentence
    on the same lines, measured again next to every server measurement."""

    def __init__(self, run: Path, texts: list[str], threads: int):
        from txcli.engines import open_engine
        from txcli.options import DecodeOptions
        from txcli.translation import translate_lines

        self.texts, self.engine = texts, open_engine("torch", run, DecodeOptions(), "cpu", threads)
        translate_lines(self.engine, texts[:8], self.engine.max_len)  # warm-up, as the server has had its first batches
        self.outputs: list[str] = []

    def measure(self) -> tuple[float, float]:
        """(sentences/s, CPU ms per sentence) of translate_stream over the lines."""
        from txcli.commands.translate import Formatter, translate_stream

        source, sink = io.BytesIO(("\n".join(self.texts) + "\n").encode()), io.BytesIO()
        start, cpu = time.perf_counter(), time.process_time()
        translate_stream(self.engine, source, sink, Formatter(self.engine, "text", False))
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu
        self.outputs = sink.getvalue().decode().splitlines()
        return len(self.texts) / wall, 1000 * cpu / len(self.texts)

    def groups(self, size: int) -> float:
        """Sentences/s decoding the lines `size` at a time, as they come (one translate_lines
        call each): what batches of `size` one-sentence requests can reach, the server aside."""
        from txcli.translation import translate_lines

        start = time.perf_counter()
        for i in range(0, len(self.texts), size):
            translate_lines(self.engine, self.texts[i:i + size], self.engine.max_len)
        return len(self.texts) / (time.perf_counter() - start)

    def one_sentence(self, count: int) -> tuple[float, float]:
        """One sentence's decoding time, one at a time: (p50, p99) seconds."""
        from txcli.translation import translate_lines

        singles = []
        for text in self.texts[:count]:
            start = time.perf_counter()
            translate_lines(self.engine, [text], self.engine.max_len)
            singles.append(time.perf_counter() - start)
        singles.sort()
        return singles[len(singles) // 2], singles[int(0.99 * (len(singles) - 1))]


ELSEWHERE = ("import sys, json; from pathlib import Path; sys.path.insert(0, 'bench'); import serve_load as s; "
             "run, source, n, threads, size = sys.argv[1:]; "
             "t = s.Translate(Path(run), Path(source).read_text(encoding='utf-8').splitlines()[:int(n)], int(threads)); "
             "rate, cpu = t.measure(); print(json.dumps([rate, cpu, t.groups(int(size))]))")


def translate_elsewhere(tree: Path, args, clients: int) -> tuple[float, float, float]:
    """Another checkout's Translate (its code, its python as start_server picks it): (sent/s,
    CPU ms a sentence, sent/s in groups of `clients`)."""
    python = tree / ".venv/bin/python" if (tree / ".venv/bin/python").exists() else Path(sys.executable)
    out = subprocess.run([str(python), "-c", ELSEWHERE, str(args.run.resolve()), str(args.source.resolve()),
                          str(args.requests), str(args.threads), str(clients)],
                         cwd=tree, capture_output=True, text=True, check=True).stdout
    return tuple(json.loads(out.splitlines()[-1]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("--source", type=Path, default=ROOT / "data/demo/test.src")
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--latency-requests", type=int, default=50)
    ap.add_argument("--waits", default="0,5,20")
    ap.add_argument("--clients", default="1,8,32,128")
    ap.add_argument("--flood", type=int, default=10_000)
    ap.add_argument("--flood-only", action="store_true", help="only the flood (memory) part")
    ap.add_argument("--threads", type=int, default=1, help="torch threads, server and tx translate alike")
    ap.add_argument("--compare", type=Path, help="another checkout (e.g. main's) whose server is measured "
                    "in the same run, row by row next to this one's")
    args = ap.parse_args()
    THREADS[1] = str(args.threads)
    texts = args.source.read_text(encoding="utf-8").splitlines()[:args.requests]
    if not args.flood_only:
        throughput(args, texts)
    if args.flood > 0:  # --flood 0: the throughput part only
        flood(args, texts)


def serve_once(server, texts: list[str], clients: int, reference: list[str]) -> dict:
    """One load on a running server: the client's figures, and from the server's metrics and
    /proc its batches, decode time and CPU (the whole process, and the decoding thread's)."""
    proc, host, port = server
    before, cpu = scrape(host, port), cpu_seconds(proc.pid)
    r = asyncio.run(load(host, port, texts, clients))
    cpu, after = cpu_seconds(proc.pid) - cpu, scrape(host, port)
    delta = {k: after[k] - before.get(k, 0.0) for k in after}
    batches = delta["tx_serve_decode_seconds_count"]
    r["decode_ms"] = 1000 * delta["tx_serve_decode_seconds_sum"] / batches
    r["per_batch"] = delta["tx_serve_batch_requests_sum"] / batches
    r["server_cpu"] = 1000 * cpu / len(texts)
    decode_cpu = delta.get("tx_serve_decode_cpu_seconds_total")  # absent from an older server (--compare)
    r["decode_cpu"] = "-" if decode_cpu is None else f"{1000 * decode_cpu / len(texts):.1f}"
    r["same"] = sum(a == b for a, b in zip(r["answers"], reference))
    return r


def throughput(args, texts: list[str]) -> None:
    base = Translate(args.run, texts, args.threads)
    rate, cpu = base.measure()
    one_p50, one_p99 = base.one_sentence(args.latency_requests)
    print(f"tx translate (in-process, {len(texts)} sentences): {rate:.1f} sent/s, {cpu:.1f} CPU ms a sentence; "
          f"one sentence alone: p50 {one_p50 * 1000:.1f} ms, p99 {one_p99 * 1000:.1f} ms")
    print("tx translate is measured again before each row (its sent/s: 'translate'), and so are the lines "
          "decoded in groups of as many as there are clients, in this process ('groups': the most that batches "
          "of that many requests can reach); CPU ms a sentence: the server process (all threads), its decoding "
          "thread, the load generator (this process)")
    trees = {"this": ROOT, **({"compare": args.compare.resolve()} if args.compare else {})}
    print("server  max-wait-ms clients  sent/s  translate  x translate  groups  x groups  p50 ms  p99 ms  mean ms  "
          "decode ms  req/batch  server cpu  decoding  client cpu  same outputs")
    best32 = dict.fromkeys(trees, 0.0)
    for wait in args.waits.split(","):
        servers = {name: start_server(args.run, "--max-wait-ms", wait, tree=tree) for name, tree in trees.items()}
        for clients in map(int, args.clients.split(",")):
            sent = texts[:args.latency_requests] if clients == 1 else texts
            now = (rate, cpu) if clients == 1 else base.measure()
            ceiling = base.groups(clients) if clients > 1 else None
            own = {"this": (now, ceiling)}
            if "compare" in trees and clients > 1:
                c_rate, c_cpu, c_groups = translate_elsewhere(trees["compare"], args, clients)
                own["compare"] = ((c_rate, c_cpu), c_groups)
                print(f"compare's own tx translate {c_rate:.1f} sent/s ({c_cpu:.1f} CPU ms a sentence), "
                      f"groups of {clients} {c_groups:.1f} sent/s", flush=True)
            for name, server in servers.items():
                now, ceiling = own.get(name, own["this"])
                if clients == 1:  # a blank line is answered without decoding: what HTTP and JSON cost
                    blank = asyncio.run(load(server[1], server[2], [""] * args.latency_requests, 1))
                    print(f"{name:<7} {wait:>11} {1:>7}  blank lines (no decoding): p50 {blank['p50'] * 1000:.1f} ms, "
                          f"p99 {blank['p99'] * 1000:.1f} ms", flush=True)
                r = serve_once(server, sent, clients, base.outputs)
                if clients >= 32:
                    best32[name] = max(best32[name], r["rate"])
                vs_groups = f"{ceiling:7.1f} {r['rate'] / ceiling:8.2f}x" if ceiling else f"{'-':>7} {'-':>9}"
                print(f"{name:<7} {wait:>11} {clients:>7} {r['rate']:7.1f} {now[0]:10.1f} {r['rate'] / now[0]:11.2f}x "
                      f"{vs_groups} {r['p50'] * 1000:7.1f} {r['p99'] * 1000:7.1f} {r['mean'] * 1000:8.1f} {r['decode_ms']:10.1f} "
                      f"{r['per_batch']:10.1f} {r['server_cpu']:11.1f} {r['decode_cpu']:>9} {r['client_cpu'] * 1000 / len(sent):11.2f}  "
                      f"{r['same']}/{len(sent)}", flush=True)
        for name, server in servers.items():
            print(f"  {name}: exit code after SIGTERM: {stop_server(server[0])}")
    for name, tree in trees.items():
        server = start_server(args.run, "--max-batch-tokens", "1", "--max-wait-ms", "0", tree=tree)
        r = asyncio.run(load(server[1], server[2], texts, 32))
        stop_server(server[0])
        print(f"{name}: batching off (--max-batch-tokens 1), 32 clients: {r['rate']:.1f} sent/s; "
              f"best batched at 32+ clients is {best32[name] / r['rate']:.1f}x that")


def flood(args, texts: list[str]) -> None:
    proc, host, port = start_server(args.run, "--max-queue", "32")
    before = rss_kib(proc.pid)
    samples, done = [], threading.Event()

    def sample():
        while not done.is_set():
            samples.append(rss_kib(proc.pid))
            time.sleep(0.02)

    sampler = threading.Thread(target=sample)
    sampler.start()
    flood = [texts[i % len(texts)] for i in range(args.flood)]
    r = asyncio.run(load(host, port, flood, 256))
    done.set()
    sampler.join()
    after, peak = rss_kib(proc.pid), rss_kib(proc.pid, "VmHWM")
    tenth = max(1, len(samples) // 10)  # flat: the first tenth of the flood already reaches the peak
    print(f"flood: {args.flood} requests from 256 connections, --max-queue 32: statuses {r['statuses']}, "
          f"{r['rate']:.0f} req/s; RSS before {before / 1024:.0f} MiB, max in the first tenth of the flood "
          f"{max(samples[:tenth]) / 1024:.0f} MiB, in the last half {max(samples[len(samples) // 2:]) / 1024:.0f} MiB, "
          f"after {after / 1024:.0f} MiB, VmHWM {peak / 1024:.0f} MiB")
    print(f"  exit code after SIGTERM: {stop_server(proc)}")


if __name__ == "__main__":
    main()
