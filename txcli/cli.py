"""The `tx` command line: parsing and printing only.

Heavy modules (torch, tokenizers) are imported inside command bodies, so `tx --help` answers at
once. Errors a user can cause become one line on stderr and a non-zero exit: 2 for a usage or
recipe mistake, 1 for a failure at run time.
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console

from .errors import TxError

app = typer.Typer(
    name="tx",
    help="Train, run and look inside Transformer encoder-decoder translation models.",
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
    add_completion=False,
)
recipe_app = typer.Typer(help="Validate and show recipes.", no_args_is_help=True)
app.add_typer(recipe_app, name="recipe")

out = Console()
err = Console(stderr=True, highlight=False, soft_wrap=True)

SetOption = typer.Option(
    None, "--set", metavar="KEY=VALUE",
    help="Override a recipe value, e.g. --set model.d_model=512 (repeatable; the value is parsed as YAML).",
)


def fail(message: str, code: int) -> None:
    err.print(f"[bold red]error:[/] {message}", markup=True, emoji=False, highlight=False)
    raise typer.Exit(code)


def user_errors(fn):
    """Turn our own errors into one line and an exit code; Ctrl-C into exit 130 without a traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except TxError as e:
            fail(_escape(str(e)), e.exit_code)
        except KeyboardInterrupt:
            err.print("interrupted")
            raise typer.Exit(130)
        except BrokenPipeError:
            # the reader of a pipe went away (`tx translate ... | head`): not an error of ours
            sys.stderr.close()
            raise typer.Exit(0)

    return wrapper


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


def _load(recipe: Path, overrides: Optional[List[str]], check_files: bool = True):
    from .recipe import load_recipe

    return load_recipe(recipe, overrides or [], check_files=check_files)


# ---------------------------------------------------------------------------------------------


@recipe_app.command("check")
@user_errors
def recipe_check(
    recipe: Path = typer.Argument(..., help="Recipe YAML file."),
    set_: Optional[List[str]] = SetOption,
):
    """Validate a recipe (types, values, data files) and print it resolved, defaults filled in."""
    from .recipe import dump_yaml

    r = _load(recipe, set_)
    out.print(dump_yaml(r.to_plain()), markup=False, highlight=False, end="")
    err.print(f"[green]ok[/]: {recipe} is valid; run directory {r.run_dir}")


@app.command("train-tokenizer")
@user_errors
def train_tokenizer(
    recipe: Path = typer.Argument(..., help="Recipe YAML file."),
    set_: Optional[List[str]] = SetOption,
    force: bool = typer.Option(False, "--force", help="Replace the tokenizer even if a model was trained with it."),
):
    """Train the recipe's subword tokenizer(s) on its training data and save them in the run directory."""
    from .commands.tokenize import train_tokenizers

    r = _load(recipe, set_)
    with err.status(f"training {r.tokenizer.kind} tokenizer ({r.tokenizer.vocab_size} subwords)"):
        written = train_tokenizers(r, force=force)
    from .commands.tokenize import load_tokenizers

    src_tok, tgt_tok = load_tokenizers(r.run_dir, r.tokenizer.joint)
    for path in written:
        err.print(f"wrote {path}")
    err.print(f"vocabulary: source {src_tok.vocab_size}, target {tgt_tok.vocab_size}")


@app.command("train")
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
    from .commands.train import describe, train as run_training
    from .progress import train_progress

    r = _load(recipe, set_)
    with train_progress(err, describe) as progress:
        result = run_training(r, resume=resume, progress=progress.event)
    if result.rank != 0:
        return
    if result.best_score is not None:
        err.print(f"best {result.metric} {result.best_score:.2f} at step {result.best_step}: "
                  f"{_escape(str(result.run_dir / 'model.safetensors'))}")
    if result.reason == "interrupted":
        again = " ".join(["tx train", str(recipe), *(f"--set {s}" for s in set_ or []), "--resume"])
        err.print(f"stopped by {result.signal} at step {result.step}; checkpoint saved. "
                  f"Resume with: {_escape(again)}")
        raise typer.Exit(130 if result.signal == "SIGINT" else 143)


@app.command("average")
@user_errors
def average(
    run_dir: Path = typer.Argument(..., help="Run directory."),
    best: Optional[int] = typer.Option(None, "--best", help="Average the N best step checkpoints."),
    last: Optional[int] = typer.Option(None, "--last", help="Average the N latest step checkpoints."),
    output: Optional[Path] = typer.Option(None, "--output", "-o",
                                          help="Where to write (default: RUN_DIR/model.safetensors)."),
):
    """Average the weights of several checkpoints into one model file."""
    from .commands.average import average as run_average

    result = run_average(run_dir, best=best, last=last, output=output)
    steps = ", ".join(str(s) for s in result.steps)
    err.print(f"averaged the {len(result.steps)} {result.how} checkpoints (steps {steps}) into "
              f"{_escape(str(result.output))}")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
