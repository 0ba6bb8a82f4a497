"""Commands that make a model: `tx recipe check`, `tx train-tokenizer`, `tx prepare`, `tx train`, `tx average`."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from .common import SetOption, err, escape, load, memory_warning, out, user_errors, warn


@user_errors
def recipe_check(
    recipe: Path = typer.Argument(..., help="Recipe YAML file."),
    set_: Optional[List[str]] = SetOption,
):
    """Validate a recipe (types, values, data files) and print it resolved, defaults filled in."""
    from ..schema import dump_yaml, memory_estimate

    r = load(recipe, set_)
    problem = _take_from_source(r)  # before the estimate: a left-out model section is the source's
    out.print(dump_yaml(r.to_plain()), markup=False, highlight=False, end="")
    if problem:  # the source run may be trained after the check: a warning here
        warn(f"{problem}; tx train will refuse this until it is fixed")
    unknown = [s for s in _MODEL_SECTIONS if s not in r.model_fields_set] if r.train.init_from is not None else []
    if unknown:
        err.print(f"[green]ok[/]: {escape(str(recipe))} is valid; run directory {escape(str(r.run_dir))}; "
                  f"memory not estimated: the {' and '.join(unknown)} section(s) are left out, to be taken "
                  f"from train.init_from, which cannot be read yet")
        return
    estimate = memory_estimate(r)
    warn(estimate.warning)
    err.print(f"[green]ok[/]: {escape(str(recipe))} is valid; run directory {escape(str(r.run_dir))}; "
              f"{estimate.parameters:,} parameters, training needs about {estimate.total_bytes / (1 << 30):.1f} GiB")


_MODEL_SECTIONS = ("model", "tokenizer")  # commands.train.MODEL_SECTIONS (that module imports torch)


def _take_from_source(r) -> Optional[str]:
    """With train.init_from: the model and tokenizer sections a recipe leaves out, filled in from
    the run it starts from (as tx train does); the source's problem in words, or None."""
    if r.train.init_from is None:
        return None
    from ..commands.train import init_source
    from ..errors import UsageError

    try:
        init_source(r)
    except UsageError as e:
        return str(e)
    return None


@user_errors
def train_tokenizer(
    recipe: Path = typer.Argument(..., help="Recipe YAML file."),
    set_: Optional[List[str]] = SetOption,
    force: bool = typer.Option(False, "--force", help="Replace the tokenizer even if a model was trained with it."),
):
    """Train the recipe's subword tokenizer(s) on its training data and save them in the run directory."""
    from ..commands.run import load_tokenizers, train_tokenizers

    r = load(recipe, set_)
    with err.status(f"training {r.tokenizer.kind} tokenizer ({r.tokenizer.vocab_size} subwords)"):
        written = train_tokenizers(r, force=force)
    src_tok, tgt_tok = load_tokenizers(r.run_dir, r.tokenizer.joint)
    for path in written:
        err.print(f"wrote {path}")
    err.print(f"vocabulary: source {src_tok.vocab_size}, target {tgt_tok.vocab_size}")


@user_errors
def prepare(
    recipe: Path = typer.Argument(..., help="Recipe YAML file."),
    set_: Optional[List[str]] = SetOption,
    force: bool = typer.Option(False, "--force", help="Rebuild the cache even if it is current."),
):
    """Filter and tokenize the training data once into a memory-mapped cache that `tx train` reads
    (data.prepared, or RUN_DIR/prepared); trains the tokenizer first if the run has none.

    A cache records the source files, tokenizer and filters it was built from: tx train refuses it
    once any of them changes, and tx prepare rebuilds it.
    """
    from ..commands.prepare import prepare as run_prepare
    from ..views import prepare_table

    r = load(recipe, set_)
    with err.status("preparing") as status:
        result = run_prepare(r, force=force, on_corpus=lambda name: status.update(f"preparing corpus {name}"),
                             on_tokenizer=lambda: status.update(f"training {r.tokenizer.kind} tokenizer "
                                                                f"({r.tokenizer.vocab_size} subwords)"))
    if result.tokenizer_trained:
        err.print(f"trained the tokenizer into {escape(str(r.run_dir))}")
    if result.leftovers:
        err.print(f"removed {result.leftovers} half-written cache(s) a killed tx prepare left behind")
    prepare_table(out, result)
    size = f"{result.bytes / 1e6:,.1f} MB"
    if not result.built:
        err.print(f"{escape(str(result.directory))} is current ({size}); --force rebuilds it")
        return
    if result.rebuilt_because:
        err.print(f"rebuilt: {escape(result.rebuilt_because)}")
    err.print(f"wrote {escape(str(result.directory))} ({size}) in {result.seconds:.1f} s")


@user_errors
def train(
    recipe: Path = typer.Argument(..., help="Recipe YAML file."),
    set_: Optional[List[str]] = SetOption,
    resume: bool = typer.Option(False, "--resume", help="Continue from the run directory's last checkpoint."),
):
    """Train a model (and its tokenizer, if the run directory has none) into the recipe's run directory.

    Runs on one process, or on several with DistributedDataParallel under
    `torchrun --nproc_per_node=N $(which tx) train RECIPE`. Ctrl-C saves a checkpoint first.
    """
    from ..process import apply_process_settings

    r = load(recipe, set_)
    apply_process_settings(r.train.threads)  # here, before torch loads OpenMP (commands.train.train again)
    from ..commands.train import train as run_training
    from ..progress import train_progress

    _take_from_source(r)  # a left-out model section is the source run's; its problems are raised below
    memory_warning(r)
    with train_progress(err) as progress:
        result = run_training(r, resume=resume, progress=progress.event)
    if result.rank != 0:
        return
    if result.best_score is not None:
        err.print(f"best {result.metric} {result.best_score:.2f} at step {result.best_step}: "
                  f"{escape(str(result.run_dir / 'model.safetensors'))}")
    if result.reason == "interrupted":
        again = " ".join(["tx train", str(recipe), *(f"--set {s}" for s in set_ or []), "--resume"])
        err.print(f"stopped by {result.signal} at step {result.step}; checkpoint saved. "
                  f"Resume with: {escape(again)}")
        raise typer.Exit(130 if result.signal == "SIGINT" else 143)


@user_errors
def average(
    run_dir: Path = typer.Argument(..., help="Run directory."),
    best: Optional[int] = typer.Option(None, "--best", help="Average the N best step checkpoints."),
    last: Optional[int] = typer.Option(None, "--last", help="Average the N latest step checkpoints."),
    output: Optional[Path] = typer.Option(None, "--output", "-o",
                                          help="Where to write (default: RUN_DIR/model.safetensors)."),
):
    """Average the weights of several checkpoints into one model file."""
    from ..commands.average import average as run_average

    result = run_average(run_dir, best=best, last=last, output=output)
    steps = ", ".join(str(s) for s in result.steps)
    err.print(f"averaged the {len(result.steps)} {result.how} checkpoints (steps {steps}) into "
              f"{escape(str(result.output))}")
