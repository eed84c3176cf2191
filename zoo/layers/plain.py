"""The inference form of a model: plain PyTorch modules, ready to trace and export.

Every zoo module knows its own inference form (its ``export()`` method, in eval semantics);
this module holds what they share and the walk over a model:

- :func:`export_module` asks a module for its inference form (``export()`` for zoo modules,
  a small table for torch's own: Conv2d and Linear are copied, ReLU kept, dropout and
  identities removed); None means the module vanishes;
- :func:`export_sequence` does that for a list of modules and folds every BatchNorm (eval
  statistics) into the conv or linear layer before it, which is exact:
  ``y = s * (W x + b) + t = (s W) x + (s b + t)`` with, for a field-wise BatchNorm,
  ``s_c = gamma_f / sqrt(var_f + eps)`` and ``t_c = beta_f - mean_f s_c`` repeated over the d
  channels of field f. A BatchNorm with nothing to fold into becomes a :class:`ChannelAffine`.
  A module's inference form says what a following BatchNorm folds into by its attribute
  ``output_layer`` (itself when it is a Conv2d or Linear);
- :func:`export_tapped` does it for a model with named outputs and skips: a
  :class:`TappedSequence` of runs of blocks (each run exported as above), keeping the
  outputs the skips read.

Folding is computed in float64 and stored in float32.
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import EpdoError

__all__ = [
    "ChannelAffine",
    "ChannelsLastConv2d",
    "InferenceModel",
    "TappedSequence",
    "UnsupportedModuleError",
    "bn_scale_shift",
    "export_module",
    "export_sequence",
    "export_tapped",
    "plain_conv",
]


class UnsupportedModuleError(EpdoError, TypeError):
    """A module that has no inference form."""


class InferenceModel(nn.Module):
    """RAW images (B, C, H, W) in [0, 1] -> logits (B, classes), plain modules only.

    The normalised images are made channels-last in memory, as the zoo model does: the 1x1
    convolutions and the Neural ePDO product run fastest on that layout (a torch program
    keeps it; ONNX has no memory layout and ignores it)."""

    def __init__(self, normalize: nn.Module, body: nn.Sequential | TappedSequence,
                 input_shape: tuple[int, int, int]) -> None:
        super().__init__()
        self.normalize, self.body = normalize, body
        self.input_shape = input_shape

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.body(self.normalize(images).contiguous(memory_format=torch.channels_last))


class ChannelAffine(nn.Module):
    """``x * scale_c + shift_c``: an eval-mode BatchNorm that had no conv to fold into."""

    def __init__(self, scale: torch.Tensor, shift: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("scale", scale.float().view(1, -1, 1, 1))
        self.register_buffer("shift", shift.float().view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale + self.shift


def bn_scale_shift(bn: nn.modules.batchnorm._BatchNorm,
                   repeat: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel (scale, shift) of an eval-mode BatchNorm, float64, each value repeated
    ``repeat`` times (the d channels of a field)."""
    if bn.running_mean is None or bn.running_var is None:
        raise UnsupportedModuleError(
            f"{type(bn).__name__} without running statistics cannot be folded for inference"
        )
    var = bn.running_var.detach().double()
    mean = bn.running_mean.detach().double()
    gamma = bn.weight.detach().double() if bn.weight is not None else torch.ones_like(var)
    beta = bn.bias.detach().double() if bn.bias is not None else torch.zeros_like(var)
    scale = gamma / torch.sqrt(var + bn.eps)
    shift = beta - mean * scale
    return scale.repeat_interleave(repeat), shift.repeat_interleave(repeat)


def _fold(layer: nn.Conv2d | nn.Linear, scale: torch.Tensor, shift: torch.Tensor) -> None:
    """Fold ``y -> scale * y + shift`` (per output channel) into ``layer`` in place."""
    w = layer.weight.detach().double()
    b = layer.bias.detach().double() if layer.bias is not None else torch.zeros_like(scale)
    shape = (-1,) + (1,) * (w.dim() - 1)
    layer.weight = nn.Parameter((w * scale.view(shape)).float(), requires_grad=False)
    layer.bias = nn.Parameter((b * scale + shift).float(), requires_grad=False)


class ChannelsLastConv2d(nn.Conv2d):
    """``nn.Conv2d`` whose output is channels-last in memory, as the zoo's equivariant
    convolutions keep it (fed one channel, or concatenated with an NCHW map, a convolution
    returns NCHW). The values are the convolution's; ONNX has no layout and ignores it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x).contiguous(memory_format=torch.channels_last)


def plain_conv(weight: torch.Tensor, bias: torch.Tensor | None, stride: int, padding: int,
               groups: int = 1, channels_last: bool = False) -> nn.Conv2d:
    """An ``nn.Conv2d`` holding ``weight`` (C_out, C_in/groups, k, k) and ``bias``; with
    ``channels_last`` a :class:`ChannelsLastConv2d`."""
    c_out, c_in_g, k, _ = weight.shape
    kind = ChannelsLastConv2d if channels_last else nn.Conv2d
    conv = kind(c_in_g * groups, c_out, k, stride, padding, groups=groups,
                bias=bias is not None)
    conv.weight = nn.Parameter(weight.detach().float().clone(), requires_grad=False)
    if bias is not None:
        conv.bias = nn.Parameter(bias.detach().float().clone(), requires_grad=False)
    return conv


def _copy_conv(conv: nn.Conv2d) -> nn.Conv2d:
    if isinstance(conv.padding, str):
        raise UnsupportedModuleError(f"Conv2d with padding={conv.padding!r} is not supported")
    new = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride,
                    conv.padding, conv.dilation, conv.groups, conv.bias is not None)
    new.load_state_dict(conv.state_dict())
    return new.requires_grad_(False)


def _copy_linear(linear: nn.Linear) -> nn.Linear:
    new = nn.Linear(linear.in_features, linear.out_features, linear.bias is not None)
    new.load_state_dict(linear.state_dict())
    return new.requires_grad_(False)


def _scale_shift(module: nn.Module) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(scale, shift) per channel when ``module`` is a BatchNorm of any kind, else None."""
    if hasattr(module, "channel_affine"):
        return module.channel_affine()
    if isinstance(module, nn.BatchNorm1d | nn.BatchNorm2d):
        return bn_scale_shift(module)
    return None


def _output_layer(module: nn.Module | None) -> nn.Conv2d | nn.Linear | None:
    """The Conv2d or Linear that produces ``module``'s output channels, if any."""
    if isinstance(module, nn.Conv2d | nn.Linear):
        return module
    return getattr(module, "output_layer", None)


def export_sequence(modules: list[nn.Module]) -> nn.Sequential:
    """The inference forms of ``modules`` in order, every BatchNorm folded into the conv or
    linear layer before it (see the module docstring)."""
    out: list[nn.Module] = []
    for module in modules:
        affine = _scale_shift(module)
        if affine is None:
            converted = export_module(module)
            if converted is not None:
                out.append(converted)
            continue
        target = _output_layer(out[-1] if out else None)
        if target is not None:
            _fold(target, *affine)
        elif isinstance(module, nn.BatchNorm1d):
            raise UnsupportedModuleError("BatchNorm1d must follow a Linear layer")
        else:
            out.append(ChannelAffine(*affine))
    return nn.Sequential(*out)


class TappedSequence(nn.Module):
    """Steps run in order, some outputs kept, skips fed a kept one: the inference body of a
    model with named layers and skips.

    ``keep[i]``: step i's output is stored (in the next free slot) when true; ``source[i]``:
    the slot step i reads as its second input ``step(x, kept[source[i]])``, or -1 for
    ``step(x)``. Both are plain Python lists, so tracing (``torch.jit.trace``,
    ``torch.export``, ONNX) unrolls the loop into a fixed graph. Shapes follow the steps:
    (B, C, H, W) in, whatever the last step gives out.
    """

    def __init__(self, steps: list[nn.Module], keep: list[bool], source: list[int]) -> None:
        super().__init__()
        if not len(steps) == len(keep) == len(source):
            raise ValueError("steps, keep and source need one entry per step")
        self.steps = nn.ModuleList(steps)
        self.keep = [bool(k) for k in keep]
        self.source = [int(s) for s in source]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kept: list[torch.Tensor] = []
        for step, keep, source in zip(self.steps, self.keep, self.source, strict=True):
            x = step(x) if source < 0 else step(x, kept[source])
            if keep:
                kept.append(x)
        return x


def export_tapped(modules: list[nn.Module], keep: list[int],
                  source: list[int]) -> TappedSequence:
    """The inference form of blocks ``modules`` with kept outputs and skips (``keep`` and
    ``source`` as :func:`epdo.zoo.ops.skip.tap_slots` gives them, one entry per block).

    The blocks are cut into runs: a skip is a run of its own, and a run ends at a kept
    output; each other run is exported with :func:`export_sequence` (BatchNorms folded
    inside it). A kept output keeps its slot number: runs are kept in slot order."""
    steps: list[nn.Module] = []
    keeps: list[bool] = []
    sources: list[int] = []
    run: list[nn.Module] = []

    def close(kept: bool) -> None:
        if run or kept:
            steps.append(export_sequence(run))
            keeps.append(kept)
            sources.append(-1)
            run.clear()

    for module, slot, src in zip(modules, keep, source, strict=True):
        if src >= 0:
            close(False)
            steps.append(export_module(module))
            keeps.append(slot >= 0)
            sources.append(src)
            continue
        run.append(module)
        if slot >= 0:
            close(True)
    close(False)
    return TappedSequence(steps, keeps, sources)


def export_module(module: nn.Module) -> nn.Module | None:
    """The inference form of one module; None for modules that vanish (dropout, ...)."""
    if hasattr(module, "export"):
        return module.export()
    if isinstance(module, nn.Sequential) or _scale_shift(module) is not None:
        return export_sequence(list(module) if isinstance(module, nn.Sequential) else [module])
    if isinstance(module, nn.Dropout | nn.Dropout2d | nn.Identity):
        return None
    if isinstance(module, nn.Conv2d):
        return _copy_conv(module)
    if isinstance(module, nn.Linear):
        return _copy_linear(module)
    if isinstance(module, nn.ReLU):
        return nn.ReLU()
    raise UnsupportedModuleError(
        f"no inference form for {type(module).__name__}; a zoo module gives its own "
        "with export()"
    )
