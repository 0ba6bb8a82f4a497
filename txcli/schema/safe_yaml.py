"""YAML for recipes, bounded: a hostile file is refused before it can exhaust the machine.

PyYAML's safe loader still recurses once per nesting level (10,000 `[` end in RecursionError)
and shares an aliased node instead of copying it, so a "billion laughs" document loads as a
small graph that anything walking it afterwards (validation, printing) expands into 10^10 nodes.
Here the composer refuses nesting past MAX_DEPTH as it goes, and the composed node graph is
measured without recursion, each node once, before anything is constructed: the size and depth
it would have with every alias expanded must stay within bounds, and no alias may refer to a
node that contains it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

MAX_BYTES = 1 << 20  # 1 MiB: recipes are a few hundred bytes
MAX_DEPTH = 32  # levels of nesting, counted with aliases expanded; recipes use three
ALIAS_FACTOR = 10  # aliases may expand a document to at most this many times its own nodes...
ALIAS_SLACK = 1000  # ...plus this many, so a small file can still reuse a section or two
MAX_INT_DIGITS = 64  # Python refuses to parse integers of more than 4300 digits with a ValueError

_INT_TAG = "tag:yaml.org,2002:int"


class Refused(Exception):
    """A document past one of the bounds. `line` is 1-based where the parser knows it."""

    def __init__(self, message: str, line: int | None = None):
        super().__init__(message)
        self.line = line


class _BoundedLoader(yaml.SafeLoader):
    """SafeLoader whose composer stops at MAX_DEPTH instead of recursing on."""

    def __init__(self, stream):
        super().__init__(stream)
        self._depth = 0

    def _enter(self) -> None:
        self._depth += 1
        if self._depth > MAX_DEPTH:
            mark = self.peek_event().start_mark
            raise Refused(f"nested deeper than {MAX_DEPTH} levels", mark.line + 1)

    def compose_sequence_node(self, anchor):
        self._enter()
        try:
            return super().compose_sequence_node(anchor)
        finally:
            self._depth -= 1

    def compose_mapping_node(self, anchor):
        self._enter()
        try:
            return super().compose_mapping_node(anchor)
        finally:
            self._depth -= 1


def _children(node: Node) -> list[Node]:
    if isinstance(node, SequenceNode):
        return node.value
    if isinstance(node, MappingNode):
        return [part for pair in node.value for part in pair]
    return []


def _line(node: Node) -> int | None:
    return node.start_mark.line + 1 if node.start_mark is not None else None


def measure(root: Node) -> tuple[int, int, int]:
    """(distinct nodes, nodes with every alias expanded, depth with aliases expanded).

    Iterative post-order walk; a node reached again through an alias is looked up, not walked
    again, so the cost is the size of the file, not of its expansion. Raises Refused on a
    cycle, on an expansion past the bound, on a depth past MAX_DEPTH, on an over-long integer.
    """
    done: dict[int, tuple[int, int]] = {}  # id(node) -> (expanded size, depth)
    open_: set[int] = set()  # nodes whose children are still being walked
    stack: list[tuple[Node, bool]] = [(root, False)]
    own = _count_distinct(root)
    expanded_limit = ALIAS_FACTOR * own + ALIAS_SLACK
    while stack:
        node, children_walked = stack.pop()
        key = id(node)
        if children_walked:
            kids = _children(node)
            size = 1 + sum(done[id(k)][0] for k in kids)
            depth = 1 + max((done[id(k)][1] for k in kids), default=0)
            if depth > MAX_DEPTH:
                raise Refused(f"nested deeper than {MAX_DEPTH} levels once aliases are expanded", _line(node))
            if size > expanded_limit:
                raise Refused(f"aliases expand this document to more than {expanded_limit} values "
                              f"(an alias bomb?)", _line(node))
            done[key] = (size, depth)
            open_.discard(key)
            continue
        if key in done:
            continue
        if isinstance(node, ScalarNode) and node.tag == _INT_TAG and len(node.value) > MAX_INT_DIGITS:
            raise Refused(f"an integer of more than {MAX_INT_DIGITS} digits", _line(node))
        open_.add(key)
        stack.append((node, True))
        for kid in _children(node):
            if id(kid) in open_:
                raise Refused("an alias refers to a node that contains it", _line(kid))
            if id(kid) not in done:
                stack.append((kid, False))
    return own, done[id(root)][0], done[id(root)][1]


def _count_distinct(root: Node) -> int:
    seen: set[int] = set()
    stack = [root]
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        stack.extend(k for k in _children(node) if id(k) not in seen)
    return len(seen)


def load(text: str) -> Any:
    """One YAML document, bounded. Raises Refused past a bound, yaml.YAMLError on bad syntax."""
    if len(text) > MAX_BYTES:
        raise Refused(f"larger than {MAX_BYTES // (1 << 20)} MiB")
    loader = _BoundedLoader(text)
    try:
        root = loader.get_single_node()
        if root is None:
            return None
        measure(root)
        return loader.construct_document(root)
    finally:
        loader.dispose()


def read_text(path: Path) -> str:
    """The file's text, refusing one past MAX_BYTES without reading more than that.
    Raises Refused, OSError, UnicodeDecodeError."""
    with open(path, "rb") as f:
        data = f.read(MAX_BYTES + 1)
    if len(data) > MAX_BYTES:
        raise Refused(f"larger than {MAX_BYTES // (1 << 20)} MiB; a recipe is a short text file")
    return data.decode("utf-8")
