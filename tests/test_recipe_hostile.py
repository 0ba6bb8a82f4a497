"""Broken and hostile recipes: each is refused in one line naming the file and the key, fast, in
bounded memory, never with a traceback; valid spellings of the same recipe still load."""

from __future__ import annotations

import re
import subprocess
import sys
import typing
from pathlib import Path

import pytest
import yaml
from annotated_types import Ge, Gt, Le, Lt
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from txcli.schema import loading, memory
from txcli.errors import UsageError
from txcli.schema import Recipe, load_recipe, memory_estimate, parameter_count

from .conftest import run_tx

# ---------------------------------------------------------------------------------------------
# every numeric field of the schema, found by walking it, with bool, text and out-of-range values


def _numeric_fields(model: type[BaseModel], prefix: str = ""):
    """(dotted key, number type, lower, upper) for each int/float field, tuples item by item."""
    for name, info in model.model_fields.items():
        key = prefix + name
        section = loading._section_type(info.annotation)
        if section is not None:
            yield from _numeric_fields(section, key + ".")
            continue
        args = [a for a in typing.get_args(info.annotation) if a is not type(None)]
        if typing.get_origin(info.annotation) is tuple:
            for i, item in enumerate(args):
                yield (f"{key}.{i}", *_kind_and_bounds(typing.get_args(item)[0], item.__metadata__))
        else:
            kind = info.annotation if not args else args[0]
            base = typing.get_args(kind)[0] if typing.get_args(kind) else kind
            if base in (int, float):
                yield (key, *_kind_and_bounds(base, info.metadata))


def _kind_and_bounds(kind, metadata):
    low = high = None
    flat = []
    for m in metadata:  # a Field() inside Annotated carries its bounds in its own metadata
        flat.extend(m.metadata if isinstance(m, FieldInfo) else [m])
    for m in flat:
        if isinstance(m, (Ge, Gt)):
            low = (m.ge if isinstance(m, Ge) else m.gt, isinstance(m, Ge))
        if isinstance(m, (Le, Lt)):
            high = (m.le if isinstance(m, Le) else m.lt, isinstance(m, Le))
    return kind, low, high


NUMERIC = list(_numeric_fields(Recipe))


def test_the_walk_finds_the_fields():
    keys = {k for k, *_ in NUMERIC}
    assert {"model.heads", "model.ff", "train.lr", "train.betas.1", "train.max_minutes",
            "decode.alpha", "train.early_stop.patience", "seed", "data.max_len"} <= keys
    missing = [k for k, _, low, high in NUMERIC if low is None or high is None]
    assert not missing, f"numeric fields without both bounds: {missing}"


def _bad_values(kind, low, high):
    yield "bool", True
    yield "text", "fast"
    bound, inclusive = high
    above = bound + 1 if kind is int else (bound * 2 if inclusive else bound)
    yield "above", above
    bound, inclusive = low
    below = bound - 1 if kind is int else (bound - 1 if inclusive else bound)
    yield "below", below
    if kind is int:
        yield "fraction", 2.5
    else:
        yield "infinite", float("inf")


CASES = [(key, what, value) for key, kind, low, high in NUMERIC for what, value in _bad_values(kind, low, high)]


def _set(raw: dict, key: str, value) -> None:
    """Put value at a dotted key, a tuple item by index, creating sections as needed."""
    parts = key.split(".")
    if parts[-1].isdigit():  # train.betas.1
        node = _section(raw, parts[:-2])
        seq = list(node.get(parts[-2], (0.9, 0.98)))
        seq[int(parts[-1])] = value
        node[parts[-2]] = seq
    else:
        _section(raw, parts[:-1])[parts[-1]] = value


def _section(raw: dict, parts: list[str]) -> dict:
    for part in parts:
        raw = raw.setdefault(part, {})
    return raw


@pytest.mark.parametrize("key,what,value", CASES, ids=[f"{k}-{w}" for k, w, _ in CASES])
def test_every_numeric_field_refuses_bad_values(tiny_recipe: Path, key, what, value):
    raw = yaml.safe_load(tiny_recipe.read_text())
    _set(raw, key, value)
    tiny_recipe.write_text(yaml.safe_dump(raw))
    with pytest.raises(UsageError) as e:
        load_recipe(tiny_recipe)
    msg = str(e.value)
    assert msg.startswith(f"{tiny_recipe}: {key}: "), msg
    assert "\n" not in msg


@pytest.mark.parametrize("key", ["model.heads", "model.encoder_layers", "train.warmup", "train.lr",
                                 "decode.alpha", "train.max_minutes"])
def test_bool_from_set_is_not_a_number(tiny_recipe: Path, key):
    with pytest.raises(UsageError, match=re.escape(f"{key} (from --set): Input should be a valid ") + ".*got true"):
        load_recipe(tiny_recipe, [f"{key}=true"])


@pytest.mark.parametrize("key,text,expected", [
    ("train.lr", "3e-4", 3e-4), ("train.lr", "'3e-4'", 3e-4), ("train.lr", "1", 1.0), ("train.lr", "'.5'", 0.5),
    ("model.ff", "64.0", 64), ("model.ff", "'64'", 64), ("train.max_steps", "1e5", 100_000),
    ("train.max_minutes", "null", None), ("train.betas", "[0.9, 0.999]", (0.9, 0.999)),
])
def test_number_spellings_that_are_accepted(tiny_recipe: Path, key, text, expected):
    r = load_recipe(tiny_recipe, [f"{key}={text}"])
    section, name = key.split(".")
    got = getattr(getattr(r, section), name)
    assert got == pytest.approx(expected) if expected is not None else got is None
    if isinstance(expected, int):
        assert type(got) is int


@pytest.mark.parametrize("text", ["'1_000'", "'0x40'", "64 tokens", ".nan", "64.5", "1e30"])
# YAML itself reads 1_000 and 0x40 unquoted as integers; as text they are not numbers here
def test_int_field_refuses_other_spellings(tiny_recipe: Path, text):
    with pytest.raises(UsageError, match=r"model\.ff \(from --set\): "):
        load_recipe(tiny_recipe, [f"model.ff={text}"])


def test_bound_error_shows_the_documented_limit(tiny_recipe: Path):
    with pytest.raises(UsageError, match=r"model\.ff \(from --set\): .*65536.*feed-forward width \(at most 65536\)"):
        load_recipe(tiny_recipe, ["model.ff=1000000000000000000000000000000"])


# ---------------------------------------------------------------------------------------------
# YAML that would exhaust the machine: in a subprocess, under a memory limit and a timeout

MEMORY_LIMIT = 1536 << 20


def _limited():
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


def _check_in_a_box(path: Path, *extra: str, timeout: float = 30):
    return subprocess.run([sys.executable, "-m", "txcli", "recipe", "check", str(path), *extra],
                          capture_output=True, text=True, timeout=timeout, preexec_fn=_limited)


def _billion_laughs(levels: int = 10, width: int = 10) -> str:
    lines = ['a0: &a0 "lol"']
    for i in range(1, levels):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * width) + "]")
    return "name: x\nrun_dir: r\n" + "\n".join(lines) + f"\ndata: *a{levels - 1}\n"


HOSTILE = {
    "deep-flow-lists": ("name: x\nrun_dir: " + "[" * 10_000 + "]" * 10_000 + "\n", "nested deeper than 32 levels"),
    "deep-flow-maps": ("name: x\ndata: " + "{a: " * 10_000 + "1" + "}" * 10_000 + "\n", "nested deeper than 32 levels"),
    "deep-block-lists": ("name: x\ndata:\n  " + "- " * 10_000 + "1\n", "nested deeper than 32 levels"),
    "billion-laughs": (_billion_laughs(), "alias bomb"),
    "merge-key-bomb": ("a0: &a0 {x: 1}\n" + "".join(
        f"a{i}: &a{i} {{<<: [" + ", ".join([f"*a{i - 1}"] * 10) + "]}\n" for i in range(1, 10)), "alias bomb"),
    "alias-cycle": ("name: x\ndata: &d {train: *d}\n", "an alias refers to a node that contains it"),
    "huge-integer": ("name: x\nseed: " + "9" * 100_000 + "\n", "integer of more than 64 digits"),
    "too-large": ("# " + "x" * (1 << 20) + "\nname: x\n", "larger than 1 MiB"),
}


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_yaml_is_refused_fast_in_bounded_memory(tmp_path: Path, name):
    text, needle = HOSTILE[name]
    path = tmp_path / f"{name}.yaml"
    path.write_text(text)
    result = _check_in_a_box(path, timeout=20)
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr[-2000:]
    assert str(path) in lines[0] and needle in lines[0]
    assert "Traceback" not in result.stderr


class CountingReads:
    """A file opened by the code under test, telling `seen(n, data)` about every read."""

    def __init__(self, f, seen):
        self.f, self.seen = f, seen

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.f.close()

    def read(self, n=-1):
        data = self.f.read(n)
        self.seen(n, data)
        return data


def test_hostile_yaml_is_refused_with_work_bounded_by_the_file(tmp_path: Path, monkeypatch):
    """The refusal costs work in proportion to the file, never to what its aliases or nesting would
    expand to: counted, not timed (a clock measures the machine's load as much as the code). The
    counts: bytes read from the file, nodes the composer builds, nodes the measuring walks visit."""
    from txcli.schema import safe_yaml

    work = {"bytes": 0, "composed": 0, "visited": 0}
    real_open, real_children, real_compose = open, safe_yaml._children, safe_yaml._BoundedLoader.compose_node

    def children(node):
        work["visited"] += 1
        return real_children(node)

    def compose_node(self, parent, index):
        work["composed"] += 1
        return real_compose(self, parent, index)

    def count_bytes(n, data):
        work["bytes"] += len(data)

    monkeypatch.setattr(safe_yaml, "open", lambda *a, **k: CountingReads(real_open(*a, **k), count_bytes), raising=False)
    monkeypatch.setattr(safe_yaml, "_children", children)
    monkeypatch.setattr(safe_yaml._BoundedLoader, "compose_node", compose_node)
    for name, (text, needle) in HOSTILE.items():
        path = tmp_path / f"{name}.yaml"
        path.write_text(text)
        work.update(bytes=0, composed=0, visited=0)
        with pytest.raises(UsageError, match=re.escape(needle)):
            load_recipe(path)
        # every node is at least one character of the file; each is composed once and visited
        # by two walks (the count of distinct nodes, the measure), its children once more each
        assert work["bytes"] <= safe_yaml.MAX_BYTES + 1, (name, work)
        assert work["composed"] <= len(text), (name, work)
        assert work["visited"] <= 3 * len(text), (name, work)


def test_recipe_check_does_not_import_torch(tiny_recipe: Path):
    code = ("import sys; from txcli.cli import app\n"
            "try: app(['recipe', 'check', sys.argv[1]])\n"
            "except SystemExit: pass\n"
            "print('torch' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code, str(tiny_recipe)], capture_output=True, text=True, timeout=60)
    assert result.stdout.strip().splitlines()[-1] == "False", result.stderr


@pytest.mark.parametrize("value,needle", [
    ("&a [*a]", "an alias refers to a node that contains it"),
    ("[" * 1000 + "]" * 1000, "nested deeper than 32 levels"),
])
def test_set_values_use_the_bounded_loader(tiny_recipe: Path, value, needle):
    with pytest.raises(UsageError, match=re.escape(f"--set 'data.max_len={value}'") + r".*" + re.escape(needle)):
        load_recipe(tiny_recipe, [f"data.max_len={value}"])


# ---------------------------------------------------------------------------------------------
# --set keys


@pytest.mark.parametrize("item,key", [("data..max_len=96", "data..max_len"), (".max_len=96", ".max_len"),
                                      ("data.max_len.=96", "data.max_len.")])
def test_set_key_with_an_empty_segment(tiny_recipe: Path, item, key):
    with pytest.raises(UsageError) as e:
        load_recipe(tiny_recipe, [item])
    assert str(e.value) == f"--set {item!r}: empty key segment in {key!r}"


# ---------------------------------------------------------------------------------------------
# files that exist but cannot serve


@pytest.mark.parametrize("content,needle", [(b"", "empty file"), (b"\n\n  \r\n", "holds only blank lines")])
@pytest.mark.parametrize("split", ["train", "valid", "test"])
def test_empty_data_file_is_refused(tiny_recipe: Path, split, content, needle):
    empty = tiny_recipe.parent / "empty.src"
    empty.write_bytes(content)
    raw = yaml.safe_load(tiny_recipe.read_text())
    raw["data"][split] = {"src": "empty.src", "tgt": "train.tgt"}
    tiny_recipe.write_text(yaml.safe_dump(raw))
    with pytest.raises(UsageError) as e:
        load_recipe(tiny_recipe)
    assert str(e.value) == f"{tiny_recipe}: data.{split}.src: {needle}: {empty}"


def test_a_large_file_is_judged_by_its_head(tiny_recipe: Path, monkeypatch):
    reads = []
    real_open = open

    monkeypatch.setattr(loading, "open", lambda *a, **k: CountingReads(real_open(*a, **k), lambda n, data: reads.append(n)),
                        raising=False)
    (tiny_recipe.parent / "train.src").write_text("\n" * 200_000 + "late text\n")
    load_recipe(tiny_recipe)  # blank for the first 64 KiB, not blank after: accepted, not read whole
    assert reads and all(0 < n <= loading.SNIFF_BYTES for n in reads)


def test_directory_where_a_file_is_expected(tiny_recipe: Path):
    (tiny_recipe.parent / "adir").mkdir()
    with pytest.raises(UsageError, match=re.escape(f"{tiny_recipe}: data.train.src: a directory, not a file: ")):
        load_recipe(tiny_recipe, ["data.train.src=adir"])


def test_unreadable_data_file_is_named(tiny_recipe: Path, monkeypatch):
    # tests run as root, who can read anything: make open() fail the way a chmod 000 file does
    def denied(file, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(file))

    monkeypatch.setattr(loading, "open", denied, raising=False)
    with pytest.raises(UsageError) as e:
        load_recipe(tiny_recipe)
    assert str(e.value) == f"{tiny_recipe}: data.train.src: cannot read {tiny_recipe.parent / 'train.src'}: Permission denied"


@pytest.mark.parametrize("run_dir", ["train.src", "train.src/run"])
def test_run_dir_that_is_a_file(tiny_recipe: Path, run_dir):
    with pytest.raises(UsageError) as e:
        load_recipe(tiny_recipe, [f"run_dir={run_dir}"])
    assert str(e.value) == f"{tiny_recipe}: run_dir: {tiny_recipe.parent / 'train.src'} exists and is not a directory"


def test_unreadable_recipe_is_named(tmp_path: Path):
    (tmp_path / "r.yaml").mkdir()
    with pytest.raises(UsageError, match="recipe not found"):
        load_recipe(tmp_path / "r.yaml")


# ---------------------------------------------------------------------------------------------
# memory


def test_parameter_count_matches_the_model(tiny_recipe: Path):
    from txcli.commands.run import model_config
    from txcli.model import Seq2SeqTransformer

    for sets in ([], ["model.tie_embeddings=false"], ["tokenizer.joint=false", "model.norm=post"],
                 ["model.output_bias=true"]):
        r = load_recipe(tiny_recipe, sets)
        v = r.tokenizer.vocab_size
        model = Seq2SeqTransformer(model_config(r, v, v))
        assert parameter_count(r) == sum(p.numel() for p in model.parameters()), sets


def test_memory_refused_past_the_machine_and_warned_past_half(tiny_recipe: Path, monkeypatch):
    r = load_recipe(tiny_recipe)
    need = memory_estimate(r).total_bytes
    monkeypatch.setattr(memory, "machine_memory", lambda: need * 4)
    assert memory_estimate(load_recipe(tiny_recipe)).warning is None
    monkeypatch.setattr(memory, "machine_memory", lambda: int(need * 1.5))
    assert "training needs about" in memory_estimate(load_recipe(tiny_recipe)).warning
    monkeypatch.setattr(memory, "machine_memory", lambda: need - 1)
    with pytest.raises(UsageError, match=re.escape(f"{tiny_recipe}: training needs about ") + r".*parameters.*smaller$"):
        load_recipe(tiny_recipe)


def test_memory_estimate_counts_batch_and_vocabulary(tiny_recipe: Path):
    small = memory_estimate(load_recipe(tiny_recipe))
    assert memory_estimate(load_recipe(tiny_recipe, ["train.batch_tokens=512"])).activation_bytes == 2 * small.activation_bytes
    assert memory_estimate(load_recipe(tiny_recipe, ["tokenizer.vocab_size=128"])).state_bytes > small.state_bytes


def test_machine_memory_is_read():
    assert memory.machine_memory() > 1 << 28


def test_largest_model_within_bounds_is_refused_on_memory(tiny_recipe: Path):
    with pytest.raises(UsageError, match="training needs about"):
        load_recipe(tiny_recipe, ["model.d_model=16384", "model.ff=65536", "model.heads=256",
                                  "model.encoder_layers=64", "model.decoder_layers=64"])


# ---------------------------------------------------------------------------------------------
# valid variations still load, to the same recipe


VARIANTS = {
    "flow style": lambda t: yaml.safe_dump(yaml.safe_load(t), default_flow_style=True),
    "comments": lambda t: "# a recipe\n" + t.replace("\n", "  # note\n"),
    "CRLF": lambda t: t.replace("\n", "\r\n"),
    "leading ---": lambda t: "---\n" + t,
    "trailing ...": lambda t: t + "...\n",
    "BOM": lambda t: "\ufeff" + t,
    "alias reuse": lambda t: t.replace("train: {src: train.src, tgt: train.tgt}", "train: &corpus {src: train.src, tgt: train.tgt}")
                               .replace("valid: {src: train.src, tgt: train.tgt}", "valid: *corpus"),
    "quoted numbers": lambda t: t.replace("lr: 3.0e-3", "lr: '3.0e-3'").replace("d_model: 32", 'd_model: "32"'),
    "lr 3e-3": lambda t: t.replace("lr: 3.0e-3", "lr: 3e-3"),
}


@pytest.mark.parametrize("name", list(VARIANTS))
def test_valid_variations_load_the_same(tiny_recipe: Path, name):
    expected = load_recipe(tiny_recipe).to_plain()
    tiny_recipe.write_text(VARIANTS[name](tiny_recipe.read_text()), encoding="utf-8", newline="")
    assert load_recipe(tiny_recipe).to_plain() == expected


# ---------------------------------------------------------------------------------------------
# the CLI: one line, exit 2, no traceback


@pytest.mark.parametrize("args,needle", [
    (["--set", "model.heads=true"], "model.heads (from --set): Input should be a valid integer (got true)"),
    (["--set", "train.batch_tokens=1000000000000000000000000000000"], "train.batch_tokens (from --set): Input should be less than or equal to 10000000"),
    (["--set", "data..max_len=96"], "--set 'data..max_len=96': empty key segment in 'data..max_len'"),
])
def test_cli_one_line_exit_2(tiny_recipe: Path, args, needle):
    result = run_tx("recipe", "check", str(tiny_recipe), *args)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], result.stderr
    assert "Traceback" not in result.stderr
