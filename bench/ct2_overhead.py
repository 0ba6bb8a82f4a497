"""What `--engine ctranslate2` costs over calling CTranslate2 directly, in one process.

Both decode the same token rows of a file with the same model: the engine through its own
token-budget batches and per-batch length limits (txcli/engines/ct2_engine.py), the direct call
as one `translate_batch` with CTranslate2's own batching. Each is timed 3 times after a warm-up;
the figure is the ratio of the best times, so a job on the other core in one round does not count.

    .venv/bin/python bench/ct2_overhead.py runs/demo --beam 5
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from txcli.engines import open_engine  # noqa: E402
from txcli.options import DecodeOptions  # noqa: E402
from txcli.translation import encode_sources  # noqa: E402


def best_of(fn, rounds: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--src", type=Path, default=Path("data/demo/test.src"))
    ap.add_argument("--beam", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    engine = open_engine("ctranslate2", args.run_dir, DecodeOptions(beam=args.beam), "cpu", args.threads)
    texts = args.src.read_text(encoding="utf-8").splitlines()
    rows, _ = encode_sources(engine.src_tok, texts, engine.max_len)
    rows = [r for r in rows if r is not None]
    s = engine.s
    source = [[engine.src_tokens[i] for i in r] for r in rows]
    limit = max(engine._limit(len(r)) for r in rows)

    def direct():
        engine.translator.translate_batch(source, max_batch_size=s["batch_tokens"], batch_type="tokens",
                                          beam_size=args.beam, length_penalty=s["alpha"],
                                          max_decoding_length=limit, max_input_length=0)

    engine_s = best_of(lambda: engine.translate_rows(rows), args.rounds)
    direct_s = best_of(direct, args.rounds)
    print(json.dumps({"sentences": len(rows), "beam": args.beam, "engine_s": round(engine_s, 3),
                      "direct_s": round(direct_s, 3), "engine_over_direct": round(engine_s / direct_s, 3)}))


if __name__ == "__main__":
    main()
