"""The layers of ARCHITECTURE.md are the code's: every module under txcli/ sits in exactly one layer
of the document's table, no module imports from a layer above its own (imports inside functions
and relative imports included, read with `ast`), no modules import each other in a circle, the
core loads none of the CLI's libraries, and every module path and name the document mentions exists.

The layer table lives in ARCHITECTURE.md ("## Layers"); this file only reads it. Placing a new
module is one line there."""

from __future__ import annotations

import ast
import importlib
import re
import subprocess
import sys
from functools import lru_cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "txcli"
DOC = ROOT / "ARCHITECTURE.md"
CLI_LIBRARIES = ("typer", "rich", "yaml", "pydantic")


# ---------------------------------------------------------------------------------------------
# the layer table, read from ARCHITECTURE.md


def module_name(path: str) -> str:
    """`commands/run.py` -> txcli.commands.run; `cli/__init__.py` -> txcli.cli; `__init__.py` -> txcli."""
    parts = ["txcli", *Path(path).with_suffix("").parts]
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def read_layers(text: str) -> dict[str, str]:
    """module -> layer, from the table under "## Layers": a row names its layer in the first cell
    (an empty cell: the layer of the row above) and its modules as `path.py` in the second.
    Layers are listed top first."""
    section = text.split("\n## Layers", 1)[1].split("\n## ", 1)[0]
    layers: dict[str, str] = {}
    layer = None
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if not line.startswith("|") or len(cells) < 2 or set(cells[0]) <= set("-: ") and cells[0]:
            continue
        if cells[0] == "layer":  # the header
            continue
        layer = cells[0] or layer
        for path in re.findall(r"`([\w/]+\.py)`", cells[1]):
            assert module_name(path) not in layers, f"{path} is placed twice in ARCHITECTURE.md"
            layers[module_name(path)] = layer
    return layers


@lru_cache(maxsize=None)
def layer_table() -> tuple[dict[str, str], list[str]]:
    layers = read_layers(DOC.read_text(encoding="utf-8"))
    order = list(dict.fromkeys(layers.values()))  # top first
    return layers, order


def all_modules() -> dict[str, Path]:
    return {module_name(str(p.relative_to(PACKAGE))): p for p in sorted(PACKAGE.rglob("*.py"))}


# ---------------------------------------------------------------------------------------------
# every import of a module, read with ast


def type_only_imports(tree: ast.AST) -> set[int]:
    """ids of the import nodes under `if TYPE_CHECKING:`: they name a type and never run."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            found.update(id(n) for part in node.body for n in ast.walk(part))
    return found


def imports_of(name: str, path: Path, known: set[str], type_only: bool = True) -> set[str]:
    """The txcli modules `name` imports anywhere in its file (top level, functions, classes),
    relative imports resolved. `from pkg import mod` counts as mod when mod is a module. With
    type_only=False, imports under `if TYPE_CHECKING:` are left out (they never run)."""
    is_package = path.name == "__init__.py"
    package = name if is_package else name.rpartition(".")[0]
    found: set[str] = set()

    def add(target: str, aliases=()) -> None:
        named = [f"{target}.{a}" for a in aliases if f"{target}.{a}" in known]
        if named and len(named) == len(aliases):
            found.update(named)
            return
        while target and target not in known:  # `import txcli.x.y` where y is a name in x
            target = target.rpartition(".")[0]
        if target:
            found.add(target)
            found.update(named)

    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    skip = set() if type_only else type_only_imports(tree)
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == "txcli" or alias.name.startswith("txcli."):
                    add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            elif node.module and (node.module == "txcli" or node.module.startswith("txcli.")):
                target = node.module
            else:
                continue
            add(target, [a.name for a in node.names])
    found.discard(name)
    return found


def import_graph(type_only: bool = True) -> dict[str, set[str]]:
    """module -> the txcli modules it imports; type_only=False: only the imports that run."""
    modules = all_modules()
    known = set(modules)
    return {name: imports_of(name, path, known, type_only) for name, path in modules.items()}


def packages_of(name: str) -> list[str]:
    """The packages whose __init__ runs before `name` does (txcli itself left out)."""
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(2, len(parts))]


def upward_imports(graph: dict[str, set[str]], layers: dict[str, str], order: list[str]) -> list[str]:
    rank = {layer: i for i, layer in enumerate(order)}  # 0: the top
    bad = []
    for name, targets in sorted(graph.items()):
        for target in sorted(targets):
            for reached in [*packages_of(target), target]:
                if reached in layers and name in layers and rank[layers[reached]] < rank[layers[name]]:
                    bad.append(f"{name} ({layers[name]}) imports {reached} ({layers[reached]})")
    return bad


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in graph:
                    continue
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


# ---------------------------------------------------------------------------------------------
# the checks


def test_every_module_sits_in_one_layer_of_the_document():
    layers, order = layer_table()
    modules = set(all_modules())
    assert order[-1] == "core", order
    assert not modules - set(layers), f"in no layer of ARCHITECTURE.md: {sorted(modules - set(layers))}"
    assert not set(layers) - modules, f"ARCHITECTURE.md places modules that do not exist: {sorted(set(layers) - modules)}"


def test_no_module_imports_from_a_layer_above_its_own():
    layers, order = layer_table()
    bad = upward_imports(import_graph(), layers, order)
    assert not bad, "imports against the layers (" + " > ".join(order) + "):\n" + "\n".join(bad)


def test_no_modules_import_each_other_in_a_circle():
    """Imports that run: an annotation's import under `if TYPE_CHECKING:` (model.py naming the
    cache types of kv_cache.py, which builds on the model) is no circle."""
    found = circles(import_graph(type_only=False))
    assert not found, "modules that import each other, directly or round a circle: " + "; ".join(
        " <-> ".join(c) for c in found)


def test_the_import_reader_sees_imports_inside_functions_and_relative_ones(tmp_path):
    """The checks above are only as good as the reader: it finds an import in a function body,
    resolves `..` and `from . import module`, and reports an upward import and a circle."""
    (tmp_path / "core.py").write_text("def f():\n    from .commands import run\n    import txcli.cli.common\n")
    known = {"txcli", "txcli.core", "txcli.commands", "txcli.commands.run", "txcli.cli", "txcli.cli.common"}
    assert imports_of("txcli.core", tmp_path / "core.py", known) == {"txcli.commands.run", "txcli.cli.common"}
    (tmp_path / "run.py").write_text("from ..core import f\nfrom .. import core\n")
    assert imports_of("txcli.commands.run", tmp_path / "run.py", known) == {"txcli.core"}
    graph = {"txcli.core": {"txcli.commands.run"}, "txcli.commands.run": {"txcli.core"}}
    layers = {"txcli.core": "core", "txcli.commands.run": "commands", "txcli.commands": "commands"}
    assert upward_imports(graph, layers, ["commands", "core"]) == [
        "txcli.core (core) imports txcli.commands (commands)", "txcli.core (core) imports txcli.commands.run (commands)"]
    assert circles(graph) == [["txcli.commands.run", "txcli.core"]]


def core_modules() -> list[str]:
    layers, _ = layer_table()
    return sorted(name for name, layer in layers.items() if layer == "core")


@pytest.mark.parametrize("module", core_modules())
def test_core_does_not_load_cli_libraries(module):
    """In a fresh interpreter, importing a core module alone loads none of the CLI's libraries
    and no txcli module outside the core (what an import reader cannot see: a library that
    imports them for us)."""
    layers, _ = layer_table()
    above = sorted(name for name, layer in layers.items() if layer != "core")
    code = (f"import sys; import {module}; "
            f"bad = [m for m in {CLI_LIBRARIES + tuple(above)!r} if m in sys.modules]; "
            "assert not bad, bad")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr


# ---------------------------------------------------------------------------------------------
# the names ARCHITECTURE.md mentions exist

FILE_SUFFIXES = (".yaml", ".safetensors", ".jsonl", ".json", ".log", ".png", ".md", ".txt", ".bin")


@lru_cache(maxsize=None)
def class_members() -> dict[str, set[str]]:
    """class name -> the names defined in its body, for every class in txcli/."""
    members: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef):
                names = members.setdefault(node.name, set())
                for item in ast.walk(node):
                    if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                        names.add(item.name)
                    elif isinstance(item, ast.Name) and isinstance(item.ctx, ast.Store):
                        names.add(item.id)
    return members


@lru_cache(maxsize=None)
def defined_names() -> frozenset[str]:
    """Every name a txcli module defines: functions, classes, assignments, parameters, attributes set."""
    names = set()
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.add(node.name)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                names.add(node.id)
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                names.add(node.attr)
            elif isinstance(node, ast.arg):
                names.add(node.arg)
            elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                names.add(node.target.id)
    return frozenset(names)


def recipe_key(dotted: str) -> bool:
    """`train.init_from`, `decode`: a section or key of the recipe."""
    from txcli.schema import Recipe
    from txcli.schema.loading import _section_type

    model = Recipe
    for part in dotted.split("."):
        if model is None or part not in model.model_fields:
            return False
        model = _section_type(model.model_fields[part].annotation)
    return True


def resolves(dotted: str) -> bool:
    """txcli.<dotted> is a module, or a name inside one (attributes followed)."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module("txcli." + ".".join(parts[:cut]))
        except ImportError:
            continue
        for attr in parts[cut:]:
            if not hasattr(obj, attr):
                return False
            obj = getattr(obj, attr)
        return True
    return False


def doc_mentions(text: str) -> list[str]:
    return re.findall(r"`([^`\n]+)`", text)


def problems_with(mention: str) -> str | None:
    name = mention.strip().lstrip("@").removesuffix("(...)").removesuffix("()").removesuffix(".*")
    if " " in name or "<" in name or name.startswith("-") or name.endswith(FILE_SUFFIXES) or "/" in name and not name.endswith(".py"):
        return None  # a command line, a placeholder, an option, a file a run holds
    if name.endswith(".py"):
        where = ROOT if name.split("/")[0] in ("tests", "bench", "scripts") else PACKAGE
        return None if (where / name).is_file() else f"`{mention}`: no such file {where.relative_to(ROOT) / name}"
    if re.fullmatch(r"[A-Za-z_]\w*(\.\w+)+", name):
        owner, _, member = name.partition(".")
        if owner in class_members() and member in class_members()[owner]:  # `Trainer.fit`
            return None
        return None if resolves(name) or recipe_key(name) else f"`{mention}`: no such module, name or recipe key"
    if re.fullmatch(r"[A-Za-z_]\w*", name):
        known = name in defined_names() or recipe_key(name) or resolves(name)
        return None if known else f"`{mention}`: defined nowhere in txcli/"
    return None


def test_every_module_and_name_the_document_mentions_exists():
    text = DOC.read_text(encoding="utf-8")
    bad = [p for p in map(problems_with, doc_mentions(text)) if p]
    assert not bad, "ARCHITECTURE.md names what is not there:\n" + "\n".join(bad)


def test_the_name_check_catches_stale_names():
    assert problems_with("recipe.load_recipe") is not None and problems_with("decoding.no_such_thing") is not None
    assert problems_with("recipe.py") is not None
    assert problems_with("translation.translate_lines") is None and problems_with("engines/torch_engine.py") is None
    assert problems_with("options.translate_lines") is not None  # moved to translation.py
    assert problems_with("train.init_from") is None and problems_with("recipe.yaml") is None
    assert problems_with("Trainer.fit") is None and problems_with("Trainer.no_such_method") is not None
    assert problems_with("tests/test_layers.py") is None and problems_with("tests/test_nothing.py") is not None
