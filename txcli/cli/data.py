"""`tx data`: what the recipe does to the training data, before any training."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from .common import SetOption, err, load, out, user_errors


@user_errors
def data(
    recipe: Path = typer.Argument(..., help="Recipe YAML file."),
    set_: Optional[List[str]] = SetOption,
    examples: int = typer.Option(3, "--examples", min=0, max=100, help="Pairs shown for each filter that dropped some."),
    sample: Optional[int] = typer.Option(None, "--sample", min=1, help="Read at most the first N pairs of each corpus (default: all)."),
    fmt: str = typer.Option("table", "--format", help="table, or json (every number, on stdout)."),
):
    """Read the training data through the training pipeline without training: per corpus, pairs
    read and kept, what each filter dropped (with examples), subword lengths, the share of the
    training pairs it really gets; and the padding batching will cost.

    Trains the tokenizer into the run directory if there is none, as tx train would.
    """
    import json

    from ..commands.data_report import data_report
    from ..options import check_choice
    from ..views import data_table

    check_choice("--format", fmt, ("table", "json"))
    r = load(recipe, set_)
    with err.status("reading the training data") as status:
        report = data_report(r, examples=examples, sample=sample, progress=status.update)
    if fmt == "json":
        print(json.dumps(report.to_dict(), indent=2, ensure_ascii=False))
    else:
        data_table(out, report.to_dict())
