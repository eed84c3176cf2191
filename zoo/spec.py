"""The YAML model spec: its schema, how it is loaded, and the errors it reports.

A spec names a symmetry group, an input and a list of layers (plus optional training
settings). Loading does, in order:

1. parse the YAML (SafeLoader only) and remember where every key sits in the file;
2. follow ``extends``: the parent (a shipped spec name or a path relative to the child's
   folder) is loaded the same way and deep-merged under the child: mappings merge key by
   key, anything else (lists included) is replaced by the child; ``name`` is not inherited;
3. copy the ``defaults`` mapping into every layer (residual bodies included) whose op
   accepts the key and that does not set it;
4. validate the schema (pydantic) and then the network itself (:func:`epdo.zoo.plan.plan_model`:
   field types, sizes, Neural ePDO divisibility, ...).

Every problem is a :class:`SpecError` that points at the file, line and key path of the
offending value, e.g. ``specs/foo.yaml:12: layers[3].g: g=4 must divide the 6 input fields``.
This module knows nothing about tensors.
"""

from __future__ import annotations

import copy
import os
import re
import typing
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from .groups import Group, parse_group
from .registry import list_specs, resolve_spec_source, specs_dir

__all__ = [
    "BODY_OPS",
    "LAYER_OPS",
    "LAYER_TYPES",
    "AugmentSpec",
    "BodyLayer",
    "Conv1x1Layer",
    "ConvLayer",
    "Defaults",
    "DropoutLayer",
    "GroupPoolLayer",
    "HeadLayer",
    "InputSpec",
    "Layer",
    "NeuralEpdoLayer",
    "PdoConvLayer",
    "PoolLayer",
    "ResidualLayer",
    "RestrictLayer",
    "Spec",
    "SpecError",
    "TrainSpec",
    "load_spec",
]


# --------------------------------------------------------------------------- errors


class SpecError(ValueError):
    """A problem with a spec, located by file, line and key path (``layers[3].g``)."""

    def __init__(
        self,
        message: str,
        *,
        path: str | None = None,
        file: str | None = None,
        line: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.path = path
        self.file = file
        self.line = line

    def located(self, file: str | None, line: int | None) -> SpecError:
        """The same error, placed at ``file:line``."""
        return SpecError(self.message, path=self.path, file=file, line=line)

    def __str__(self) -> str:
        where = ""
        if self.file:
            where = f"{self.file}:{self.line}" if self.line else self.file
        return ": ".join(part for part in (where, self.path, self.message) if part)

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_error, (self.message, self.path, self.file, self.line))


def _rebuild_error(message: str, path: str | None, file: str | None, line: int | None) -> SpecError:
    return SpecError(message, path=path, file=file, line=line)


# --------------------------------------------------------------------------- schema


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_field_type(value: Any) -> str | list[str]:
    """``"regular"`` or a non-empty list of names; the group checks the names later."""
    if isinstance(value, str) and value.strip():
        return value
    if isinstance(value, list | tuple) and value and all(isinstance(v, str) for v in value):
        return list(value)
    raise ValueError(
        "a field type is a name (trivial, regular, quotient<M>) or a non-empty list of "
        f"names such as [regular, quotient4]; got {value!r}"
    )


FieldTypeName = Annotated[str | list[str], PlainValidator(_check_field_type)]
"""A field type as written in a spec: ``regular`` or ``[regular, quotient4]``."""

Order = Annotated[int, Field(ge=0, le=4)]
PoolKind = Literal["max", "avg"]
Probability = Annotated[float, Field(ge=0.0, lt=1.0)]


class _Block(_Model):
    """What every conv-like layer has after its linear map: BN, ReLU, pool, dropout."""

    bias: bool = False
    bn: bool = True
    relu: bool = True
    pool: Annotated[int, Field(ge=2)] | None = None
    pool_kind: PoolKind = "max"
    dropout: Probability = 0.0
    repeat: Annotated[int, Field(ge=1)] = 1


class PdoConvLayer(_Block):
    """Linear ePDO convolution (PDO-eConv) with a 5×5 stencil, padding 2."""

    op: Literal["pdo_conv"]
    fields: Annotated[int, Field(ge=1)]
    type: FieldTypeName = "regular"
    order: Order = 4
    stride: Annotated[int, Field(ge=1)] = 1
    coefficients: Literal["full", "h9"] = "full"
    """full: every equivariant PDO up to ``order``; h9: the PDO-eConvs CIFAR family, the
    rotated H(u,v) = b1 + b2 u + b3 v + b4 u² + b5 uv + b6 v² + b7 u²v + b8 uv² + b9 u²v²
    learned as a 3x3 array (order 4, regular output, trivial or regular input)."""


class NeuralEpdoLayer(_Block):
    """Spatially adaptive Neural ePDO layer (stride 1, size preserved)."""

    op: Literal["neural_epdo"]
    fields: Annotated[int, Field(ge=1)]
    type: FieldTypeName = "regular"
    order: Order = 4
    g: Annotated[int, Field(ge=1)] = 4
    s: Annotated[int, Field(ge=1)] = 1
    reduction: Annotated[int, Field(ge=1)] = 1


class Conv1x1Layer(_Block):
    """Equivariant 1×1 convolution (the intertwiners between the field types)."""

    op: Literal["conv1x1"]
    fields: Annotated[int, Field(ge=1)]
    type: FieldTypeName = "regular"
    stride: Annotated[int, Field(ge=1)] = 1


class ConvLayer(_Block):
    """Plain ``Conv2d`` for CNN baselines; only for the trivial group C1."""

    op: Literal["conv"]
    channels: Annotated[int, Field(ge=1)]
    kernel: Annotated[int, Field(ge=1)] = 5
    stride: Annotated[int, Field(ge=1)] = 1

    @field_validator("kernel")
    @classmethod
    def _odd_kernel(cls, value: int) -> int:
        if value % 2 == 0:
            raise ValueError(f"kernel must be odd (padding is kernel // 2), got {value}")
        return value


class PoolLayer(_Model):
    """Spatial max/avg pooling with window and stride ``size``."""

    op: Literal["pool"]
    kind: PoolKind = "max"
    size: Annotated[int, Field(ge=2)] = 2


class DropoutLayer(_Model):
    """Dropout with probability ``p``."""

    op: Literal["dropout"]
    p: Probability


class GroupPoolLayer(_Model):
    """Group pooling: each field becomes one trivial field (max or mean of its channels)."""

    op: Literal["group_pool"]
    kind: PoolKind = "max"


class RestrictLayer(_Model):
    """Restriction D_N -> C_N; channels are kept, a D_N regular field becomes two C_N ones."""

    op: Literal["restrict"]


class HeadLayer(_Model):
    """Classifier: group pool, global spatial pool, (Linear-BN1d-ReLU)*, Linear -> classes.

    ``group_pool: none`` feeds every channel to the classifier (not invariant: the PDO-eConvs
    CIFAR models); ``preact: true`` starts with a field BatchNorm and ReLU (the final
    BN-ReLU of a pre-activation ResNet).
    """

    op: Literal["head"]
    classes: Annotated[int, Field(ge=2)]
    hidden: list[Annotated[int, Field(ge=1)]] = Field(default_factory=list)
    group_pool: Literal["max", "avg", "none"] = "max"
    spatial_pool: PoolKind = "max"
    dropout: Probability = 0.0
    preact: bool = False


BodyLayer = Annotated[
    PdoConvLayer
    | NeuralEpdoLayer
    | Conv1x1Layer
    | ConvLayer
    | PoolLayer
    | DropoutLayer
    | GroupPoolLayer
    | RestrictLayer,
    Field(discriminator="op"),
]
"""A layer inside a residual body: any layer but ``residual`` and ``head``."""


class ResidualLayer(_Model):
    """``out = relu?(body(x) + shortcut(x))``; shortcut identity or equivariant 1×1 + BN.

    ``preact: true`` makes it a pre-activation block (He et al. 2016, as in the PDO-eConvs
    CIFAR code): ``p = ReLU(BN(x))``, ``out = body(p) + shortcut``, where the shortcut is x
    itself or a strided 1×1 of p (no BN); ``relu`` then defaults to false.
    """

    op: Literal["residual"]
    body: Annotated[list[BodyLayer], Field(min_length=1)]
    shortcut: Literal["auto", "identity", "conv1x1"] = "auto"
    relu: bool | None = None
    preact: bool = False
    repeat: Annotated[int, Field(ge=1)] = 1

    @property
    def relu_after_sum(self) -> bool:
        """ReLU after the sum: ``relu`` if given, else true for a post-activation block."""
        return (not self.preact) if self.relu is None else self.relu


Layer = Annotated[
    PdoConvLayer
    | NeuralEpdoLayer
    | Conv1x1Layer
    | ConvLayer
    | PoolLayer
    | DropoutLayer
    | GroupPoolLayer
    | RestrictLayer
    | ResidualLayer
    | HeadLayer,
    Field(discriminator="op"),
]
"""One entry of ``layers``, chosen by its ``op``."""

LAYER_TYPES: dict[str, type[_Model]] = {
    "pdo_conv": PdoConvLayer,
    "neural_epdo": NeuralEpdoLayer,
    "conv1x1": Conv1x1Layer,
    "conv": ConvLayer,
    "pool": PoolLayer,
    "dropout": DropoutLayer,
    "group_pool": GroupPoolLayer,
    "restrict": RestrictLayer,
    "residual": ResidualLayer,
    "head": HeadLayer,
}
"""The layer model class of every op."""

LAYER_OPS: tuple[str, ...] = tuple(LAYER_TYPES)
BODY_OPS: tuple[str, ...] = tuple(op for op in LAYER_OPS if op not in ("residual", "head"))


class InputSpec(_Model):
    """``channels`` trivial fields of size ``size``, normalized by ``(x - mean) / std``."""

    channels: Annotated[int, Field(ge=1)]
    size: list[int]
    mean: list[float] = Field(default_factory=lambda: [0.0], validate_default=True)
    std: list[float] = Field(default_factory=lambda: [1.0], validate_default=True)

    @field_validator("size", mode="before")
    @classmethod
    def _size_pair(cls, value: Any) -> Any:
        if isinstance(value, int) and not isinstance(value, bool):
            value = [value, value]
        if not (isinstance(value, list | tuple) and len(value) == 2):
            raise ValueError(f"size must be an int or [H, W], got {value!r}")
        return list(value)

    @field_validator("size")
    @classmethod
    def _size_positive(cls, value: list[int]) -> list[int]:
        if min(value) < 1:
            raise ValueError(f"size must be positive, got {value}")
        return value

    @field_validator("mean", "std", mode="before")
    @classmethod
    def _as_list(cls, value: Any) -> Any:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return [value]
        return value

    @field_validator("mean", "std")
    @classmethod
    def _per_channel(cls, value: list[float], info: ValidationInfo) -> list[float]:
        channels = info.data.get("channels")
        if channels is None:
            return value
        if len(value) == 1:
            value = value * channels
        if len(value) != channels:
            raise ValueError(
                f"{info.field_name} needs one value or one per channel ({channels}), "
                f"got {len(value)}"
            )
        if info.field_name == "std" and min(value) <= 0:
            raise ValueError(f"std must be positive, got {value}")
        return value

    @property
    def height(self) -> int:
        return self.size[0]

    @property
    def width(self) -> int:
        return self.size[1]


class Defaults(_Model):
    """Values copied into every layer that accepts the key and does not set it."""

    type: FieldTypeName | None = None
    order: Order | None = None
    g: Annotated[int, Field(ge=1)] | None = None
    s: Annotated[int, Field(ge=1)] | None = None
    reduction: Annotated[int, Field(ge=1)] | None = None
    bn: bool | None = None
    relu: bool | None = None
    bias: bool | None = None
    pool_kind: PoolKind | None = None
    coefficients: Literal["full", "h9"] | None = None


class AugmentSpec(_Model):
    """Training-time augmentation."""

    rotate: bool = False
    """Random rotation, angle uniform in [0°, 360°)."""
    flip: bool = False
    crop_padding: Annotated[int, Field(ge=0)] = 0


class TrainSpec(_Model):
    """Training settings; ``lr_milestones`` maps an epoch to the learning rate from then on."""

    dataset: Literal[
        "mnist-rot", "rotated-idx", "idx", "sample", "sample-upright", "cifar10", "cifar100"
    ] = "sample"
    data_dir: str | None = None
    batch_size: Annotated[int, Field(ge=1)] = 64
    epochs: Annotated[int, Field(ge=1)] = 10
    optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    lr: Annotated[float, Field(gt=0.0)] = 1e-3
    momentum: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.9
    nesterov: bool = False
    weight_decay: Annotated[float, Field(ge=0.0)] = 0.0
    weight_decay_on: Literal["all", "weights"] = "all"
    """all: every parameter (the Neural ePDO code); weights: conv and linear weights only,
    not BatchNorm's scale and shift nor biases (the PDO-eConvs CIFAR code)."""

    @model_validator(mode="after")
    def _nesterov_needs_sgd(self) -> TrainSpec:
        if self.nesterov and self.optimizer != "sgd":
            raise ValueError(
                f"nesterov: true is a setting of optimizer: sgd, not of {self.optimizer}"
            )
        return self
    lr_milestones: dict[Annotated[int, Field(ge=0)], Annotated[float, Field(gt=0.0)]] = Field(
        default_factory=dict
    )
    augment: AugmentSpec = Field(default_factory=AugmentSpec)
    seed: int = 0
    precision: Literal["fp32", "amp"] = "fp32"
    """fp32: float32 (TF32 matmuls on CUDA), the papers' setting; amp: mixed precision on
    CUDA (bf16, or fp16 with a gradient scaler). The CPU always computes in float32."""


class Spec(_Model):
    """A validated model spec with ``extends`` resolved and ``defaults`` applied.

    ``source_file`` is the YAML file it came from (None for a dict); it takes no part in
    equality.
    """

    name: Annotated[str, Field(min_length=1)]
    description: str = ""
    group: str
    discretization: Literal["fd", "fd_wide", "gauss", "rbffd"] = "gauss"
    kernel_basis: Literal["normalized", "raw"] = "normalized"
    """normalized: every kernel basis element has unit norm and the Neural ePDO generator's
    basis is orthonormal (the papers' code); raw: the derivative coefficients themselves."""
    input: InputSpec
    defaults: Defaults = Field(default_factory=Defaults)
    layers: Annotated[list[Layer], Field(min_length=1)]
    train: TrainSpec = Field(default_factory=TrainSpec)

    _source_file: str | None = PrivateAttr(default=None)

    @field_validator("group", mode="before")
    @classmethod
    def _known_group(cls, value: Any) -> Any:
        if isinstance(value, str):
            return parse_group(value).name
        return value

    @property
    def source_file(self) -> str | None:
        return self._source_file

    @property
    def group_obj(self) -> Group:
        """The parsed symmetry group."""
        return parse_group(self.group)

    def resolved(self) -> dict[str, Any]:
        """A plain dict (no ``extends``) that :func:`load_spec` turns back into this spec."""
        data = self.model_dump(mode="python")
        data["defaults"] = {k: v for k, v in data["defaults"].items() if v is not None}
        return data

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Spec):
            return NotImplemented
        return self.resolved() == other.resolved()

    __hash__ = None  # type: ignore[assignment]


# --------------------------------------------------------------------------- locations


@dataclass
class _Node:
    """Where a value sits: its file and line, and the nodes of its keys or items."""

    file: str | None
    line: int | None
    children: dict[str, _Node] | list[_Node] | None = None


def _yaml_tree(node: yaml.Node, file: str, seen: dict[int, _Node], path: str = "") -> _Node:
    """The location tree of a composed YAML node (aliases share one subtree).

    A key given twice in one mapping is an error (YAML would silently keep the last).
    """
    if id(node) in seen:
        return seen[id(node)]
    out = _Node(file, node.start_mark.line + 1)
    seen[id(node)] = out
    if isinstance(node, yaml.MappingNode):
        children: dict[str, _Node] = {}
        for key_node, value_node in node.value:
            key = str(key_node.value)
            sub = f"{path}.{key}" if path else key
            if key in children:
                raise SpecError(
                    f"duplicate key {key!r} (first given on line {children[key].line})",
                    path=sub,
                    file=file,
                    line=key_node.start_mark.line + 1,
                )
            children[key] = _yaml_tree(value_node, file, seen, sub)
        out.children = children
    elif isinstance(node, yaml.SequenceNode):
        out.children = [_yaml_tree(v, file, seen, f"{path}[{i}]") for i, v in enumerate(node.value)]
    return out


def _data_tree(data: Any) -> _Node:
    """The location tree of an in-memory dict: no file, no lines."""
    if isinstance(data, dict):
        return _Node(None, None, {str(k): _data_tree(v) for k, v in data.items()})
    if isinstance(data, list):
        return _Node(None, None, [_data_tree(v) for v in data])
    return _Node(None, None)


def _merge(base: Any, override: Any) -> Any:
    """Deep merge: mappings key by key, anything else replaced by ``override``."""
    if isinstance(base, dict) and isinstance(override, dict):
        out = dict(base)
        for key, value in override.items():
            out[key] = _merge(base[key], value) if key in base else value
        return out
    return override


def _merge_tree(base: _Node, override: _Node) -> _Node:
    """The same merge on location trees."""
    if isinstance(base.children, dict) and isinstance(override.children, dict):
        children = dict(base.children)
        for key, node in override.children.items():
            children[key] = _merge_tree(base.children[key], node) if key in base.children else node
        return _Node(override.file, override.line, children)
    return override


_SEGMENT = re.compile(r"\[(\d+)\]|([^.\[\]]+)")


def _segments(path: str) -> list[str | int]:
    return [int(i) if i else key for i, key in _SEGMENT.findall(path)]


def _locate(
    tree: _Node | None, path: str | None, fallback: str | None
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


# --------------------------------------------------------------------------- loading


@dataclass
class _Raw:
    """A spec as merged dicts, before validation, with its location tree."""

    data: dict[str, Any]
    tree: _Node
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
    tree = _yaml_tree(node, file, {}) if node is not None else _Node(file, None)
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
    tree = _Node(raw.tree.file, raw.tree.line, dict(raw.tree.children or {}))
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
    return _Raw(_merge(base.data, data), _merge_tree(base.tree, tree), raw.file, raw.stem)


_DEFAULTABLE = tuple(Defaults.model_fields)


def _layer_dicts(
    data: dict[str, Any], tree: _Node
) -> Iterator[tuple[dict[str, Any], _Node | None]]:
    """Every layer mapping (residual bodies included) with its location node."""

    def items(layers: Any, node: _Node | None) -> Iterator[tuple[dict[str, Any], _Node | None]]:
        if not isinstance(layers, list):
            return
        nodes = node.children if node is not None and isinstance(node.children, list) else []
        for i, layer in enumerate(layers):
            if not isinstance(layer, dict):
                continue
            layer_node = nodes[i] if i < len(nodes) else None
            yield layer, layer_node
            if layer.get("op") == "residual":
                body_node = None
                if layer_node is not None and isinstance(layer_node.children, dict):
                    body_node = layer_node.children.get("body")
                yield from items(layer.get("body"), body_node)

    top = tree.children.get("layers") if isinstance(tree.children, dict) else None
    yield from items(data.get("layers"), top)


def _apply_defaults(data: dict[str, Any], tree: _Node) -> dict[str, Any]:
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


# --------------------------------------------------------------------------- pydantic errors


def _clean_loc(loc: tuple[Any, ...]) -> list[str | int]:
    """Drop pydantic's union tag (``layers.3.neural_epdo.g`` -> ``layers[3].g``)."""
    out: list[str | int] = []
    for i, seg in enumerate(loc):
        if seg == "[key]":
            continue
        after_index = i >= 2 and isinstance(loc[i - 1], int) and loc[i - 2] in ("layers", "body")
        if after_index and seg in LAYER_TYPES:
            continue
        out.append(seg)
    return out


def _format_path(segments: list[str | int]) -> str:
    text = ""
    for seg in segments:
        text += f"[{seg}]" if isinstance(seg, int) else (f".{seg}" if text else str(seg))
    return text


def _first_model(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _first_model(arg)
        if found is not None:
            return found
    return None


def _model_at(loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The schema model that holds the value at pydantic location ``loc``."""
    model: type[BaseModel] | None = Spec
    for i, seg in enumerate(loc):
        if isinstance(seg, int):
            continue
        if i >= 1 and isinstance(loc[i - 1], int) and seg in LAYER_TYPES:
            model = LAYER_TYPES[seg]
            continue
        field = model.model_fields.get(seg) if model is not None else None
        if field is None:
            return None
        model = _first_model(field.annotation)
    return model


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _error_message(error: dict[str, Any]) -> str:
    kind, loc = error["type"], error["loc"]
    if kind == "extra_forbidden":
        model = _model_at(loc[:-1])
        allowed = [k for k in (model.model_fields if model else ()) if k != "op"]
        if model is Spec:
            allowed.insert(2, "extends")
        return f"unknown key {loc[-1]!r}; allowed: {', '.join(allowed)}"
    if kind == "missing":
        return f"missing required key {loc[-1]!r}"
    in_body = len(loc) >= 2 and loc[-2] == "body"
    ops = ", ".join(BODY_OPS if in_body else LAYER_OPS)
    if kind == "union_tag_invalid":
        tag = error.get("ctx", {}).get("tag")
        where = " inside a residual body" if in_body else ""
        return f"unknown op {tag!r}{where}; allowed ops: {ops}"
    if kind == "union_tag_not_found":
        return f"a layer needs an 'op' key; allowed ops: {ops}"
    if kind == "model_attributes_type" and isinstance(loc[-1], int):
        return f"a layer must be a mapping with an 'op' key, got {_short(error['input'])}"
    message = str(error["msg"]).removeprefix("Value error, ")
    if kind in ("value_error", "assertion_error"):
        return message
    return f"{message} (got {_short(error['input'])})"


def _from_validation(exc: ValidationError) -> SpecError:
    errors = exc.errors(include_url=False)
    first = errors[0]
    message = _error_message(first)
    if len(errors) > 1:
        more = len(errors) - 1
        message += f" (and {more} more error{'s' if more > 1 else ''})"
    return SpecError(message, path=_format_path(_clean_loc(first["loc"])) or None)


# --------------------------------------------------------------------------- public API


def _raw_from_source(source: str | os.PathLike[str] | dict[str, Any]) -> _Raw:
    if isinstance(source, dict):
        data = copy.deepcopy(source)
        raw = _Raw(data, _data_tree(data), None, None)
        return _resolve_extends(raw, Path.cwd(), ())
    try:
        path = resolve_spec_source(source)
    except FileNotFoundError as exc:
        raise SpecError(str(exc)) from None
    return _read_file(path, ())


def load_spec(source: str | os.PathLike[str] | dict[str, Any] | Spec) -> Spec:
    """Load, merge, validate and plan a spec; every problem raises :class:`SpecError`.

    ``source`` is a YAML file path, a shipped spec name (see
    :func:`epdo.zoo.registry.list_specs`), an already parsed dict (its ``extends`` resolves
    against shipped names or the working directory) or a :class:`Spec` (returned as is).
    """
    if isinstance(source, Spec):
        return source
    from .plan import plan_model  # plan imports this module; import here to avoid a cycle

    raw = _raw_from_source(source)
    data = _apply_defaults(raw.data, raw.tree)
    data.setdefault("name", raw.stem or "spec")
    try:
        try:
            spec = Spec.model_validate(data)
        except ValidationError as exc:
            raise _from_validation(exc) from None
        spec._source_file = raw.file
        plan_model(spec)
    except SpecError as err:
        if err.file is not None:
            raise
        raise err.located(*_locate(raw.tree, err.path, raw.file)) from None
    return spec
