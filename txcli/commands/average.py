"""`tx average`: the element-wise mean of several checkpoints' weights, saved as a model file
that every other command loads like any other (checkpoint averaging, as in fairseq,
OpenNMT-py, Sockeye and Marian)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from .. import checkpoint as ckpt
from ..errors import TxError, UsageError
from ..events import HIGHER_IS_BETTER
from ..model import ModelConfig, Seq2SeqTransformer
from .run import read_run_recipe


@dataclass
class AverageResult:
    output: Path
    steps: list[int]
    how: str


def average(run_dir: Path, best: Optional[int] = None, last: Optional[int] = None,
            output: Optional[Path] = None) -> AverageResult:
    """Average the `best` best or the `last` latest step checkpoints of a run into `output`
    (default: the run's model.safetensors, which later commands load)."""
    if (best is None) == (last is None):
        raise UsageError("give exactly one of --best N or --last N")
    n = best if best is not None else last
    if n < 1:
        raise UsageError(f"--{'best' if best is not None else 'last'} must be at least 1, got {n}")
    run_dir = Path(run_dir)
    read_run_recipe(run_dir)  # a clear error for something that is not a run directory
    found = _checkpoints(run_dir)
    if len(found) < n:
        raise UsageError(f"{run_dir / ckpt.CHECKPOINTS}: {len(found)} step checkpoint(s), {n} asked for "
                         "(more are kept with train.keep_best / train.keep_last)")
    chosen = _best(found, n) if best is not None else found[-n:]
    steps = sorted(step for step, _, _ in chosen)
    config, weights = ckpt.average_state_dicts([path / ckpt.CHECKPOINT_MODEL for _, path, _ in chosen])
    model = _model_from(config, weights, chosen[0][1] / ckpt.CHECKPOINT_MODEL)
    output = Path(output) if output is not None else run_dir / ckpt.MODEL_FILE
    extra = {"tx.averaged_steps": ",".join(map(str, steps))}
    ckpt.save_model(output, model, config, extra)
    return AverageResult(output, steps, "best" if best is not None else "last")


def _checkpoints(run_dir: Path) -> list[tuple[int, Path, dict]]:
    """(step, directory, saved scores) of every step checkpoint, oldest first."""
    out = []
    for step, path in ckpt.list_step_checkpoints(run_dir / ckpt.CHECKPOINTS):
        state = ckpt.read_json(path / ckpt.CHECKPOINT_STATE)
        out.append((step, path, state if isinstance(state, dict) else {}))
    return out


def _best(found: list[tuple[int, Path, dict]], n: int) -> list[tuple[int, Path, dict]]:
    metric = found[-1][2].get("metric", "bleu")
    scored = [c for c in found if isinstance(c[2].get(metric), (int, float))]
    if len(scored) < n:
        raise TxError(f"only {len(scored)} step checkpoint(s) record a {metric} score; cannot pick the best {n}")
    sign = -1 if HIGHER_IS_BETTER.get(metric, True) else 1
    return sorted(scored, key=lambda c: (sign * c[2][metric], -c[0]))[:n]


def _model_from(config: dict, weights: dict, origin: Path) -> Seq2SeqTransformer:
    try:
        model = Seq2SeqTransformer(ModelConfig.from_dict(config))
        model.load_state_dict(weights, strict=True)
    except (ValueError, TypeError, RuntimeError, KeyError) as err:
        raise TxError(f"{origin}: weights do not match their model configuration ({str(err).splitlines()[0]})") from None
    return model
