"""Loading a recipe: YAML read (bounded), `--set` overrides merged, validated, paths resolved against
the recipe's folder, data files checked; every error one line naming the file and the dotted key."""

from __future__ import annotations

import difflib
import typing
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from . import safe_yaml
from ..errors import TxError, UsageError
from .memory import memory_estimate
from .recipe import Recipe

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
        data = raw.get("data") if isinstance(raw, dict) else None
        single = not isinstance(data, dict) or not isinstance(data.get("train"), list)
        raise UsageError(_describe(err, path, overrides, single)) from None
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
    for part, after in zip(parts[:-1], parts[1:]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if isinstance(child, list):  # data.train's corpora: --set data.train.1.weight=2
            if not after.isdigit() or int(after) >= len(child):
                raise UsageError(f"--set {key}: '{part}' is a list of {len(child)} in {path}; "
                                 f"name an item by its number, 0 to {len(child) - 1}")
            child = node[part] = _ListView({str(i): item for i, item in enumerate(child)})
        if not isinstance(child, dict):
            raise UsageError(f"--set {key}: '{part}' is not a section in {path}")
        node = child
    node[parts[-1]] = value
    _lists_back(raw)


class _ListView(dict):
    """A list seen as {"0": item, ...} while an override walks into it; _lists_back undoes it."""


def _lists_back(node) -> None:
    if isinstance(node, dict):
        for k, v in list(node.items()):
            if isinstance(v, _ListView):
                node[k] = [v[str(i)] for i in range(len(v))]
            _lists_back(node[k])
    elif isinstance(node, list):
        for v in node:
            _lists_back(v)


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
    if recipe.data.prepared is not None:
        object.__setattr__(recipe.data, "prepared", resolve(recipe.data.prepared))
    for corpus in [*(recipe.data.train or []), recipe.data.valid, recipe.data.test]:
        if corpus is None:
            continue
        for attr in ("src", "tgt", "path"):
            value = getattr(corpus, attr)
            if value is not None:
                object.__setattr__(corpus, attr, resolve(value))


SNIFF_BYTES = 64 * 1024  # a data file is judged by its head, never read whole here


def _check_files(recipe: Recipe, path: Path) -> None:
    train = recipe.data.train or []
    named = [(f"train.{i}" if len(train) > 1 else "train", c) for i, c in enumerate(train)]
    for split, corpus in named + [("valid", recipe.data.valid), ("test", recipe.data.test)]:
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
# error messages


def _describe(err: ValidationError, path: Path, overrides, single_train: bool = True) -> str:
    """The first validation error as one line: file, dotted key, what is wrong."""
    first = err.errors()[0]
    loc = [str(p) for p in first["loc"]]
    if loc[:3] == ["data", "train", "0"] and single_train:  # written as one corpus, not a list
        del loc[2]
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
        if part.isdigit():  # an item of a list (data.train's corpora)
            continue
        if model is None or part not in model.model_fields:
            return None
        info = model.model_fields[part]
        model = _section_type(info.annotation)
    return info


def _known_keys(loc: list[str]) -> list[str]:
    model: Any = Recipe
    for part in loc:
        if part.isdigit():
            continue
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
