from __future__ import annotations

from pathlib import Path

import pytest

from txcli.errors import UsageError
from txcli.schema import load_recipe

from .conftest import ROOT, run_tx


@pytest.mark.parametrize("path", sorted((ROOT / "recipes").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_recipe_is_valid(path: Path):
    recipe = load_recipe(path)
    assert recipe.run_dir.is_absolute()
    assert recipe.data.train[0].src is None or recipe.data.train[0].src.is_file()


def test_defaults_and_relative_paths(tiny_recipe: Path):
    r = load_recipe(tiny_recipe)
    assert r.run_dir == tiny_recipe.parent / "run"
    assert r.data.train[0].src == tiny_recipe.parent / "train.src"
    assert r.data.train[0].format == "text"
    assert r.decode.alpha == 0.6  # a default filled in
    assert r.train.schedule == "inverse_sqrt"


def test_override_is_parsed_as_yaml_and_validated(tiny_recipe: Path):
    r = load_recipe(tiny_recipe, ["model.d_model=64", "train.lr=3e-4", "model.norm=post"])
    assert r.model.d_model == 64 and r.train.lr == pytest.approx(3e-4) and r.model.norm == "post"
    with pytest.raises(UsageError, match=r"model\.heads \(from --set\)"):
        load_recipe(tiny_recipe, ["model.heads=zero"])
    with pytest.raises(UsageError, match="KEY=VALUE"):
        load_recipe(tiny_recipe, ["model.heads"])


def _edit(path: Path, old: str, new: str) -> Path:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))
    return path


def test_unknown_key_suggests_the_right_one(tiny_recipe: Path):
    _edit(tiny_recipe, "d_model: 32", "d_modle: 32")
    with pytest.raises(UsageError) as e:
        load_recipe(tiny_recipe)
    msg = str(e.value)
    assert str(tiny_recipe) in msg and "model.d_modle" in msg and "did you mean 'd_model'" in msg


def test_impossible_value(tiny_recipe: Path):
    with pytest.raises(UsageError, match=r"d_model \(30\) must be divisible by heads \(4\)"):
        load_recipe(tiny_recipe, ["model.d_model=30"])


def test_tsv_and_jsonl_layouts(tmp_path: Path):
    (tmp_path / "c.tsv").write_text("a\tb\n")
    (tmp_path / "c.txt").write_text("a\tb\n")
    base = "name: x\nrun_dir: r\ndata:\n  train: {path: c.tsv}\n  valid: {path: %s}\n"
    (tmp_path / "r.yaml").write_text(base % "c.tsv")
    assert load_recipe(tmp_path / "r.yaml").data.valid.format == "tsv"
    (tmp_path / "r.yaml").write_text(base % "c.txt")
    with pytest.raises(UsageError, match=r"data\.valid: .*cannot tell the format of c\.txt"):
        load_recipe(tmp_path / "r.yaml")


# The CLI: one line on stderr, a non-zero exit, no traceback.

@pytest.mark.parametrize(
    "old,new,needle",
    [
        ("d_model: 32", "d_modle: 32", "model.d_modle: unknown key (did you mean 'd_model'?)"),
        ("lr: 3.0e-3", "lr: fast", "train.lr: Input should be a valid number"),
        ("valid: {src: train.src", "valid: {src: missing.src", "data.valid.src: file not found"),
        ("max_len: 32", "max_len: [32", "not valid YAML"),
    ],
)
def test_cli_reports_recipe_mistakes_in_one_line(tiny_recipe: Path, old, new, needle):
    _edit(tiny_recipe, old, new)
    result = run_tx("recipe", "check", str(tiny_recipe))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert needle in lines[0] and str(tiny_recipe) in lines[0]
    assert "Traceback" not in result.stderr


def test_cli_recipe_check_prints_resolved_recipe(tiny_recipe: Path):
    result = run_tx("recipe", "check", str(tiny_recipe), "--set", "train.lr=1e-4")
    assert result.returncode == 0, result.stderr
    assert "lr: 0.0001" in result.stdout and f"run_dir: {tiny_recipe.parent / 'run'}" in result.stdout


def test_missing_recipe_file(tmp_path: Path):
    result = run_tx("recipe", "check", str(tmp_path / "nope.yaml"))
    assert result.returncode == 2 and "recipe not found" in result.stderr


def test_set_reaches_into_a_list_of_corpora(tmp_path: Path):
    from txcli.schema import load_recipe

    for name in ("a.src", "a.tgt", "b.src", "b.tgt", "v.src", "v.tgt"):
        (tmp_path / name).write_text("x\n", encoding="utf-8")
    path = tmp_path / "r.yaml"
    path.write_text("name: r\nrun_dir: run\ndata:\n  train:\n    - {name: a, src: a.src, tgt: a.tgt}\n"
                    "    - {name: b, src: b.src, tgt: b.tgt}\n  valid: {src: v.src, tgt: v.tgt}\n", encoding="utf-8")
    r = load_recipe(path, ["data.train.1.weight=3", "data.train.0.tag=<x>"])
    assert [(c.name, c.weight, c.tag) for c in r.data.train] == [("a", 1.0, "<x>"), ("b", 3.0, None)]
    with pytest.raises(UsageError, match=r"--set data.train.2.weight: 'train' is a list of 2 in .*r.yaml; "
                                         r"name an item by its number, 0 to 1"):
        load_recipe(path, ["data.train.2.weight=3"])
