"""Loading a spec: YAML -> merged dict -> validated :class:`~epdo.zoo.spec.schema.Spec`
with its plan.

Loading does, in order:

1. read the file (a regular file of at most ``EPDO_MAX_SPEC_BYTES``, UTF-8), scan its YAML
   events (nesting depth, and the number of values with every alias use counted as a copy:
   an alias bomb is refused before anything is built), parse it (SafeLoader only) and
   remember where every key sits in the file: :mod:`.yaml_text`, :mod:`.locations`;
2. follow ``extends``: the parent is a shipped spec name, or a YAML file inside the folder
   tree of the spec that names it (symlinks resolved first; the folders of
   ``$EPDO_EXTENDS_PATH`` too), at most :data:`~.limits.MAX_EXTENDS_DEPTH` deep and without
   cycles; a spec given as a dict (a checkpoint's) may extend only a shipped spec. The
   parent is loaded the same way and deep-merged under the child: mappings merge key by
   key, anything else (lists included) is replaced by the child; ``name`` is not inherited;
3. check the merged values: plain data only (mappings, lists, text, numbers, booleans,
   null), no cycles, within the size and depth limits, no control characters in text;
4. copy the ``defaults`` mapping into every layer (residual bodies included) whose op
   accepts the key and that does not set it;
5. validate the schema (pydantic, strict types) and then plan the network
   (:func:`epdo.zoo.plan.plan_model`: field types, sizes, Neural ePDO divisibility, the
   model's size against the limits, ...); the plan stays with the spec.

Every problem is a :class:`~epdo.zoo.spec.errors.SpecError` that points at the file, line
and key path of the offending value, e.g.
``specs/foo.yaml:12: layers[3].g: g=4 must divide the 6 input fields``. A refused
``extends`` names the file it points at and never shows what is in it. The limits are in
:mod:`.limits`.
"""

from __future__ import annotations

import copy
import datetime
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from ..ops import LAYER_TYPES
from ..shipped import list_specs, resolve_spec_source, specs_dir
from .errors import SpecError
from .limits import (
    EXTENDS_PATH_VARIABLE,
    MAX_EXTENDS_DEPTH,
    MAX_SPEC_DEPTH,
    SPEC_NODES,
    extends_roots,
)
from .locations import Node, data_tree, key_path, locate, merge_tree
from .messages import from_validation
from .schema import Defaults, Spec
from .yaml_text import parse_yaml, read_spec_text

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
    except (OSError, RuntimeError, ValueError):
        return str(path)


def _shown(value: str) -> str:
    """``value`` quoted for a message, cut to 200 characters."""
    return repr(value) if len(value) <= 200 else repr(value[:197] + "...")


def _real(path: Path, where: dict[str, Any]) -> Path:
    """``path`` with its symlinks resolved; a loop or an impossible name is a SpecError."""
    try:
        return path.resolve()
    except (OSError, RuntimeError) as exc:
        reason = "a symlink loop" if isinstance(exc, RuntimeError) else exc.strerror or exc
        raise SpecError(f"cannot resolve {_shown(str(path))}: {reason}", **where) from None


def _read_file(path: Path, chain: tuple[Path, ...]) -> _Raw:
    file = _display(path)
    data, tree = parse_yaml(read_spec_text(path, file), file)
    raw = _Raw(data, tree, file, path.stem)
    real = _real(path, {"file": file})
    return _resolve_extends(raw, path.parent, chain + (real,))


# --------------------------------------------------------------------------- extends


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def _find_parent(value: str, base_dir: Path | None, where: dict[str, Any]) -> Path:
    """The file ``extends: value`` names: a shipped spec, or (for a spec file, ``base_dir``
    its folder) a file inside that folder's tree or a folder of ``$EPDO_EXTENDS_PATH``
    (``.yaml`` may be left off). Anything else is refused by name."""
    bare = Path(value).suffix not in (".yaml", ".yml") and len(Path(value).parts) == 1
    shipped = list_specs()
    if bare and value in shipped:
        return specs_dir() / f"{value}.yaml"
    if base_dir is None:
        raise SpecError(
            f"refused {_shown(value)}: a spec given as data (such as the one inside a checkpoint) "
            f"may extend only a shipped spec ({', '.join(shipped) or 'none'})",
            **where,
        )
    candidates = [base_dir / value]
    if bare:
        candidates.append(base_dir / f"{value}.yaml")
    roots = [_real(base_dir, where), specs_dir().resolve(), *extends_roots()]
    for candidate in candidates:
        target = _real(candidate, where)
        if not any(_inside(target, root) for root in roots):
            raise SpecError(
                f"refused {_shown(value)}: it is outside the folder of {where['file']}; a spec may "
                "extend a shipped spec or a YAML file in its own folder or below it (after "
                f"symlinks), or in a folder listed in ${EXTENDS_PATH_VARIABLE}",
                **where,
            )
        try:
            if target.is_file():
                return target
        except OSError:
            continue
    raise SpecError(
        f"cannot find the parent spec {_shown(value)}: no shipped spec of that name "
        f"({_names(shipped)}) and no file {_shown(_display(candidates[0]))}",
        **where,
    )


def _names(shipped: list[str], most: int = 6) -> str:
    """``a, b, c`` or, for many, the first ``most`` and how many more ``epdo list`` shows."""
    if not shipped:
        return "none"
    more = len(shipped) - most
    return ", ".join(shipped[:most]) + (f" and {more} more: epdo list" if more > 0 else "")


def _resolve_extends(raw: _Raw, base_dir: Path | None, chain: tuple[Path, ...]) -> _Raw:
    """Check the top level and merge the parent chain under ``raw`` (``base_dir`` None: a
    spec given as data, which may extend only a shipped spec)."""
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
    children = raw.tree.children if isinstance(raw.tree.children, dict) else {}
    tree = Node(raw.tree.file, raw.tree.line, dict(children))
    parent = data.pop("extends", None)
    extends_node = tree.children.pop("extends", None)  # type: ignore[union-attr]
    if parent is None:
        return _Raw(data, tree, raw.file, raw.stem)
    where: dict[str, Any] = {
        "path": "extends",
        "file": raw.file,
        "line": extends_node.line if extends_node else None,
    }
    if not isinstance(parent, str) or not parent.strip() or "\0" in parent:
        raise SpecError(
            "extends must be a shipped spec name or a path to a YAML file, got "
            f"{_short_value(parent)}",
            **where,
        )
    parent_path = _find_parent(parent.strip(), base_dir, where)
    if _real(parent_path, where) in chain:
        cycle = " -> ".join(_display(p) for p in (*chain, parent_path))
        raise SpecError(f"a cycle of parents: {cycle}", **where)
    if len(chain) >= MAX_EXTENDS_DEPTH:
        raise SpecError(
            f"the chain of parents is more than {MAX_EXTENDS_DEPTH} specs long (from "
            f"{_display(chain[0])}); merge some of them",
            **where,
        )
    base = _read_file(parent_path, chain)
    base.data.pop("name", None)
    base.tree.children.pop("name", None)  # type: ignore[union-attr]
    return _Raw(_merge(base.data, data), merge_tree(base.tree, tree), raw.file, raw.stem)


def _short_value(value: Any) -> str:
    text = repr(value) if not isinstance(value, int) or value.bit_length() < 128 else "a number"
    return text if len(text) <= 60 else text[:57] + "..."


# --------------------------------------------------------------------------- values

_PLAIN = (str, int, float, type(None), bytes, datetime.date)
"""What a spec value may be besides a mapping or a list (YAML gives bytes for ``!!binary``
and dates for timestamps; the schema refuses them where it expects something else)."""

_KEY_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_TEXT_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u2028\u2029]")
_BIG = 1 << 64


def _check_values(data: Any, tree: Node | None, file: str | None) -> None:
    """Refuse what no spec holds, before anything copies or validates it: more than
    ``EPDO_MAX_SPEC_NODES`` values (a value reached twice counts twice), nesting deeper than
    :data:`MAX_SPEC_DEPTH`, a mapping or list that contains itself, a value that is not plain
    data, an integer beyond 64 bits, control characters in a key or a text (tabs and line
    breaks are fine in a text)."""
    budget = SPEC_NODES.value
    count = 0
    on_path: set[int] = set()
    stack: list[tuple[Any, str, int, bool]] = [(data, "", 0, False)]

    def fail(message: str, path: str) -> SpecError:
        where = locate(tree, path, file) if tree is not None else (file, None)
        return SpecError(message, path=path or None, file=where[0] or file, line=where[1])

    while stack:
        value, path, depth, leaving = stack.pop()
        if leaving:
            on_path.discard(id(value))
            continue
        count += 1
        if count > budget:
            raise fail(f"the spec holds more than {budget:,} values; {SPEC_NODES.hint}", path)
        if isinstance(value, dict | list | tuple | set | frozenset):
            if id(value) in on_path:
                raise fail("this mapping or list contains itself", path)
            if depth >= MAX_SPEC_DEPTH:
                raise fail(f"the spec nests deeper than {MAX_SPEC_DEPTH} levels", path)
            on_path.add(id(value))
            stack.append((value, path, depth, True))
            if isinstance(value, dict):
                items = list(value.items())
                for key, _ in items:
                    if isinstance(key, str) and _KEY_CONTROL.search(key):
                        raise fail("a key holds a control character", key_path(path, key))
                    if not isinstance(key, str | int | float | bool | type(None)):
                        raise fail(f"a key must be a name, not a {type(key).__name__}", path)
                children = [(key_path(path, k), v) for k, v in items]
            else:
                children = [(f"{path}[{i}]", v) for i, v in enumerate(value)]
            stack.extend((v, p, depth + 1, False) for p, v in reversed(children))
        elif isinstance(value, bool):
            continue
        elif isinstance(value, int):
            if not -_BIG <= value <= _BIG:
                raise fail(f"a number of {value.bit_length()} bits is not a spec value", path)
        elif isinstance(value, str):
            found = _TEXT_CONTROL.search(value)
            if found:
                raise fail(
                    f"the text holds the control character U+{ord(found.group()):04X}; a spec's "
                    "text must be printable",
                    path,
                )
        elif not isinstance(value, _PLAIN):
            raise fail(
                "a spec value must be a mapping, a list, a text, a number, a boolean or null, "
                f"not a {type(value).__name__}",
                path,
            )


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
        op = layer.get("op")
        model = LAYER_TYPES.get(op) if isinstance(op, str) else None
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
        _check_values(source, None, None)
        data = copy.deepcopy(source)
        raw = _Raw(data, data_tree(data), None, None)
        return _resolve_extends(raw, None, ())
    try:
        path = resolve_spec_source(source)
    except (OSError, ValueError) as exc:
        raise SpecError(str(exc)) from None
    return _read_file(path, ())


def load_spec(source: str | os.PathLike[str] | dict[str, Any] | Spec) -> Spec:
    """Load, merge, validate and plan a spec; every problem raises :class:`SpecError`.

    ``source`` is a YAML file path, a shipped spec name (see
    :func:`epdo.zoo.shipped.list_specs`), an already parsed dict (its ``extends`` may name
    only a shipped spec) or a :class:`Spec` (returned as is).
    """
    if isinstance(source, Spec):
        return source
    raw = _raw_from_source(source)
    _check_values(raw.data, raw.tree, raw.file)
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
