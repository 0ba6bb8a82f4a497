"""`tx evaluate`: corpus BLEU and chrF (sacrebleu), of a run's translations of a source file or
of a given hypothesis file, against one reference file."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from ..data import read_pairs
from ..errors import UsageError
from ..schema import Corpus, read_saved_recipe
from ..streams import ReplacedLines, chunks, input_errors, open_output
from ..translation import translate_lines


@dataclass
class EvalRequest:
    ref: Optional[Path] = None
    src: Optional[Path] = None  # translate this with the run...
    hyp: Optional[Path] = None  # ...or score these hypotheses
    output: Optional[Path] = None  # save the translations here
    input_errors: str = "strict"  # or replace: invalid UTF-8 in the files


def default_test_files(run_dir: Path, req: EvalRequest) -> EvalRequest:
    """No --src/--hyp/--ref at all: the recipe's test split (two text files)."""
    if req.src or req.hyp or req.ref:
        return req
    recipe_file = Path(run_dir) / "recipe.yaml"
    test = read_saved_recipe(recipe_file).data.test if recipe_file.is_file() else None
    if test is None or test.format != "text":
        raise UsageError("give --src and --ref (or --hyp and --ref): the recipe has no plain-text test split")
    return EvalRequest(ref=test.tgt, src=test.src, output=req.output, input_errors=req.input_errors)


def prepare(run_dirs: list[Path], req: EvalRequest,
            open_engine: Callable[[list[Path]], object]) -> tuple[Optional[object], EvalRequest]:
    """The engine a request needs (none to score a --hyp file), and the request with the recipe's
    test split filled in when no file was given. `open_engine(run_dirs)` opens it: the caller
    chooses which (txcli.engines sits above the commands, which take any engine). Several run
    directories translate as an ensemble (the first run's recipe decides the settings)."""
    if req.hyp is not None:
        return None, req
    if not run_dirs:
        raise UsageError("give a RUN_DIR to translate with, or --hyp FILE --ref FILE")
    translator = open_engine(run_dirs)
    return translator, default_test_files(run_dirs[0], req)


def check_request(req: EvalRequest, have_run: bool) -> None:
    if req.ref is None:
        raise UsageError("--ref is required: the reference translations to compare against")
    if (req.src is None) == (req.hyp is None):
        raise UsageError("give either --src (translate it with RUN_DIR) or --hyp (score a hypothesis file)")
    if req.src is not None and not have_run:
        raise UsageError("--src needs a RUN_DIR to translate with")
    for flag, path in (("--ref", req.ref), ("--src", req.src), ("--hyp", req.hyp)):
        if path is not None and not Path(path).is_file():
            raise UsageError(f"{flag} {path}: file not found")


def translate_file(engine, src: Path, ref: Path, on_progress: Optional[Callable[[int], None]] = None,
                   replaced: Optional[ReplacedLines] = None) -> tuple[list[str], list[str]]:
    """(hypotheses, references): the source translated chunk by chunk; the two files must align."""
    hyps: list[str] = []
    refs: list[str] = []
    pairs = read_pairs(Corpus(src=src, tgt=ref), replaced)
    for chunk in chunks(pairs):
        found, _ = translate_lines(engine, [s for s, _ in chunk], engine.max_len)
        hyps.extend(engine.tgt_tok.decode(h[0].tokens) if h else "" for h in found)
        refs.extend(r for _, r in chunk)
        if on_progress is not None:
            on_progress(len(hyps))
    return hyps, refs


def corpus_scores(hyps: list[str], refs: list[str]) -> dict:
    from sacrebleu.metrics import BLEU, CHRF

    bleu, chrf = BLEU(), CHRF()
    b, c = bleu.corpus_score(hyps, [refs]), chrf.corpus_score(hyps, [refs])
    return {"bleu": round(b.score, 2), "chrf": round(c.score, 2), "sentences": len(hyps),
            "bleu_detail": str(b), "bleu_signature": str(bleu.get_signature()),
            "chrf_signature": str(chrf.get_signature())}


def evaluate(engine, req: EvalRequest, on_progress: Optional[Callable[[int], None]] = None) -> dict:
    """BLEU/chrF and what they were computed on."""
    check_request(req, engine is not None)
    replaced = input_errors(req.input_errors)
    start = time.perf_counter()
    if req.hyp is not None:
        pairs = list(read_pairs(Corpus(src=req.hyp, tgt=req.ref), replaced))
        hyps, refs = [h for h, _ in pairs], [r for _, r in pairs]
    else:
        hyps, refs = translate_file(engine, req.src, req.ref, on_progress, replaced)
        if req.output is not None:
            with open_output(req.output, None) as f:
                f.write("".join(h + "\n" for h in hyps).encode("utf-8"))
    result = corpus_scores(hyps, refs)
    result.update({"reference": str(req.ref), "source": str(req.src) if req.src else None,
                   "hypotheses": str(req.hyp or req.output) if (req.hyp or req.output) else None,
                   "seconds": round(time.perf_counter() - start, 2)})
    if replaced is not None and replaced.counts:
        result["replaced_lines"], result["input_warning"] = replaced.counts, replaced.warning()
    if engine is not None and req.src is not None:
        result["decoding"] = engine.settings()
    return result
