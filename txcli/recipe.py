"""Recipes: plain YAML turned into typed, validated objects.

The whole recipe is validated before any work starts, so a typo costs a second, not an hour of
training. Every error names the file and the dotted key path. Relative paths resolve against the
recipe's folder. `--set key=value` overrides are parsed as YAML and merged before validation.
"""

from __future__ import annotations

import difflib
import typing
from pathlib import Path
from typing import Any, Literal, Optional

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .errors import TxError, UsageError


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
    train: Corpus
    valid: Corpus
    test: Optional[Corpus] = None
    max_len: int = Field(128, ge=2, description="longest pair kept, in subword tokens per side")


class TokenizerConfig(Section):
    kind: Literal["bpe", "unigram", "wordpiece"] = "bpe"
    vocab_size: int = Field(8000, ge=16)
    joint: bool = True
    min_frequency: int = Field(2, ge=1)
    lowercase: bool = False


class ModelSection(Section):
    d_model: int = Field(256, ge=8)
    heads: int = Field(4, ge=1)
    ff: int = Field(1024, ge=8)
    encoder_layers: int = Field(3, ge=1)
    decoder_layers: int = Field(3, ge=1)
    dropout: float = Field(0.1, ge=0.0, lt=1.0)
    norm: Literal["pre", "post"] = "pre"
    activation: Literal["relu", "gelu"] = "relu"
    tie_embeddings: bool = True

    @model_validator(mode="after")
    def _heads_divide(self) -> "ModelSection":
        if self.d_model % self.heads:
            raise ValueError(f"d_model ({self.d_model}) must be divisible by heads ({self.heads})")
        return self


class EarlyStop(Section):
    metric: Literal["bleu", "chrf", "loss"] = "bleu"
    patience: int = Field(5, ge=1, description="validations without improvement before stopping")


class StopAt(Section):
    """Stop once a validation reaches a quality target (loss: at or below it; bleu/chrf: at or above)."""

    metric: Literal["bleu", "chrf", "loss"] = "bleu"
    value: float


class TrainConfig(Section):
    batch_tokens: int = Field(4096, ge=16)
    accum_steps: int = Field(1, ge=1)
    lr: float = Field(5e-4, gt=0)
    warmup: int = Field(1000, ge=0)
    schedule: Literal["inverse_sqrt", "cosine"] = "inverse_sqrt"
    min_lr: float = Field(0.0, ge=0)
    weight_decay: float = Field(0.0, ge=0)
    betas: tuple[float, float] = (0.9, 0.98)
    eps: float = Field(1e-9, gt=0)
    clip_norm: float = Field(1.0, ge=0, description="0 disables clipping")
    label_smoothing: float = Field(0.1, ge=0, lt=1)
    max_steps: int = Field(3000, ge=1)
    max_minutes: Optional[float] = Field(None, gt=0, description="stop after this wall time")
    log_every: int = Field(50, ge=1)
    eval_every: int = Field(250, ge=1)
    valid_max_sentences: Optional[int] = Field(None, ge=1, description="decode at most this many for BLEU")
    keep_best: int = Field(3, ge=1)
    keep_last: int = Field(3, ge=0, description="also keep the latest N validated checkpoints (for tx average --last)")
    pool_size: int = Field(50_000, ge=1, description="pairs length-sorted into batches at a time; bounds memory")
    early_stop: Optional[EarlyStop] = Field(default_factory=EarlyStop)
    stop_at: Optional[StopAt] = Field(None, description="stop on reaching this validation score")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field("fp32", description="auto: bf16 where the hardware runs it fast, else fp32")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    threads: Optional[int] = Field(None, ge=1)
    tensorboard: bool = False
    compile: bool | Literal["auto"] = Field(
        "auto", description="torch.compile the model and loss for training; auto: on CUDA only (on CPU eager measured faster)")

    @field_validator("compile", mode="before")
    @classmethod
    def _compile_choice(cls, value):
        if value is True or value is False or value == "auto":
            return value
        raise ValueError("expected true, false or auto")


class DecodeConfig(Section):
    beam: int = Field(5, ge=1)
    alpha: float = Field(0.6, ge=0, description="GNMT length penalty; 0 turns it off")
    max_len_a: float = Field(1.2, ge=0)
    max_len_b: int = Field(10, ge=0)
    min_len: int = Field(0, ge=0)
    no_repeat_ngram: int = Field(0, ge=0)
    batch_tokens: int = Field(4096, ge=16)


class Recipe(Section):
    name: str
    run_dir: Path
    seed: int = 1
    data: DataConfig
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
    _resolve_paths(recipe, path.resolve().parent)
    if check_files:
        _check_files(recipe, path)
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
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
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
    try:
        value = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError:
        value = text
    node = raw
    parts = key.split(".")
    for part in parts[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise UsageError(f"--set {key}: '{part}' is not a section in {path}")
        node = child
    node[parts[-1]] = value


def _resolve_paths(recipe: Recipe, base: Path) -> None:
    def resolve(p: Path) -> Path:
        p = p.expanduser()
        return p if p.is_absolute() else (base / p).resolve()

    recipe.run_dir = resolve(recipe.run_dir)
    for corpus in (recipe.data.train, recipe.data.valid, recipe.data.test):
        if corpus is None:
            continue
        for attr in ("src", "tgt", "path"):
            value = getattr(corpus, attr)
            if value is not None:
                object.__setattr__(corpus, attr, resolve(value))


def _check_files(recipe: Recipe, path: Path) -> None:
    for split in ("train", "valid", "test"):
        corpus = getattr(recipe.data, split)
        if corpus is None:
            continue
        for attr in ("src", "tgt", "path"):
            value = getattr(corpus, attr)
            if value is not None and not value.is_file():
                raise UsageError(f"{path}: data.{split}.{attr}: file not found: {value}")


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
            msg += f" (got {first['input']!r})"
    more = len(err.errors()) - 1
    tail = f" [and {more} more problem{'s' if more > 1 else ''}]" if more else ""
    return f"{path}: {key}{origin}: {msg}{tail}"


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
