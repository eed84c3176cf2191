"""The Neural ePDO layer: a spatially adaptive equivariant PDO generated from local features.

Input: ``num_in`` fields of type rho (dim d), C = num_in * d channels, shape (B, C, H, W).

1. Generator: ``h = ReLU(FieldNorm(Lin1x1(x)))`` with
   ``num_mid = floor(C / (reduction * |G|))`` regular fields.
2. Coefficients: an equivariant 1x1 map, in ``s`` groups, from the num_mid regular fields to
   ``g`` operator fields of type ``rho (x) P^-T`` (d components x n_ops coefficients), times
   the (n_ops, 25) stencil matrix: at every pixel g*d stencils of 5x5. They are scaled by
   1/5 and each field's d*25 block is L1-normalized: ``W / (||W||_1 + 0.01)``. Regular input
   makes the map closed-form: operator field o reads mid field m through
   ``W[o, c, :, m, h] = theta[o, m, p_h^-1(c)] Q[h]`` with ``Q[h] = P(h)^-1 S`` (the stencil
   matrix folded in). With ``basis="normalized"`` (the papers' code) the generator's basis
   is orthonormal: the element (c0, n) of one (o, m) pair is ``[p_h^-1(c) = c0] Q[h, n]``,
   their Gram matrix is ``I_d (x) G`` with ``G = sum_h Q[h] Q[h]^T``, so Q[h] is replaced by
   ``G^-1/2 Q[h]`` (the symmetric orthonormalisation, which spans the same space), and theta
   starts N(0, k*k / (n_ops * num_mid / s)) as in that code; ``"raw"`` keeps Q[h] and
   starts theta N(0, 1 / (|G| * num_mid / s)).
3. Apply: the C channels form q = num_in / g partitions of g*d channels, all using the same
   g*d stencils: ``y_c(p) = sum_o W_{c mod gd}(p, o) x_c(p + o)``, a spatially varying
   depthwise 5x5 correlation (:mod:`.stencil_product`: generated, normalised and applied
   chunk by chunk, never the 25x unfolded input nor the full coefficient tensor).
4. Output: an equivariant 1x1 map from the num_in rho-fields to ``out_type``.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..bases import inverse_derivative_reps, inverse_permutations
from ..reps import FeatureType, FieldRep, PermutationRep
from ..stencils import stencils as derivative_stencils
from .conv import Conv1x1
from .native import stencil_kernels
from .norms import FieldNorm
from .plain import plain_conv
from .stencil_product import export_product, generated_product, onnx_product, tracing_plain
from .typed import TypedModule

L1_EPS = 0.01
STENCIL_SCALE = 0.2


def orthonormalizer(q: np.ndarray) -> np.ndarray:
    """``G^-1/2`` for ``G = sum_h Q[h] Q[h]^T`` (n_ops x n_ops), q of shape (|G|, n_ops, k*k):
    ``G^-1/2 Q[h]`` makes the generator's basis elements orthonormal (see the module
    docstring). G is symmetric positive definite when the stencils are independent."""
    gram = np.einsum("hnq,hmq->nm", q, q)
    values, vectors = np.linalg.eigh(gram)
    if values.min() <= 1e-12 * values.max():
        raise ValueError("the stencils are linearly dependent; the generator basis is singular")
    return (vectors / np.sqrt(values)) @ vectors.T


def mid_fields(in_type: FeatureType, reduction: int) -> int:
    """num_mid = floor(num_in * d / (reduction * |G|)), as in the paper's code; must be >= 1."""
    num_mid = in_type.regular_fields_per(reduction)
    if num_mid < 1:
        raise ValueError(
            f"the generator needs floor(num_in*d/(reduction*|G|)) = floor({in_type.channels}/"
            f"({reduction}*{in_type.group.order})) >= 1 regular fields; lower the reduction"
        )
    return num_mid


class NeuralEPDO(TypedModule):
    """Neural ePDO: ``in_type`` (num_in fields of type rho) -> ``out_type``.

    Args:
        order: highest derivative order of the generated operators (0..4).
        g: operator fields generated per pixel (divides num_in).
        s: groups of the coefficient map (divides num_mid and g).
        reduction: num_mid = num_in * d / (reduction * |G|).
        discretization: ``fd`` | ``fd_wide`` | ``gauss`` | ``rbffd`` stencils.
        basis: ``"normalized"`` (the papers') or ``"raw"``, for the generator and the two
            1x1 layers (see the module docstring and :mod:`.expansion`).
    """

    def __init__(
        self,
        in_type: FeatureType,
        out_type: FeatureType,
        order: int = 4,
        g: int = 4,
        s: int = 1,
        reduction: int = 1,
        discretization: str = "gauss",
        bias: bool = False,
        basis: str = "normalized",
    ) -> None:
        super().__init__()
        group = in_type.group
        self.basis = basis
        self.in_type, self.out_type = in_type, out_type
        self.order, self.g, self.s, self.reduction = order, g, s, reduction
        self.discretization = discretization
        if in_type.count % g != 0:
            raise ValueError(f"g={g} must divide the {in_type.count} input fields")
        num_mid = mid_fields(in_type, reduction)
        if num_mid % s != 0 or g % s != 0:
            raise ValueError(f"s={s} must divide num_mid={num_mid} and g={g}")
        self.num_mid = num_mid
        regular = FieldRep((PermutationRep(group, 1),))
        mid_type = FeatureType(regular, num_mid)
        self.reduce = Conv1x1(in_type, mid_type, basis=basis)
        self.norm = FieldNorm(mid_type)

        stencil = derivative_stencils(discretization, order)
        n_ops, k, _ = stencil.shape
        self.kernel_size = k
        d = in_type.field.dim
        q = inverse_derivative_reps(group, order) @ stencil.reshape(n_ops, k * k)
        if basis == "normalized":
            q = orthonormalizer(q) @ q
        self.register_buffer("q", torch.from_numpy(q.copy()), persistent=False)
        gather = inverse_permutations(in_type.field)  # (|G|, d)
        self.register_buffer("gather", torch.from_numpy(gather.T.copy()), persistent=False)
        self.theta = nn.Parameter(torch.empty(g, num_mid // s, d, n_ops))
        self.out = Conv1x1(in_type, out_type, bias=bias, basis=basis)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        fan_in = self.num_mid // self.s
        if self.basis == "normalized":
            n_ops = self.theta.shape[-1]
            std = math.sqrt(self.kernel_size**2 / (n_ops * fan_in))
        else:
            std = 1.0 / math.sqrt(fan_in * self.in_type.group.order)
        nn.init.normal_(self.theta, std=std)

    def generator_weight(self) -> torch.Tensor:
        """The folded coefficient map as a grouped 1x1 conv weight
        (g*k*k*d, num_mid*|G|/s, 1, 1), output channels ordered (field, offset, component),
        the stencil scale 1/5 folded in."""
        th = self.theta[:, :, self.gather, :]  # (g, mid/s, d, |G|, n_ops)
        w = torch.einsum("omchn,hnq->oqcmh", th, self.q.to(th.dtype) * STENCIL_SCALE)
        g, kk, d, m, G = w.shape
        return w.reshape(g * kk * d, m * G, 1, 1)

    def generator_input(self, x: torch.Tensor) -> torch.Tensor:
        """h = ReLU(FieldNorm(Lin1x1(x))), (B, num_mid*|G|, H, W)."""
        return F.relu(self.norm(self.reduce(x)), inplace=True)

    def stencils(self, x: torch.Tensor) -> torch.Tensor:
        """Per-pixel normalized stencils (B, g*d, k*k, H, W) generated from ``x`` (the
        definition, for tests; the forward never materialises them)."""
        raw = F.conv2d(self.generator_input(x), self.generator_weight(), groups=self.s)
        B, _, H, W = raw.shape
        d, kk = self.in_type.field.dim, self.kernel_size**2
        w = raw.reshape(B, self.g, kk * d, H, W)
        w = w / (w.abs().sum(2, keepdim=True) + L1_EPS)
        return w.reshape(B, self.g, kk, d, H, W).transpose(2, 3).reshape(B, self.g * d, kk, H, W)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        h = self.generator_input(x)
        weight = self.generator_weight()
        if torch.onnx.is_in_onnx_export():
            y = onnx_product(h, x, weight, self.s, self.g, self.kernel_size, L1_EPS)
        elif tracing_plain():
            raw = F.conv2d(h, weight, groups=self.s)
            y = export_product(raw, x, self.g, self.kernel_size, L1_EPS)
        else:
            y = generated_product(h, x, weight, self.s, self.g, self.kernel_size, L1_EPS)
        return self.out(y)

    def warm_up(self, device: torch.device) -> None:
        """One-off work before timed use: on a CPU, build (first use only) the fused
        product kernels."""
        if device.type == "cpu":
            stencil_kernels()

    def extra_flops(self, height: int, width: int) -> int:
        """Forward FLOPs beyond convolutions on an ``height`` x ``width`` input: the
        spatially varying k x k product, one multiply-add per channel, pixel and tap."""
        return 2 * self.in_type.channels * height * width * self.kernel_size**2

    def export(self) -> NeuralEPDOInference:
        """Inference form (see :class:`NeuralEPDOInference`); BatchNorm after the layer
        folds into its output 1x1."""
        with torch.no_grad():
            gen_w = self.generator_weight()
        mid_d = self.norm.in_type.field.dim
        return NeuralEPDOInference(
            reduce=self.reduce.export(),
            norm_groups=self.norm.in_type.count,
            norm_weight=self.norm.weight.detach().repeat_interleave(mid_d),
            norm_bias=self.norm.bias.detach().repeat_interleave(mid_d),
            norm_eps=self.norm.eps,
            generator=plain_conv(gen_w, None, 1, 0, groups=self.s),
            g=self.g,
            d=self.in_type.field.dim,
            kernel_size=self.kernel_size,
            out=self.out.export(),
        )

    def extra_repr(self) -> str:
        return (
            super().extra_repr()
            + f", order={self.order}, g={self.g}, s={self.s}, reduction={self.reduction}, "
            f"num_mid={self.num_mid}, {self.discretization}"
        )


class NeuralEPDOInference(nn.Module):
    """The Neural ePDO forward in plain modules: 1x1 ``Conv2d`` reduce, FieldNorm as
    ``F.group_norm`` with per-channel affine, the coefficient map as a grouped 1x1 ``Conv2d``
    (g*k*k*d raw coefficients per pixel, ordered (field, offset, component), the stencil
    scale folded in), the L1 normalisation and the spatially varying product
    (:func:`.stencil_product.export_product` under ``torch.jit.trace``, the ONNX placeholder
    under ``torch.onnx.export``, the registered operator ``epdo::stencil_product`` otherwise,
    ``torch.export`` included), and the output 1x1 ``Conv2d`` (``output_layer``: a following
    BatchNorm folds into it).
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

    @property
    def output_layer(self) -> nn.Conv2d:
        return self.out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.reduce(x)
        h = F.relu(F.group_norm(h, self.norm_groups, self.norm_weight, self.norm_bias,
                                self.norm_eps))
        if torch.onnx.is_in_onnx_export():
            y = onnx_product(h, x, self.generator.weight, self.generator.groups, self.g,
                             self.k, L1_EPS)
        elif tracing_plain():
            y = export_product(self.generator(h), x, self.g, self.k, L1_EPS)
        else:
            y = generated_product(h, x, self.generator.weight, self.generator.groups, self.g,
                                  self.k, L1_EPS)
        return self.out(y)
