"""Where every value of a spec sits: a tree of file and line per key, built from the
composed YAML nodes, merged along ``extends`` like the data, and looked up by key path
(``layers[3].g``) to place an error."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import yaml

from .errors import SpecError

__all__ = ["Node", "data_tree", "key_path", "locate", "merge_tree", "yaml_tree"]


@dataclass
class Node:
    """Where a value sits: its file and line, and the nodes of its keys or items."""

    file: str | None
    line: int | None
    children: dict[str, Node] | list[Node] | None = None


_MERGE_TAG = "tag:yaml.org,2002:merge"


def _merged(node: yaml.Node, file: str, seen: dict[int, Node], path: str) -> dict[str, Node]:
    """The keys a ``<<: *anchor`` (or ``<<: [*a, *b]``) merge brings: an earlier mapping's
    key wins over a later one's."""
    sources = node.value if isinstance(node, yaml.SequenceNode) else [node]
    children: dict[str, Node] = {}
    for source in reversed(sources):
        if not isinstance(source, yaml.MappingNode):
            raise SpecError(
                "<< merges a mapping or a list of mappings",
                path=path or None,
                file=file,
                line=source.start_mark.line + 1,
            )
        tree = yaml_tree(source, file, seen, path)
        children.update(tree.children or {})  # type: ignore[arg-type]
    return children


def yaml_tree(node: yaml.Node, file: str, seen: dict[int, Node], path: str = "") -> Node:
    """The location tree of a composed YAML node (aliases share one subtree), built before
    the node is constructed (construction flattens ``<<`` merges in place).

    A key given twice in one mapping is an error (YAML would silently keep the last); a key
    that is a list or a mapping is an error; keys merged with ``<<`` give way to the
    mapping's own.
    """
    if id(node) in seen:
        return seen[id(node)]
    out = Node(file, node.start_mark.line + 1)
    seen[id(node)] = out
    if isinstance(node, yaml.MappingNode):
        children: dict[str, Node] = {}
        merged: dict[str, Node] = {}
        for key_node, value_node in node.value:
            line = key_node.start_mark.line + 1
            if not isinstance(key_node, yaml.ScalarNode):
                raise SpecError(
                    "a key must be a name or a number, not a list or a mapping",
                    path=path or None,
                    file=file,
                    line=line,
                )
            if key_node.tag == _MERGE_TAG:
                merged.update(_merged(value_node, file, seen, path))
                continue
            key = str(key_node.value)
            sub = key_path(path, key)
            if key in children:
                raise SpecError(
                    f"duplicate key {key!r} (first given on line {children[key].line})",
                    path=sub,
                    file=file,
                    line=line,
                )
            children[key] = yaml_tree(value_node, file, seen, sub)
        out.children = {**merged, **children}
    elif isinstance(node, yaml.SequenceNode):
        out.children = [yaml_tree(v, file, seen, f"{path}[{i}]") for i, v in enumerate(node.value)]
    return out


_PLAIN_KEY = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_-]*$")


def key_path(path: str, key: object) -> str:
    """``path.key`` (``layers[3].g``); an index as ``[3]``; a key that is not a plain name
    as ``['a.b']`` (its repr: a control character shows as its escape)."""
    if isinstance(key, int) and not isinstance(key, bool) and path:
        return f"{path}[{key}]"
    text = str(key)
    if _PLAIN_KEY.match(text):
        return f"{path}.{text}" if path else text
    return f"{path}[{text!r}]"


def data_tree(data: Any) -> Node:
    """The location tree of an in-memory dict: no file, no lines."""
    if isinstance(data, dict):
        return Node(None, None, {str(k): data_tree(v) for k, v in data.items()})
    if isinstance(data, list):
        return Node(None, None, [data_tree(v) for v in data])
    return Node(None, None)


def merge_tree(base: Node, override: Node) -> Node:
    """The same merge on location trees."""
    if isinstance(base.children, dict) and isinstance(override.children, dict):
        children = dict(base.children)
        for key, node in override.children.items():
            children[key] = merge_tree(base.children[key], node) if key in base.children else node
        return Node(override.file, override.line, children)
    return override


_SEGMENT = re.compile(r"\[(\d+)\]|([^.\[\]]+)")


def _segments(path: str) -> list[str | int]:
    return [int(i) if i else key for i, key in _SEGMENT.findall(path)]


def locate(
    tree: Node | None, path: str | None, fallback: str | None
) -> tuple[str | None, int | None]:
    """File and line of ``path``'s node, or of its deepest existing ancestor key."""
    if tree is None or not path:
        return fallback, None
    node, found = tree, None
    for segment in _segments(path):
        children = node.children
        if isinstance(segment, int) and isinstance(children, list) and segment < len(children):
            node = children[segment]
        elif isinstance(children, dict) and str(segment) in children:
            node = children[str(segment)]
        else:
            break
        found = node
    if found is None:
        return fallback, None
    if found.file is None:
        return None, None
    return found.file, found.line
