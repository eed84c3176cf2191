"""The inference graph of a zoo model: plain PyTorch modules, ready to trace and export.

``inference_model(model, spec)`` rebuilds a trained :class:`~epdo.zoo.builder.ZooModel`
(in eval semantics) from standard modules only:

- the input is RAW images ``(B, C, H, W)`` float32 in [0, 1]; the spec's normalisation
  ``(x - mean) / std`` is the first op of the graph;
- every equivariant kernel is expanded ONCE from its basis into a plain ``nn.Conv2d``
  weight (PDO-eConv and 1x1 intertwiners, with stride, padding and field bias);
- BatchNorm (eval statistics) is folded into the preceding conv or linear layer, which is
  exact: ``y = s * (W x + b) + t = (s W) x + (s b + t)`` with, for a field-wise BatchNorm,
  ``s_c = gamma_f / sqrt(var_f + eps)`` and ``t_c = beta_f - mean_f s_c`` repeated over the
  d channels of field f; a BatchNorm with nothing to fold into becomes a channel affine;
- dropout is removed, the D_N -> C_N restriction (identity on tensors) too;
- the Neural ePDO keeps its structure in plain modules: 1x1 ``Conv2d`` reduce, FieldNorm as
  ``F.group_norm``, the coefficient map as a grouped 1x1 ``Conv2d`` with the precomputed
  (stencil-folded) weight, the L1 normalisation, the spatially varying 5x5 product as 25
  shifted multiply-adds (Pad, Slice, Mul, Add), and the output 1x1 ``Conv2d``.

Folding is computed in float64 and stored in float32.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from epdo.zoo.layers.conv import EquivariantConv
from epdo.zoo.layers.head import ClassifierHead, Residual
from epdo.zoo.layers.neural_epdo import L1_EPS, NeuralEPDO
from epdo.zoo.layers.norms import FieldBatchNorm
from epdo.zoo.layers.pooling import GroupPool, Restrict, SpatialPool
from epdo.zoo.layers.stencil_product import export_product, generated_product
from epdo.zoo.spec import Spec


class UnsupportedModuleError(TypeError):
    """A module the inference-graph builder does not know how to convert."""


class Normalize(nn.Module):
    """``(x - mean) / std`` per channel, with constant (1, C, 1, 1) buffers."""

    def __init__(self, mean: list[float], std: list[float]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class ChannelAffine(nn.Module):
    """``x * scale_c + shift_c``: an eval-mode BatchNorm that had no conv to fold into."""

    def __init__(self, scale: torch.Tensor, shift: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("scale", scale.float().view(1, -1, 1, 1))
        self.register_buffer("shift", shift.float().view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale + self.shift


class FieldMaxMean(nn.Module):
    """Group pooling: (B, F*d, H, W) -> (B, F, H, W), max or mean over each field."""

    def __init__(self, fields: int, dim: int, kind: str) -> None:
        super().__init__()
        self.fields, self.dim, self.kind = fields, dim, kind

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v = x.unflatten(1, (self.fields, self.dim))
        return v.amax(2) if self.kind == "max" else v.mean(2)


class Head(nn.Module):
    """[BN-ReLU as a channel affine and ReLU], group pooling (or none), global spatial pooling
    and the (folded) MLP."""

    def __init__(self, pre: nn.Module, group_pool: nn.Module, spatial: str,
                 mlp: nn.Sequential) -> None:
        super().__init__()
        self.pre, self.group_pool, self.spatial, self.mlp = pre, group_pool, spatial, mlp

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v = self.group_pool(self.pre(x))
        v = v.amax(dim=(2, 3)) if self.spatial == "max" else v.mean(dim=(2, 3))
        return self.mlp(v)


class ResidualBlock(nn.Module):
    """``act(body(p) + shortcut)``, p = pre(x); the shortcut is x or a projection of p."""

    def __init__(self, body: nn.Module, shortcut: nn.Module | None, relu: bool,
                 pre: nn.Module) -> None:
        super().__init__()
        self.body, self.shortcut, self.relu, self.pre = body, shortcut, relu, pre

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.pre(x)
        y = self.body(p) + (x if self.shortcut is None else self.shortcut(p))
        return torch.relu(y) if self.relu else y


class NeuralEPDOInference(nn.Module):
    """The Neural ePDO forward in plain modules (see the module docstring).

    Args:
        reduce: 1x1 conv to the generator's mid fields.
        norm_groups / norm_weight / norm_bias / norm_eps: FieldNorm as group norm with
            per-channel affine (the per-field values repeated over the field's channels).
        generator: grouped 1x1 conv producing g*k*k*d raw coefficients per pixel, ordered
            (field, offset, component), the stencil scale folded in.
        g, d, kernel_size: operator fields, field dimension, stencil size.
        out: 1x1 conv to the output fields (BatchNorm possibly folded in).
    """

    def __init__(
        self,
        reduce: nn.Conv2d,
        norm_groups: int,
        norm_weight: torch.Tensor,
        norm_bias: torch.Tensor,
        norm_eps: float,
        generator: nn.Conv2d,
        g: int,
        d: int,
        kernel_size: int,
        out: nn.Conv2d,
    ) -> None:
        super().__init__()
        self.reduce, self.generator, self.out = reduce, generator, out
        self.norm_groups, self.norm_eps = norm_groups, norm_eps
        self.register_buffer("norm_weight", norm_weight.float())
        self.register_buffer("norm_bias", norm_bias.float())
        self.g, self.d, self.k = g, d, kernel_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.reduce(x)
        h = F.relu(F.group_norm(h, self.norm_groups, self.norm_weight, self.norm_bias,
                                self.norm_eps))
        if torch.jit.is_tracing() or torch.onnx.is_in_onnx_export():
            y = export_product(self.generator(h), x, self.g, self.k, L1_EPS)
        else:
            y = generated_product(h, x, self.generator.weight, self.generator.groups, self.g,
                                  self.k, L1_EPS)
        return self.out(y)


# --------------------------------------------------------------------------- folding


def _bn_scale_shift(bn: nn.modules.batchnorm._BatchNorm, repeat: int) -> tuple[torch.Tensor,
                                                                             torch.Tensor]:
    """Per-channel (scale, shift) of an eval-mode BatchNorm, float64, repeated ``repeat``x."""
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


def _field_bn(norm: FieldBatchNorm) -> tuple[torch.Tensor, torch.Tensor]:
    return _bn_scale_shift(norm.bn, norm.in_type.field.dim)


def _fold(layer: nn.Conv2d | nn.Linear, scale: torch.Tensor, shift: torch.Tensor) -> None:
    """Fold ``y -> scale * y + shift`` (per output channel) into ``layer`` in place."""
    w = layer.weight.detach().double()
    b = layer.bias.detach().double() if layer.bias is not None else torch.zeros_like(scale)
    shape = (-1,) + (1,) * (w.dim() - 1)
    new_w = (w * scale.view(shape)).float()
    new_b = (b * scale + shift).float()
    layer.weight = nn.Parameter(new_w, requires_grad=False)
    layer.bias = nn.Parameter(new_b, requires_grad=False)


def _plain_conv(weight: torch.Tensor, bias: torch.Tensor | None, stride: int, padding: int,
                groups: int = 1) -> nn.Conv2d:
    """An ``nn.Conv2d`` holding ``weight`` (C_out, C_in/groups, k, k) and ``bias``."""
    c_out, c_in_g, k, _ = weight.shape
    conv = nn.Conv2d(c_in_g * groups, c_out, k, stride, padding, groups=groups,
                     bias=bias is not None)
    conv.weight = nn.Parameter(weight.detach().float().clone(), requires_grad=False)
    if bias is not None:
        conv.bias = nn.Parameter(bias.detach().float().clone(), requires_grad=False)
    return conv


def _equivariant_conv(conv: EquivariantConv) -> nn.Conv2d:
    """The kernel expanded once from the basis, as a plain Conv2d."""
    with torch.no_grad():
        weight = conv.expansion()
        bias = conv.bias() if conv.bias is not None else None
    return _plain_conv(weight, bias, conv.stride, conv.padding)


def _copy_conv(conv: nn.Conv2d) -> nn.Conv2d:
    if isinstance(conv.padding, str):
        raise UnsupportedModuleError(f"Conv2d with padding={conv.padding!r} is not supported")
    new = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride,
                    conv.padding, conv.dilation, conv.groups, conv.bias is not None)
    new.load_state_dict(conv.state_dict())
    new.requires_grad_(False)
    return new


def _neural_epdo(layer: NeuralEPDO) -> NeuralEPDOInference:
    with torch.no_grad():
        gen_w = layer.generator_weight()
    d = layer.in_type.field.dim
    mid_d = layer.norm.in_type.field.dim
    return NeuralEPDOInference(
        reduce=_equivariant_conv(layer.reduce),
        norm_groups=layer.norm.in_type.count,
        norm_weight=layer.norm.weight.detach().repeat_interleave(mid_d),
        norm_bias=layer.norm.bias.detach().repeat_interleave(mid_d),
        norm_eps=layer.norm.eps,
        generator=_plain_conv(gen_w, None, 1, 0, groups=layer.s),
        g=layer.g,
        d=d,
        kernel_size=layer.kernel_size,
        out=_equivariant_conv(layer.out),
    )


def _foldable_target(module: nn.Module | None) -> nn.Conv2d | None:
    """The Conv2d whose output channels a following BatchNorm acts on, if any."""
    if isinstance(module, nn.Conv2d):
        return module
    if isinstance(module, NeuralEPDOInference):
        return module.out
    return None


def _convert_sequence(modules: list[nn.Module]) -> nn.Sequential:
    """Convert a list of modules, folding every BatchNorm into what precedes it."""
    out: list[nn.Module] = []
    for module in modules:
        if isinstance(module, FieldBatchNorm | nn.BatchNorm1d | nn.BatchNorm2d):
            scale, shift = (_field_bn(module) if isinstance(module, FieldBatchNorm)
                            else _bn_scale_shift(module, 1))
            prev = out[-1] if out else None
            target = prev if isinstance(prev, nn.Linear) else _foldable_target(prev)
            if target is not None:
                _fold(target, scale, shift)
            elif isinstance(module, nn.BatchNorm1d):
                raise UnsupportedModuleError("BatchNorm1d must follow a Linear layer")
            else:
                out.append(ChannelAffine(scale, shift))
            continue
        converted = _convert(module)
        if converted is not None:
            out.append(converted)
    return nn.Sequential(*out)


def _convert(module: nn.Module) -> nn.Module | None:
    """The inference form of one module; None for modules that vanish (dropout, ...)."""
    if isinstance(module, nn.Dropout | nn.Dropout2d | nn.Identity | Restrict):
        return None
    if isinstance(module, nn.Sequential):
        return _convert_sequence(list(module))
    if isinstance(module, EquivariantConv):
        return _equivariant_conv(module)
    if isinstance(module, NeuralEPDO):
        return _neural_epdo(module)
    if isinstance(module, nn.Conv2d):
        return _copy_conv(module)
    if isinstance(module, nn.Linear):
        lin = nn.Linear(module.in_features, module.out_features, module.bias is not None)
        lin.load_state_dict(module.state_dict())
        return lin.requires_grad_(False)
    if isinstance(module, nn.ReLU):
        return nn.ReLU()
    if isinstance(module, SpatialPool):
        pool = nn.MaxPool2d if module.kind == "max" else nn.AvgPool2d
        return pool(module.size)
    if isinstance(module, GroupPool):
        return FieldMaxMean(module.in_type.count, module.in_type.field.dim, module.kind)
    if isinstance(module, FieldBatchNorm):
        return _convert_sequence([module])
    if isinstance(module, ClassifierHead):
        gp = module.group_pool
        pooling = (nn.Identity() if gp is None
                   else FieldMaxMean(gp.in_type.count, gp.in_type.field.dim, gp.kind))
        pre = nn.Identity() if module.pre is None else _convert_sequence(list(module.pre))
        return Head(pre, pooling, module.spatial_pool, _convert_sequence(list(module.mlp)))
    if isinstance(module, Residual):
        body = _convert(module.body)
        shortcut = _convert(module.shortcut)
        pre = nn.Identity() if module.pre is None else _convert_sequence(list(module.pre))
        return ResidualBlock(body if body is not None else nn.Identity(), shortcut,
                             module.relu, pre)
    raise UnsupportedModuleError(
        f"no inference form for {type(module).__name__}; the exporter knows the zoo's layers"
    )


class InferenceModel(nn.Module):
    """RAW images (B, C, H, W) in [0, 1] -> logits (B, classes), plain modules only."""

    def __init__(self, normalize: Normalize, body: nn.Sequential,
                 input_shape: tuple[int, int, int]) -> None:
        super().__init__()
        self.normalize, self.body = normalize, body
        self.input_shape = input_shape

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.body(self.normalize(images))


def inference_model(model: nn.Module, spec: Spec) -> InferenceModel:
    """The inference graph of ``model`` (a ZooModel built from ``spec``), in eval mode.

    The result takes raw images in [0, 1] and agrees with ``model.eval()`` applied to
    ``(x - mean) / std`` up to float32 rounding (~1e-5 relative).
    """
    blocks: Any = getattr(model, "blocks", None)
    if blocks is None:
        raise UnsupportedModuleError(
            f"expected a zoo model with .blocks, got {type(model).__name__}"
        )
    body = _convert_sequence(list(blocks))
    c = spec.input.channels
    mean, std = list(spec.input.mean), list(spec.input.std)
    if len(mean) == 1 and c > 1:
        mean = mean * c
    if len(std) == 1 and c > 1:
        std = std * c
    shape = (c, spec.input.height, spec.input.width)
    inf = InferenceModel(Normalize(mean, std), body, shape)
    return inf.eval().requires_grad_(False)


def normalized(images: torch.Tensor, spec: Spec) -> torch.Tensor:
    """``(images - mean) / std`` with the spec's per-channel statistics."""
    c = images.shape[1]
    mean = torch.tensor(spec.input.mean, dtype=images.dtype).view(1, -1, 1, 1).expand(1, c, 1, 1)
    std = torch.tensor(spec.input.std, dtype=images.dtype).view(1, -1, 1, 1).expand(1, c, 1, 1)
    return (images - mean) / std


__all__ = ["InferenceModel", "UnsupportedModuleError", "inference_model", "normalized"]
