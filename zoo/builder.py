"""The builder: the one place where a validated spec (metadata) meets tensors.

``build_model(spec)`` walks the spec's plan (:attr:`epdo.zoo.spec.Spec.plan`, computed once
when the spec was loaded) and asks every layer's op (:mod:`epdo.zoo.ops`) for its module.
Every spec layer becomes one block (for a conv-like op an ``nn.Sequential`` of its linear
map, norm, activation, pooling and dropout), so tables and reports can follow the spec.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from .groups import Group
from .layers.normalize import Normalize
from .layers.plain import InferenceModel, export_sequence, export_tapped
from .ops import OPS
from .ops.skip import tap_slots
from .spec import Spec, load_spec
from .stages import LayerPlan, ModelPlan

__all__ = ["ZooModel", "build_model"]


class ZooModel(nn.Module):
    """A network built from a spec: raw ``(B, C, H, W)`` images in [0, 1] -> ``(B, classes)``
    logits. Its first step is the spec's normalisation ``(x - mean) / std`` (as in every
    exported artifact), so training, evaluation and serving all feed it the same images.

    Attributes:
        spec: the resolved spec (a :class:`Spec`), so the model can be rebuilt or saved.
        plan: the layer-by-layer type plan (``spec.plan``).
        normalize: the input normalisation (constant buffers, not in the state dict).
        blocks: one module per (expanded) spec layer; ``paths[i]`` is its spec path.
        keep, source: for a spec with named layers, the slot block i's output is kept in
            (or -1) and the slot a skip block reads (or -1), from
            :func:`~epdo.zoo.ops.skip.tap_slots`; ``tapped`` is false without names.
    """

    def __init__(self, spec: Spec, blocks: list[nn.Module]) -> None:
        super().__init__()
        self.spec = spec
        self.plan: ModelPlan = spec.plan
        self.normalize = Normalize.from_input(spec.input)
        self.blocks = nn.ModuleList(blocks)
        self.paths = [p.path for p in self.plan.layers]
        inp = self.plan.input
        self.input_shape = (inp.feature.channels, inp.height, inp.width)
        self.keep, self.source = tap_slots(self.plan.layers)
        self.tapped = any(k >= 0 for k in self.keep)

    @property
    def group(self) -> Group:
        return self.plan.input.group

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (B, classes) of raw images (B, C, H, W) in [0, 1]; the feature maps are
        channels-last in memory (what the 1x1 convolutions and the Neural ePDO's product run
        fastest on)."""
        x = self.normalize(x).contiguous(memory_format=torch.channels_last)
        if self.tapped:
            return self._tapped_forward(x)
        for block in self.blocks:
            x = block(x)
        return x

    def _tapped_forward(self, x: torch.Tensor) -> torch.Tensor:
        """The blocks in order, keeping named outputs and feeding each skip its own."""
        y = x
        for y in self._run_blocks(x):  # noqa: B007 - the last block's output is returned
            pass
        return y

    def _run_blocks(self, x: torch.Tensor) -> Iterator[torch.Tensor]:
        """Each block's output in turn, from the normalised input ``x``, keeping the outputs
        of named layers and feeding each skip the one it reads."""
        kept: list[torch.Tensor] = []
        for block, keep, source in zip(self.blocks, self.keep, self.source, strict=True):
            x = block(x) if source < 0 else block(x, kept[source])
            if keep >= 0:
                kept.append(x)
            yield x

    def block_outputs(self, x: torch.Tensor) -> Iterator[torch.Tensor]:
        """The output of every block in turn (``blocks[i]`` for the spec path ``paths[i]``)
        for raw images ``x`` (B, C, H, W): fields (B, channels, h, w) of the block's planned
        type, then the head's logits; the last is ``self(x)``. A generator, so a caller that
        looks at one block at a time holds one block's output at a time (and the kept
        outputs of named layers)."""
        x = self.normalize(x).contiguous(memory_format=torch.channels_last)
        yield from self._run_blocks(x)

    def export(self) -> InferenceModel:
        """The inference graph of this model in eval semantics, plain PyTorch modules only
        (:mod:`epdo.zoo.layers.plain`): raw images in, logits out."""
        blocks = list(self.blocks)
        if self.tapped:
            body = export_tapped(blocks, self.keep, self.source)
        else:
            body = export_sequence(blocks)
        model = InferenceModel(self.normalize.export(), body, self.input_shape)
        return model.eval().requires_grad_(False)


class _Builder:
    """Modules for layer plans: the spec's model-wide settings and the op registry."""

    def __init__(self, spec: Spec) -> None:
        self.discretization = spec.discretization
        self.kernel_basis = spec.kernel_basis

    def block(self, plan: LayerPlan) -> nn.Module:
        return OPS[plan.op].build(plan, self)


def build_model(spec: Spec | dict[str, Any] | str | os.PathLike[str]) -> ZooModel:
    """A model from a spec, a spec dict, a YAML path or a shipped spec name.

    The model is in train mode with freshly initialized weights (torch's global RNG).
    """
    if not isinstance(spec, Spec):
        spec = load_spec(spec)
    builder = _Builder(spec)
    return ZooModel(spec, [builder.block(p) for p in spec.plan.layers])
