"""What every command of the CLI shares: the consoles, our errors turned into one line and an exit code,
the options several commands take, and the decoding flags (`decode_options`)."""

from __future__ import annotations

import functools
import inspect
import sys
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console

from ..errors import TxError

out = Console()
err = Console(stderr=True, highlight=False, soft_wrap=True)

SetOption = typer.Option(
    None, "--set", metavar="KEY=VALUE",
    help="Override a recipe value, e.g. --set model.d_model=512 (repeatable; the value is parsed as YAML).",
)
DeviceOpt = typer.Option("auto", "--device", help="auto, cpu or cuda.")
ThreadsOpt = typer.Option(None, "--threads", min=1, help="CPU threads for the model (default: torch's choice).")
PrecisionOpt = typer.Option("fp32", "--precision", help="fp32, bf16 (autocast; fast only on GPUs and CPUs with AVX512-BF16 or AMX), auto (bf16 where it is fast), or int8 (int8 linear layers, CPU only; with --engine ctranslate2: its compute type).")
EngineOpt = typer.Option("torch", "--engine", help="torch (tx's own model and search) or ctranslate2 (a CTranslate2 export of the run, made on first use into RUN_DIR/ctranslate2/; pip install -e '.[ct2]')")
BatchTokensOpt = typer.Option(None, "--batch-tokens", help="Source tokens (with padding) per batch (default: decode.batch_tokens).")
InputErrorsOpt = typer.Option("strict", "--input-errors", help="Invalid UTF-8 in the input: strict (stop at that line, naming it) or replace (undecodable bytes become U+FFFD, every line goes on; one warning counts them).")


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
            fail(escape(str(e)), e.exit_code)
        except KeyboardInterrupt:
            err.print("interrupted")
            raise typer.Exit(130)
        except BrokenPipeError:
            # the reader of a pipe went away (`tx translate ... | head`): not an error of ours
            sys.stderr.close()
            raise typer.Exit(0)

    return wrapper


def escape(text: str) -> str:
    from rich.markup import escape as rich_escape

    return rich_escape(text)


def warn(message: Optional[str]) -> None:
    if message:
        from ..views import warn as show

        show(err, message)


def load(recipe: Path, overrides: Optional[List[str]], check_files: bool = True):
    from ..schema import load_recipe

    return load_recipe(recipe, overrides or [], check_files=check_files)


def memory_warning(r) -> None:
    """load_recipe refuses a model that cannot fit; one that would take most of the machine is a warning."""
    from ..schema import memory_estimate

    warn(memory_estimate(r).warning)


# --------------------------------------------------------------------------- decoding options
# translate, evaluate and attention-dump share these; None means "the recipe's decode section".

DECODE_OPTIONS = [  # (DecodeOptions field, type, option)
    ("beam", Optional[int], typer.Option(None, "--beam", help="Beam size; 1 is greedy search (default: the recipe's decode.beam).")),
    ("alpha", Optional[float], typer.Option(None, "--alpha", help="GNMT length penalty ((5+len)/6)^alpha; 0 turns it off (default: decode.alpha).")),
    ("max_len_a", Optional[float], typer.Option(None, "--max-len-a", help="Longest output: a x source length + b tokens (default: decode.max_len_a).")),
    ("max_len_b", Optional[int], typer.Option(None, "--max-len-b", help="See --max-len-a (default: decode.max_len_b).")),
    ("min_len", Optional[int], typer.Option(None, "--min-len", help="No end of sentence before this many tokens (default: decode.min_len).")),
    ("no_repeat_ngram", Optional[int], typer.Option(None, "--no-repeat-ngram", help="Never repeat an n-gram of this size; 0 allows it (default: decode.no_repeat_ngram).")),
    ("batch_tokens", Optional[int], BatchTokensOpt),
    ("sample", bool, typer.Option(False, "--sample", help="Sample tokens at random instead of beam search.")),
    ("temperature", float, typer.Option(1.0, "--temperature", help="With --sample: flatten (>1) or sharpen (<1) the distribution.")),
    ("top_k", int, typer.Option(0, "--top-k", help="With --sample: draw from the k likeliest tokens only (0: all).")),
    ("top_p", float, typer.Option(1.0, "--top-p", help="With --sample: draw from the smallest set of tokens holding this probability.")),
    ("seed", int, typer.Option(1, "--seed", help="With --sample: random seed.")),
    ("precision", str, PrecisionOpt),
]


def decode_options(fn):
    """Give a command the shared decoding options: typer sees each as its own parameter, and the
    command receives them as one `decode: DecodeOptions` argument."""
    signature = inspect.signature(fn, eval_str=True)  # real types: typer reads this signature as given
    own = [p for p in signature.parameters.values() if p.name != "decode"]
    shared = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=kind)
              for name, kind, option in DECODE_OPTIONS]

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from ..options import DecodeOptions

        decode = DecodeOptions(**{name: kwargs.pop(name) for name, _, _ in DECODE_OPTIONS})
        return fn(*args, decode=decode, **kwargs)

    wrapper.__signature__ = signature.replace(parameters=own + shared)
    wrapper.__annotations__ = {}  # the signature carries the types
    return wrapper
