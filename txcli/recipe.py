"""Recipes: plain YAML turned into typed, validated objects.

The whole recipe is validated before any work starts, so a typo costs a second, not an hour of
training. Every error names the file and the dotted key path. Relative paths resolve against the
recipe's folder. `--set key=value` overrides are parsed as YAML and merged before validation.
"""

from __future__ import annotations

import difflib
import os
import re
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Optional

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, Strict, ValidationError, field_validator, model_validator
from pydantic.types import AllowInfNan
from pydantic_core import PydanticCustomError

from . import safe_yaml
from .errors import TxError, UsageError
from .model_schema import check_heads_divide

# ---------------------------------------------------------------------------------------------
# numbers: strict, so that `heads: true` is an error and not 1
#
# A bool is never a number. YAML 1.1 reads `3e-4` (no dot) as a string, and recipes write learning
# rates that way, so a string spelling a plain decimal number (digits, optional point, optional
# exponent) is read as that number, in int and float fields alike; any other string is refused.
# An int field takes a whole number however it is spelled (4, 4.0, "1e5"): 4.0 *is* 4; 4.5 is
# refused. inf and nan are refused everywhere.

_NUMBER_TEXT = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")
_DIGITS = re.compile(r"[-+]?\d{1,64}")


def _number_from_text(value: Any) -> Any:
    if isinstance(value, str) and _NUMBER_TEXT.fullmatch(value):
        # float() turns an absurdly long spelling into inf, which is then refused; int() would raise
        return int(value) if _DIGITS.fullmatch(value) else float(value)
    return value


def _whole_number(value: Any) -> Any:
    value = _number_from_text(value)
    if isinstance(value, float) and value.is_integer():
        if abs(value) > 2**53:  # no longer exact as a float, and far past every bound here
            raise PydanticCustomError("number_too_large", "Input is far out of range")
        return int(value)
    return value


Int = Annotated[int, BeforeValidator(_whole_number), Strict()]
Float = Annotated[float, BeforeValidator(_number_from_text), Strict(), AllowInfNan(False)]
Bool = Annotated[bool, Strict()]  # true/false (YAML also reads yes/no, on/off); not 1, not "true"

# Upper bounds: far past any real model or run, low enough that a slip (an extra zero, 10^30)
# is an error here instead of an allocation that takes the machine down. README: Recipes, Limits.
MAX_WIDTH = 16_384  # d_model
MAX_FF = 65_536
MAX_HEADS = 256
MAX_LAYERS = 64
MAX_VOCAB = 1_000_000
MAX_LEN = 65_536  # subword tokens per sentence side
MAX_BATCH_TOKENS = 10_000_000
MAX_STEPS = 1_000_000_000


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class Corpus(Section):
    """A parallel corpus: two aligned plain-text files, or one TSV / JSONL file."""

    src: Optional[Path] = None
    tgt: Optional[Path] = None
    path: Optional[Path] = None
    format: Optional[Literal["text", "tsv", "jsonl"]] = None

    @model_validator(mode="after")
    def _one_layout(self) -> "Corpus":
        if self.path is not None:
            if self.src is not None or self.tgt is not None:
                raise ValueError("give either 'path' (TSV/JSONL) or 'src' and 'tgt', not both")
            if self.format is None:
                suffix = self.path.suffix.lower()
                fmt = {".tsv": "tsv", ".jsonl": "jsonl"}.get(suffix)
                if fmt is None:
                    raise ValueError(f"cannot tell the format of {self.path.name}: set 'format' to tsv or jsonl")
                object.__setattr__(self, "format", fmt)
            if self.format == "text":
                raise ValueError("format 'text' needs 'src' and 'tgt' files, not 'path'")
        else:
            if self.src is None or self.tgt is None:
                raise ValueError("give 'src' and 'tgt' (two aligned text files) or 'path' (one TSV/JSONL file)")
            object.__setattr__(self, "format", "text")
        return self

    def files(self) -> list[Path]:
        return [self.path] if self.path is not None else [self.src, self.tgt]


class DataConfig(Section):
    # optional only in a run's saved recipe: an imported model (tx import) was trained elsewhere;
    # load_recipe requires both of every recipe given to train
    train: Optional[Corpus] = None
    valid: Optional[Corpus] = None
    test: Optional[Corpus] = None
    max_len: Int = Field(128, ge=2, le=MAX_LEN, description=f"longest pair kept, in subword tokens per side (at most {MAX_LEN})")


class TokenizerConfig(Section):
    kind: Literal["bpe", "unigram", "wordpiece", "sentencepiece"] = "bpe"
    vocab_size: Int = Field(8000, ge=16, le=MAX_VOCAB, description=f"subwords (at most {MAX_VOCAB:,})")
    joint: Bool = True
    min_frequency: Int = Field(2, ge=1, le=MAX_STEPS, description="a subword must occur this often")
    lowercase: Bool = False
    model: Optional[Path] = Field(None, description="kind sentencepiece: an existing .model file, loaded instead of trained")

    @model_validator(mode="after")
    def _model_file_kind(self) -> "TokenizerConfig":
        if self.model is not None and self.kind != "sentencepiece":
            raise ValueError("model (an existing .model file) needs kind: sentencepiece")
        return self


class ModelSection(Section):
    d_model: Int = Field(256, ge=8, le=MAX_WIDTH, description=f"model width (at most {MAX_WIDTH})")
    heads: Int = Field(4, ge=1, le=MAX_HEADS, description=f"attention heads (at most {MAX_HEADS})")
    ff: Int = Field(1024, ge=8, le=MAX_FF, description=f"feed-forward width (at most {MAX_FF})")
    encoder_layers: Int = Field(3, ge=1, le=MAX_LAYERS, description=f"at most {MAX_LAYERS}")
    decoder_layers: Int = Field(3, ge=1, le=MAX_LAYERS, description=f"at most {MAX_LAYERS}")
    dropout: Float = Field(0.1, ge=0.0, lt=1.0)
    norm: Literal["pre", "post"] = "pre"
    activation: Literal["relu", "gelu", "silu"] = "relu"
    tie_embeddings: Bool = True
    output_bias: Bool = Field(False, description="a bias on the output projection also when tied "
                                                  "(untied: always); Marian models have one")

    @model_validator(mode="after")
    def _heads_divide(self) -> "ModelSection":
        check_heads_divide(self.d_model, self.heads)
        return self


class EarlyStop(Section):
    metric: Literal["bleu", "chrf", "loss"] = "bleu"
    patience: Int = Field(5, ge=1, le=MAX_STEPS, description="validations without improvement before stopping")


class StopAt(Section):
    """Stop once a validation reaches a quality target (loss: at or below it; bleu/chrf: at or above)."""

    metric: Literal["bleu", "chrf", "loss"] = "bleu"
    value: Float = Field(..., ge=0, le=100, description="the score to reach: BLEU or chrF 0-100, or a loss (at most 100)")


class TrainConfig(Section):
    batch_tokens: Int = Field(4096, ge=16, le=MAX_BATCH_TOKENS, description=f"padded tokens per batch and side (at most {MAX_BATCH_TOKENS:,})")
    accum_steps: Int = Field(1, ge=1, le=10_000, description="batches per update (at most 10,000)")
    lr: Float = Field(5e-4, gt=0, le=10, description="peak learning rate (at most 10)")
    warmup: Int = Field(1000, ge=0, le=MAX_STEPS)
    schedule: Literal["inverse_sqrt", "cosine"] = "inverse_sqrt"
    min_lr: Float = Field(0.0, ge=0, le=10, description="at most 10")
    weight_decay: Float = Field(0.0, ge=0, le=10, description="at most 10")
    betas: tuple[Annotated[Float, Field(ge=0, lt=1)], Annotated[Float, Field(ge=0, lt=1)]] = (0.9, 0.98)
    eps: Float = Field(1e-9, gt=0, le=1)
    clip_norm: Float = Field(1.0, ge=0, le=1e6, description="0 disables clipping")
    label_smoothing: Float = Field(0.1, ge=0, lt=1)
    max_steps: Int = Field(3000, ge=1, le=MAX_STEPS)
    max_minutes: Optional[Float] = Field(None, gt=0, le=1e7, description="stop after this wall time")
    log_every: Int = Field(50, ge=1, le=MAX_STEPS)
    eval_every: Int = Field(250, ge=1, le=MAX_STEPS)
    valid_max_sentences: Optional[Int] = Field(None, ge=1, le=MAX_STEPS, description="decode at most this many for BLEU")
    keep_best: Int = Field(3, ge=1, le=10_000, description="at most 10,000")
    keep_last: Int = Field(3, ge=0, le=10_000, description="also keep the latest N validated checkpoints (for tx average --last)")
    pool_size: Int = Field(50_000, ge=1, le=100_000_000, description="pairs length-sorted into batches at a time; bounds memory")
    early_stop: Optional[EarlyStop] = Field(default_factory=EarlyStop)
    stop_at: Optional[StopAt] = Field(None, description="stop on reaching this validation score")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field("fp32", description="auto: bf16 where the hardware runs it fast, else fp32")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    threads: Optional[Int] = Field(None, ge=1, le=4096)
    tensorboard: Bool = False
    # continued training: start from another run's weights (a run directory, or a checkpoint
    # directory in one); the tokenizer comes from there and the model section must match its
    init_from: Optional[Path] = None
    init_reset: Literal["all", "optimizer", "none"] = Field(
        "all", description="all: only the weights carry over; optimizer: also the step count (so the "
                           "schedule goes on); none: also the AdamW moments")
    ema: Optional[Float] = Field(None, gt=0, lt=1, description="decay of an exponential moving average of "
                                                                "the weights, e.g. 0.999 (off by default)")
    compile: bool | Literal["auto"] = Field(
        "auto", description="torch.compile the model and loss for training; auto: on CUDA only (on CPU eager measured faster)")

    @field_validator("compile", mode="before")
    @classmethod
    def _compile_choice(cls, value):
        if value is True or value is False or value == "auto":
            return value
        raise ValueError("expected true, false or auto")


class DecodeConfig(Section):
    beam: Int = Field(5, ge=1, le=1024, description="at most 1024")
    alpha: Float = Field(0.6, ge=0, le=100, description="GNMT length penalty; 0 turns it off")
    max_len_a: Float = Field(1.2, ge=0, le=1000)
    max_len_b: Int = Field(10, ge=0, le=MAX_LEN)
    min_len: Int = Field(0, ge=0, le=MAX_LEN)
    no_repeat_ngram: Int = Field(0, ge=0, le=MAX_LEN)
    batch_tokens: Int = Field(4096, ge=16, le=MAX_BATCH_TOKENS, description=f"at most {MAX_BATCH_TOKENS:,}")


class Recipe(Section):
    name: str
    run_dir: Path
    seed: Int = Field(1, ge=0, le=2**63 - 1)
    data: DataConfig = Field(default_factory=DataConfig)
    tokenizer: TokenizerConfig = Field(default_factory=TokenizerConfig)
    model: ModelSection = Field(default_factory=ModelSection)
    train: TrainConfig = Field(default_factory=TrainConfig)
    decode: DecodeConfig = Field(default_factory=DecodeConfig)

    @model_validator(mode="after")
    def _cross_checks(self) -> "Recipe":
        if self.train.precision == "fp16" and self.train.device == "cpu":
            raise ValueError("train.precision fp16 needs CUDA; use bf16 on a CPU")
        return self

    def to_plain(self) -> dict:
        """JSON/YAML-able dict with resolved absolute paths: exactly what ran."""
        return self.model_dump(mode="json")


# ---------------------------------------------------------------------------------------------
# loading


def load_recipe(path: str | Path, overrides: list[str] | tuple[str, ...] = (), check_files: bool = True) -> Recipe:
    """Read, override, validate, resolve paths. Raises UsageError with one line naming file and key."""
    path = Path(path)
    raw = _read_yaml(path)
    for item in overrides:
        _apply_override(raw, item, path)
    try:
        recipe = Recipe.model_validate(raw)
    except ValidationError as err:
        raise UsageError(_describe(err, path, overrides)) from None
    for split in ("train", "valid"):
        if getattr(recipe.data, split) is None:
            raise UsageError(f"{path}: data.{split}: required key is missing")
    _resolve_paths(recipe, path.resolve().parent, path)
    if check_files:
        _check_files(recipe, path)
    estimate = memory_estimate(recipe)
    if estimate.too_big:
        raise UsageError(f"{path}: {estimate.describe()}; make the model (model.*, tokenizer.vocab_size) "
                         f"or train.batch_tokens smaller")
    return recipe


def recipe_from_plain(data: dict, origin: str) -> Recipe:
    """Rebuild a recipe saved in a run directory (paths already absolute)."""
    try:
        return Recipe.model_validate(data)
    except ValidationError as err:
        raise UsageError(_describe(err, Path(origin), ())) from None


def read_saved_recipe(path: Path) -> Recipe:
    """The resolved recipe a run directory keeps (recipe.yaml, paths absolute). A file that does
    not read back is damaged: a TxError (exit 1), not a usage mistake."""
    try:
        data = _read_yaml(path)
    except UsageError as err:
        raise TxError(f"{path}: damaged ({str(err).split(': ', 1)[-1]})") from None
    return recipe_from_plain(data, str(path))


def _read_yaml(path: Path) -> dict:
    if not path.is_file():
        raise UsageError(f"{path}: recipe not found")
    try:
        data = safe_yaml.load(safe_yaml.read_text(path))
    except safe_yaml.Refused as err:
        where = f" line {err.line}" if err.line is not None else ""
        raise UsageError(f"{path}:{where}: refused: {err}") from None
    except OSError as err:
        raise UsageError(f"{path}: cannot read the recipe: {err.strerror or err}") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise UsageError(f"{path}:{where}: not valid YAML: {problem}") from None
    except UnicodeDecodeError:
        raise UsageError(f"{path}: not UTF-8 text") from None
    if not isinstance(data, dict):
        raise UsageError(f"{path}: a recipe must be a mapping of sections (data, model, train, ...)")
    return data


def _apply_override(raw: dict, item: str, path: Path) -> None:
    key, sep, text = item.partition("=")
    key = key.strip()
    if not sep or not key:
        raise UsageError(f"--set {item!r}: expected KEY=VALUE, e.g. --set train.lr=3e-4")
    parts = key.split(".")
    if not all(parts):
        raise UsageError(f"--set {item!r}: empty key segment in {key!r}")
    try:
        value = safe_yaml.load(text) if text.strip() else None
    except safe_yaml.Refused as err:
        raise UsageError(f"--set {item!r}: refused: {err}") from None
    except yaml.YAMLError:
        value = text
    node = raw
    for part in parts[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise UsageError(f"--set {key}: '{part}' is not a section in {path}")
        node = child
    node[parts[-1]] = value


def _resolve_paths(recipe: Recipe, base: Path, origin: Path) -> None:
    def resolve(p: Path) -> Path:
        try:
            p = p.expanduser()
            return p if p.is_absolute() else (base / p).resolve()
        except (OSError, RuntimeError) as err:  # ~nosuchuser, a symlink loop
            raise UsageError(f"{origin}: cannot resolve the path {p}: {err}") from None

    recipe.run_dir = resolve(recipe.run_dir)
    if recipe.train.init_from is not None:
        object.__setattr__(recipe.train, "init_from", resolve(recipe.train.init_from))
    if recipe.tokenizer.model is not None:
        object.__setattr__(recipe.tokenizer, "model", resolve(recipe.tokenizer.model))
    for corpus in (recipe.data.train, recipe.data.valid, recipe.data.test):
        if corpus is None:
            continue
        for attr in ("src", "tgt", "path"):
            value = getattr(corpus, attr)
            if value is not None:
                object.__setattr__(corpus, attr, resolve(value))


SNIFF_BYTES = 64 * 1024  # a data file is judged by its head, never read whole here


def _check_files(recipe: Recipe, path: Path) -> None:
    for split in ("train", "valid", "test"):
        corpus = getattr(recipe.data, split)
        if corpus is None:
            continue
        for attr in ("src", "tgt", "path"):
            value = getattr(corpus, attr)
            if value is not None:
                _check_data_file(value, f"{path}: data.{split}.{attr}")
    if recipe.tokenizer.model is not None:
        _check_data_file(recipe.tokenizer.model, f"{path}: tokenizer.model")
    # the first part of run_dir that exists must be a folder, or nothing can be written there
    for part in (recipe.run_dir, *recipe.run_dir.parents):
        if part.exists():
            if not part.is_dir():
                raise UsageError(f"{path}: run_dir: {part} exists and is not a directory")
            break


def _check_data_file(file: Path, where: str) -> None:
    if file.is_dir():
        raise UsageError(f"{where}: a directory, not a file: {file}")
    if not file.exists():
        raise UsageError(f"{where}: file not found: {file}")
    if not file.is_file():  # a FIFO or a device: it could block, or never end
        raise UsageError(f"{where}: not a regular file: {file}")
    try:
        with open(file, "rb") as f:
            head = f.read(SNIFF_BYTES)
    except OSError as err:
        raise UsageError(f"{where}: cannot read {file}: {err.strerror or err}") from None
    if not head:
        raise UsageError(f"{where}: empty file: {file}")
    if len(head) < SNIFF_BYTES and not head.strip():
        raise UsageError(f"{where}: holds only blank lines: {file}")


# ---------------------------------------------------------------------------------------------
# memory, estimated before a model is built (no torch here: `tx recipe check` stays fast)

WARN_SHARE = 0.5  # warn past half the machine's memory; refuse past all of it
ACTIVATION_FLOATS_PER_LAYER = 16  # x d_model, per token and layer: see memory_estimate
LOGIT_FLOATS = 3  # logits, their log-softmax and its gradient, per target token and subword


def parameter_count(recipe: Recipe) -> int:
    """Parameters of the model the recipe builds (txcli/model.py), with a vocabulary of
    tokenizer.vocab_size on each side (the trained one may come out a little smaller)."""
    m, v = recipe.model, recipe.tokenizer.vocab_size
    d, f = m.d_model, m.ff
    attention = 4 * d * d + 4 * d  # fused Q,K,V and the output projection, with biases
    feed_forward = 2 * d * f + f + d
    norm = 2 * d
    encoder_layer = attention + feed_forward + 2 * norm
    decoder_layer = 2 * attention + feed_forward + 3 * norm  # self- and cross-attention
    shared = m.tie_embeddings and recipe.tokenizer.joint
    embeddings = v * d * (1 if shared else 2)
    output = 0 if m.tie_embeddings else v * d + v
    final_norms = 2 * norm if m.norm == "pre" else 0
    return (m.encoder_layers * encoder_layer + m.decoder_layers * decoder_layer
            + embeddings + output + final_norms)


@dataclass(frozen=True)
class MemoryEstimate:
    parameters: int
    state_bytes: int  # weights, gradients, AdamW's two moments
    activation_bytes: int
    machine_bytes: Optional[int]  # None where it cannot be read

    @property
    def total_bytes(self) -> int:
        return self.state_bytes + self.activation_bytes

    @property
    def too_big(self) -> bool:
        return self.machine_bytes is not None and self.total_bytes > self.machine_bytes

    @property
    def warning(self) -> Optional[str]:
        """A line to print when training would take more than half the machine's memory."""
        if self.machine_bytes is None or self.too_big or self.total_bytes <= WARN_SHARE * self.machine_bytes:
            return None
        return self.describe()

    def describe(self) -> str:
        gib = 1 << 30
        of = f" of this machine's {self.machine_bytes / gib:.1f} GiB" if self.machine_bytes else ""
        return (f"training needs about {self.total_bytes / gib:.1f} GiB{of} "
                f"({self.parameters:,} parameters: {self.state_bytes / gib:.1f} GiB for fp32 weights, "
                f"gradients and AdamW state; {self.activation_bytes / gib:.1f} GiB of activations)")


def memory_estimate(recipe: Recipe) -> MemoryEstimate:
    """Training memory, roughly, in fp32 (bf16 and fp16 need less activation memory, not less state):

        state       = 4 bytes x parameters x 4        (weights, gradients, AdamW's m and v)
        activations = 4 bytes x batch_tokens x ((encoder_layers + decoder_layers)
                                                 x (16 x d_model + 2 x ff) + 3 x vocab_size)

    batch_tokens bounds the padded tokens of a batch on each side. Per token, a layer keeps
    about 16 x d_model floats for the backward pass (its inputs, Q/K/V, attention output, norms,
    dropout masks) and 2 x ff for the feed-forward hidden layer and its activation; the output
    layer keeps logits, log-softmax and gradient over the whole vocabulary. Compared with
    total memory: past it the recipe is refused, past half of it `recipe check` and `train` warn.
    """
    m, t = recipe.model, recipe.train
    params = parameter_count(recipe)
    per_token = ((m.encoder_layers + m.decoder_layers) * (ACTIVATION_FLOATS_PER_LAYER * m.d_model + 2 * m.ff)
                 + LOGIT_FLOATS * recipe.tokenizer.vocab_size)
    return MemoryEstimate(parameters=params, state_bytes=4 * 4 * params,
                          activation_bytes=4 * t.batch_tokens * per_token, machine_bytes=machine_memory())


def machine_memory() -> Optional[int]:
    """Total memory in bytes: physical RAM, or the container's cgroup limit if that is lower.
    On CUDA the device is not known when a recipe is checked, so RAM stands in for it."""
    total = None
    try:
        total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, OSError, ValueError):
        try:
            with open("/proc/meminfo") as f:
                for line in f:
                    if line.startswith("MemTotal:"):
                        total = int(line.split()[1]) * 1024
                        break
        except (OSError, ValueError, IndexError):
            pass
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit.isdigit() and (total is None or int(limit) < total):
            total = int(limit)
    except OSError:
        pass
    return total


# ---------------------------------------------------------------------------------------------
# error messages


def _describe(err: ValidationError, path: Path, overrides) -> str:
    """The first validation error as one line: file, dotted key, what is wrong."""
    first = err.errors()[0]
    loc = [str(p) for p in first["loc"]]
    key = ".".join(loc) or "(top level)"
    origin = " (from --set)" if any(o.split("=", 1)[0].strip() == key for o in overrides) else ""
    kind = first["type"]
    if kind == "extra_forbidden":
        known = _known_keys(loc[:-1])
        hint = difflib.get_close_matches(loc[-1], known, n=1, cutoff=0.6)
        suggestion = f" (did you mean '{hint[0]}'?)" if hint else f" (known keys: {', '.join(known)})"
        msg = f"unknown key{suggestion}"
    elif kind == "missing":
        msg = "required key is missing"
    else:
        msg = first["msg"]
        if msg.startswith("Value error, "):
            msg = msg[len("Value error, "):]
        if "input" in first and kind not in ("model_type",) and not isinstance(first["input"], dict):
            msg += f" (got {_shown(first['input'])})"
        if kind in _BOUND_ERRORS:
            info = _field_info(loc)
            if info is not None and info.description:
                msg += f"; {info.description}"
    more = len(err.errors()) - 1
    tail = f" [and {more} more problem{'s' if more > 1 else ''}]" if more else ""
    return f"{path}: {key}{origin}: {msg}{tail}"


_BOUND_ERRORS = {"greater_than", "greater_than_equal", "less_than", "less_than_equal", "number_too_large"}


def _shown(value: Any) -> str:
    """A value as the recipe spells it (true, not True), cut short: the input may be huge."""
    if isinstance(value, bool) or value is None:
        text = yaml.safe_dump(value).split("\n")[0]
    else:
        text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _field_info(loc: list[str]):
    """The pydantic FieldInfo at a dotted location, or None (a tuple item, an unknown key)."""
    model: Any = Recipe
    info = None
    for part in loc:
        if model is None or part not in model.model_fields:
            return None
        info = model.model_fields[part]
        model = _section_type(info.annotation)
    return info


def _known_keys(loc: list[str]) -> list[str]:
    model: Any = Recipe
    for part in loc:
        field = model.model_fields.get(part)
        if field is None:
            return []
        model = _section_type(field.annotation)
        if model is None:
            return []
    return list(model.model_fields)


def _section_type(annotation) -> type | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _section_type(arg)
        if found is not None:
            return found
    return None


def dump_yaml(data: dict) -> str:
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
