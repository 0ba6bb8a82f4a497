"""int8 against fp32 on a trained model: BLEU and decoding time of the same sentences through
torch fp32, torch int8 with one weight scale per output row (what --precision int8 uses), torch
int8 with one scale per tensor (quantize_dynamic's default, what tx used before), and CTranslate2
fp32 / int8 (CTranslate2 is skipped when it is not installed). Decoding only: the engine is open
and warm, the time covers translate_lines over the whole file. One process, one model, so the
figures compare within the run.

    python bench/int8_quality.py RUN_DIR --src test.en --ref test.de [--beam 5] [--threads 2] [--lines 1000]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--src", type=Path, required=True)
    ap.add_argument("--ref", type=Path, required=True)
    ap.add_argument("--beam", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--lines", type=int, default=1000)
    args = ap.parse_args()

    import sacrebleu
    import torch

    from txcli.engines import open_engine
    from txcli.options import DecodeOptions
    from txcli.quantize import int8_copy
    from txcli.translation import translate_lines

    torch.set_num_threads(args.threads)
    src = args.src.read_text(encoding="utf-8").splitlines()[: args.lines]
    ref = args.ref.read_text(encoding="utf-8").splitlines()[: args.lines]
    configs = [("torch", "fp32", None), ("torch", "int8", "per_channel"), ("torch", "int8", "per_tensor"),
               ("ctranslate2", "fp32", None), ("ctranslate2", "int8", None)]
    print(f"{args.run_dir}, {len(src)} sentences, beam {args.beam}, {args.threads} threads; decoding only")
    for engine_name, precision, scales in configs:
        try:
            engine = open_engine(engine_name, args.run_dir, DecodeOptions(beam=args.beam, precision=precision),
                                 "cpu", args.threads)
        except Exception as err:  # noqa: BLE001 (the bench goes on without that engine)
            print(f"{engine_name} {precision}: skipped ({str(err).splitlines()[0]})")
            continue
        if scales == "per_tensor":  # the same run, re-quantized the old way
            engine.run.model = int8_copy(open_engine("torch", args.run_dir, DecodeOptions(beam=args.beam),
                                                     "cpu", args.threads).run.model, "per_tensor")
        translate_lines(engine, src[:20], engine.max_len)  # warm-up
        start = time.perf_counter()
        found, _ = translate_lines(engine, src, engine.max_len)
        seconds = time.perf_counter() - start
        hyps = [engine.tgt_tok.decode(h[0].tokens) if h else "" for h in found]
        bleu = sacrebleu.corpus_bleu(hyps, [ref]).score
        chrf = sacrebleu.corpus_chrf(hyps, [ref]).score
        label = f"{engine_name} {precision}" + (f" ({scales})" if scales else "")
        print(f"{label:<28} BLEU {bleu:6.2f}  chrF {chrf:6.2f}  {seconds:7.2f} s  {len(src) / seconds:7.1f} sent/s")


if __name__ == "__main__":
    main()
