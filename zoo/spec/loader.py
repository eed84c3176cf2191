"""Loading a spec: YAML -> merged dict -> validated :class:`~epdo.zoo.spec.schema.Spec`
with its plan.

Loading does, in order:

1. parse the YAML (SafeLoader only) and remember where every key sits in the file
   (:mod:`.locations`);
2. follow ``extends``: the parent (a shipped spec name or a path relative to the child's
   folder) is loaded the same way and deep-merged under the child: mappings merge key by
   key, anything else (lists included) is replaced by the child; ``name`` is not inherited;
3. copy the ``defaults`` mapping into every layer (residual bodies included) whose op
   accepts the key and that does not set it;
4. validate the schema (pydantic) and then plan the network (:func:`epdo.zoo.plan.plan_model`:
   field types, sizes, Neural ePDO divisibility, ...); the plan stays with the spec.

Every problem is a :class:`~epdo.zoo.spec.errors.SpecError` that points at the file, line
and key path of the offending value, e.g.
``specs/foo.yaml:12: layers[3].g: g=4 must divide the 6 input fields``.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from ..ops import LAYER_TYPES
from ..shipped import list_specs, resolve_spec_source, specs_dir
from .errors import SpecError
from .locations import Node, data_tree, locate, merge_tree, yaml_tree
from .messages import from_validation
from .schema import Defaults, Spec

__all__ = ["load_spec", "validate_section"]

Section = TypeVar("Section", bound=BaseModel)


def _merge(base: Any, override: Any) -> Any:
    """Deep merge: mappings key by key, anything else replaced by ``override``."""
    if isinstance(base, dict) and isinstance(override, dict):
        out = dict(base)
        for key, value in override.items():
            out[key] = _merge(base[key], value) if key in base else value
        return out
    return override


@dataclass
class _Raw:
    """A spec as merged dicts, before validation, with its location tree."""

    data: dict[str, Any]
    tree: Node
    file: str | None
    stem: str | None


def _display(path: Path) -> str:
    """``path`` relative to the working directory when it lies below it."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _parse_yaml(text: str, file: str) -> tuple[Any, yaml.Node | None]:
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise SpecError(
            f"malformed YAML: {problem}{where}",
            file=file,
            line=mark.line + 1 if mark else None,
        ) from None
    finally:
        loader.dispose()
    return data, node


def _read_file(path: Path, chain: tuple[Path, ...]) -> _Raw:
    file = _display(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(f"cannot read the spec: {exc}", file=file) from None
    data, node = _parse_yaml(text, file)
    tree = yaml_tree(node, file, {}) if node is not None else Node(file, None)
    raw = _Raw(data, tree, file, path.stem)
    return _resolve_extends(raw, path.parent, chain + (path.resolve(),))


def _find_parent(value: str, base_dir: Path) -> Path | None:
    """A shipped name, else a path relative to ``base_dir`` (``.yaml`` may be left off)."""
    bare = Path(value).suffix not in (".yaml", ".yml") and len(Path(value).parts) == 1
    if bare and value in list_specs():
        return specs_dir() / f"{value}.yaml"
    path = Path(value).expanduser()
    path = path if path.is_absolute() else base_dir / path
    if path.is_file():
        return path
    if bare and path.with_name(f"{value}.yaml").is_file():
        return path.with_name(f"{value}.yaml")
    return None


def _resolve_extends(raw: _Raw, base_dir: Path, chain: tuple[Path, ...]) -> _Raw:
    """Check the top level and merge the parent chain under ``raw``."""
    if raw.data is None:
        raise SpecError("the spec is empty; it needs group:, input: and layers:", file=raw.file)
    if not isinstance(raw.data, dict):
        kind = type(raw.data).__name__
        raise SpecError(
            f"the top level of a spec must be a mapping (group:, input:, layers:, ...), "
            f"not a {kind}",
            file=raw.file,
            line=raw.tree.line,
        )
    data = dict(raw.data)
    tree = Node(raw.tree.file, raw.tree.line, dict(raw.tree.children or {}))
    parent = data.pop("extends", None)
    extends_node = tree.children.pop("extends", None)  # type: ignore[union-attr]
    if parent is None:
        return _Raw(data, tree, raw.file, raw.stem)
    line = extends_node.line if extends_node else None
    if not isinstance(parent, str) or not parent.strip():
        raise SpecError(
            f"extends must be a shipped spec name or a path to a YAML file, got {parent!r}",
            path="extends",
            file=raw.file,
            line=line,
        )
    parent_path = _find_parent(parent.strip(), base_dir)
    if parent_path is None:
        raise SpecError(
            f"cannot find the parent spec {parent!r}: no shipped spec of that name "
            f"({', '.join(list_specs()) or 'none'}) and no file {base_dir / parent}",
            path="extends",
            file=raw.file,
            line=line,
        )
    if parent_path.resolve() in chain:
        cycle = " -> ".join(_display(p) for p in (*chain, parent_path.resolve()))
        raise SpecError(f"extends cycle: {cycle}", path="extends", file=raw.file, line=line)
    base = _read_file(parent_path, chain)
    base.data.pop("name", None)
    base.tree.children.pop("name", None)  # type: ignore[union-attr]
    return _Raw(_merge(base.data, data), merge_tree(base.tree, tree), raw.file, raw.stem)


_DEFAULTABLE = tuple(Defaults.model_fields)


def _layer_dicts(
    data: dict[str, Any], tree: Node
) -> Iterator[tuple[dict[str, Any], Node | None]]:
    """Every layer mapping (residual bodies included) with its location node."""

    def items(layers: Any, node: Node | None) -> Iterator[tuple[dict[str, Any], Node | None]]:
        if not isinstance(layers, list):
            return
        nodes = node.children if node is not None and isinstance(node.children, list) else []
        for i, layer in enumerate(layers):
            if not isinstance(layer, dict):
                continue
            layer_node = nodes[i] if i < len(nodes) else None
            yield layer, layer_node
            if isinstance(layer.get("body"), list):  # nested layers (a residual body)
                body_node = None
                if layer_node is not None and isinstance(layer_node.children, dict):
                    body_node = layer_node.children.get("body")
                yield from items(layer.get("body"), body_node)

    top = tree.children.get("layers") if isinstance(tree.children, dict) else None
    yield from items(data.get("layers"), top)


def _apply_defaults(data: dict[str, Any], tree: Node) -> dict[str, Any]:
    """Copy ``defaults`` into the layers that accept each key and do not set it."""
    defaults = data.get("defaults")
    if not isinstance(defaults, dict) or not defaults:
        return data
    data = copy.deepcopy(data)
    defaults = data["defaults"]
    default_nodes = {}
    if isinstance(tree.children, dict) and "defaults" in tree.children:
        node = tree.children["defaults"]
        default_nodes = node.children if isinstance(node.children, dict) else {}
    for layer, node in _layer_dicts(data, tree):
        model = LAYER_TYPES.get(layer.get("op"))  # type: ignore[arg-type]
        if model is None:
            continue
        for key in _DEFAULTABLE:
            value = defaults.get(key)
            if value is None or key in layer or key not in model.model_fields:
                continue
            layer[key] = copy.deepcopy(value)
            if node is not None and isinstance(node.children, dict) and key in default_nodes:
                node.children[key] = default_nodes[key]
    return data


def _raw_from_source(source: str | os.PathLike[str] | dict[str, Any]) -> _Raw:
    if isinstance(source, dict):
        data = copy.deepcopy(source)
        raw = _Raw(data, data_tree(data), None, None)
        return _resolve_extends(raw, Path.cwd(), ())
    try:
        path = resolve_spec_source(source)
    except FileNotFoundError as exc:
        raise SpecError(str(exc)) from None
    return _read_file(path, ())


def load_spec(source: str | os.PathLike[str] | dict[str, Any] | Spec) -> Spec:
    """Load, merge, validate and plan a spec; every problem raises :class:`SpecError`.

    ``source`` is a YAML file path, a shipped spec name (see
    :func:`epdo.zoo.shipped.list_specs`), an already parsed dict (its ``extends`` resolves
    against shipped names or the working directory) or a :class:`Spec` (returned as is).
    """
    if isinstance(source, Spec):
        return source
    raw = _raw_from_source(source)
    data = _apply_defaults(raw.data, raw.tree)
    data.setdefault("name", raw.stem or "spec")
    try:
        try:
            spec = Spec.model_validate(data)
        except ValidationError as exc:
            raise from_validation(exc, Spec) from None
        spec._source_file = raw.file
        spec.plan  # noqa: B018 - plans the network (and keeps the plan) or raises
    except SpecError as err:
        if err.file is not None:
            raise
        raise err.located(*locate(raw.tree, err.path, raw.file)) from None
    return spec


def validate_section(model: type[Section], data: Any, path: str) -> Section:
    """One section of a spec (``train``) validated on its own; errors carry ``path``."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise from_validation(exc, model).under(path) from None
