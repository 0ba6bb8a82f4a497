"""The `tx` command line: parsing and printing only.

Each command turns its options into a request, hands it to `txcli.commands`, and prints what comes
back (through `views` and `progress`). Heavy modules (torch, tokenizers) are imported inside
command bodies, so `tx --help` answers at once. Errors a user can cause become one line on stderr
and a non-zero exit: 2 for a usage or recipe mistake, 1 for a failure at run time.
`tx --help` lists the commands in the order of the work (WORK_ORDER).

One module per group of commands: train.py (recipe check, train-tokenizer, prepare, train, average), data.py (data),
pretrained.py (import), export.py, decode.py (translate, score, evaluate), look.py (attention-dump,
inspect), serve.py;
what they share is in common.py. Every command is registered below, in one place.
"""

from __future__ import annotations

import typer
from typer.core import TyperGroup

from . import data, decode, export, look, pretrained, serve, train
from .common import out

WORK_ORDER = ("recipe", "data", "train-tokenizer", "prepare", "train", "import", "average", "export", "translate", "score", "evaluate",
              "attention-dump", "inspect", "serve")


class InWorkOrder(TyperGroup):
    """`tx --help` lists the commands in the order of the work, not the order typer adds them."""

    def list_commands(self, ctx) -> list[str]:
        names = list(self.commands)
        return sorted(names, key=lambda n: WORK_ORDER.index(n) if n in WORK_ORDER else len(WORK_ORDER))


app = typer.Typer(
    name="tx",
    cls=InWorkOrder,
    help="Train, run and look inside Transformer encoder-decoder translation models.",
    no_args_is_help=True,
    rich_markup_mode="markdown",  # docstring lines join into paragraphs; a blank line separates them
    pretty_exceptions_enable=False,
)
recipe_app = typer.Typer(help="Validate and show recipes.", no_args_is_help=True)
app.add_typer(recipe_app, name="recipe")
export_app = typer.Typer(help="Write a run's model for another inference engine.", no_args_is_help=True)
app.add_typer(export_app, name="export")
import_app = typer.Typer(help="Bring a pretrained model in as a tx run directory.", no_args_is_help=True)
app.add_typer(import_app, name="import")


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        out.print(f"tx {version('txcli')}", highlight=False)
        raise typer.Exit()


@app.callback()
def _main(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print the version and exit.")):
    """Train, run and look inside Transformer encoder-decoder translation models."""


# --------------------------------------------------------------------------- every command, in the order of the work

recipe_app.command("check")(train.recipe_check)
app.command("data")(data.data)
app.command("train-tokenizer")(train.train_tokenizer)
app.command("prepare")(train.prepare)
app.command("train")(train.train)
import_app.command("marian")(pretrained.import_marian)
app.command("average")(train.average)
export_app.command("ctranslate2")(export.export_ctranslate2)
export_app.command("huggingface")(export.export_huggingface)
app.command("translate")(decode.translate)
app.command("score")(decode.score)
app.command("evaluate")(decode.evaluate)
app.command("attention-dump")(look.attention_dump)
app.command("inspect")(look.inspect_run)
app.command("serve")(serve.serve)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
