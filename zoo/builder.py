"""The builder: the one place where a validated spec (metadata) meets tensors.

``build_model(spec)`` walks the :class:`~epdo.zoo.plan.ModelPlan` of a spec and turns every
layer plan into modules. Every spec layer becomes one block (an ``nn.Sequential`` of its
conv, norm, activation, pooling and dropout), so tables and reports can follow the spec.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import nn

from .layers.conv import Conv1x1, PDOConv
from .layers.head import ClassifierHead, Residual
from .layers.neural_epdo import NeuralEPDO
from .layers.norms import FieldBatchNorm
from .layers.pooling import GroupPool, Restrict, SpatialPool
from .plan import LayerPlan, ModelPlan, plan_model
from .reps import FeatureType
from .spec import Spec, load_spec

CONV_OPS = ("pdo_conv", "neural_epdo", "conv1x1", "conv")


class ZooModel(nn.Module):
    """A network built from a spec: ``(B, C, H, W)`` images -> ``(B, classes)`` logits.

    Attributes:
        spec: the resolved spec (a :class:`Spec`), so the model can be rebuilt or saved.
        plan: the layer-by-layer type plan.
        blocks: one module per (expanded) spec layer; ``paths[i]`` is its spec path.
    """

    def __init__(self, spec: Spec, plan: ModelPlan, blocks: list[nn.Module]) -> None:
        super().__init__()
        self.spec = spec
        self.plan = plan
        self.blocks = nn.ModuleList(blocks)
        self.paths = [p.path for p in plan.layers]
        inp = plan.input
        self.input_shape = (inp.feature.channels, inp.height, inp.width)

    @property
    def group(self):
        return self.plan.input.group

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (B, classes) of images (B, C, H, W); the feature maps are channels-last
        in memory (what the 1x1 convolutions and the Neural ePDO's product run fastest on)."""
        x = x.contiguous(memory_format=torch.channels_last)
        for block in self.blocks:
            x = block(x)
        return x

    def features(self, x: torch.Tensor, upto: int) -> torch.Tensor:
        """The output of block ``upto`` (inclusive)."""
        x = x.contiguous(memory_format=torch.channels_last)
        for block in self.blocks[: upto + 1]:
            x = block(x)
        return x


def _conv(plan: LayerPlan, spec: Spec) -> nn.Module:
    L, inp = plan.layer, plan.inp
    out = FeatureType(plan.out.feature.field, plan.out.feature.count)
    disc, basis = spec.discretization, spec.kernel_basis
    if plan.op == "pdo_conv":
        return PDOConv(
            inp.feature, out, L.order, disc, L.stride, L.bias, basis, L.coefficients
        )
    if plan.op == "conv1x1":
        return Conv1x1(inp.feature, out, L.stride, L.bias, basis)
    if plan.op == "neural_epdo":
        return NeuralEPDO(
            inp.feature, out, L.order, L.g, L.s, L.reduction, disc, L.bias, basis
        )
    return nn.Conv2d(
        inp.feature.channels, L.channels, L.kernel, L.stride, L.kernel // 2, bias=L.bias
    )


def _conv_block(plan: LayerPlan, spec: Spec) -> nn.Sequential:
    L = plan.layer
    out = plan.out.feature
    mods: list[nn.Module] = [_conv(plan, spec)]
    if L.bn:
        mods.append(FieldBatchNorm(out))
    if L.relu:
        mods.append(nn.ReLU(inplace=True))
    if L.pool:
        mods.append(SpatialPool(out, L.pool, L.pool_kind))
    if L.dropout > 0:
        mods.append(nn.Dropout2d(L.dropout))
    return nn.Sequential(*mods)


def _block(plan: LayerPlan, spec: Spec) -> nn.Module:
    op, L = plan.op, plan.layer
    if op in CONV_OPS:
        return _conv_block(plan, spec)
    if op == "pool":
        return SpatialPool(plan.inp.feature, L.size, L.kind)
    if op == "dropout":
        return nn.Dropout(L.p)
    if op == "group_pool":
        return GroupPool(plan.inp.feature, L.kind)
    if op == "restrict":
        return Restrict(plan.inp.feature)
    if op == "head":
        return ClassifierHead(
            plan.inp.feature,
            L.classes,
            tuple(L.hidden),
            L.group_pool,
            L.spatial_pool,
            L.dropout,
            L.preact,
        )
    if op == "residual":
        body = nn.Sequential(*[_block(p, spec) for p in plan.body])
        shortcut = None
        if plan.shortcut == "conv1x1":
            shortcut = _preact_shortcut(plan, spec) if L.preact else _shortcut(plan, spec)
        pre = None
        if L.preact:
            pre = nn.Sequential(FieldBatchNorm(plan.inp.feature), nn.ReLU())
        return Residual(body, shortcut, L.relu_after_sum, pre)
    raise ValueError(f"{plan.path}: the builder does not know op {op!r}")


def _shortcut(plan: LayerPlan, spec: Spec) -> nn.Module:
    """1x1 equivariant projection + BatchNorm for a residual block that changes type or size.

    When the body shrinks the map by an exact factor k, the shortcut average-pools k x k
    (exactly equivariant on even sizes, where a stride-k 1x1 conv is not); else it strides.
    """
    inp, out = plan.inp, plan.out
    k = plan.shortcut_stride
    pooled = k > 1 and inp.height == k * out.height and inp.width == k * out.width
    mods: list[nn.Module] = []
    if pooled:
        mods.append(SpatialPool(inp.feature, k, "avg"))
    conv = Conv1x1(inp.feature, out.feature, 1 if pooled else k, basis=spec.kernel_basis)
    mods += [conv, FieldBatchNorm(out.feature)]
    return nn.Sequential(*mods)


def _preact_shortcut(plan: LayerPlan, spec: Spec) -> nn.Module:
    """A pre-activation block's projection: a strided 1x1 of the activated input, no BN (as
    in the PDO-eConvs CIFAR code; a stride on an even size is not exactly equivariant)."""
    basis = spec.kernel_basis
    return Conv1x1(plan.inp.feature, plan.out.feature, plan.shortcut_stride, basis=basis)


def build_from_plan(plan: ModelPlan) -> ZooModel:
    """Modules for every layer plan of ``plan``."""
    return ZooModel(plan.spec, plan, [_block(p, plan.spec) for p in plan.layers])


def build_model(spec: Spec | dict[str, Any] | str | os.PathLike[str]) -> ZooModel:
    """A model from a spec, a spec dict, a YAML path or a shipped spec name.

    The model is in train mode with freshly initialized weights (torch's global RNG).
    """
    if not isinstance(spec, Spec):
        spec = load_spec(spec)
    return build_from_plan(plan_model(spec))
