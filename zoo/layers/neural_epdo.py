"""The Neural ePDO layer: a spatially adaptive equivariant PDO generated from local features.

Input: ``num_in`` fields of type rho (dim d), C = num_in * d channels, shape (B, C, H, W).

1. Generator: ``h = ReLU(FieldNorm(Lin1x1(x)))`` with
   ``num_mid = floor(C / (reduction * |G|))`` regular fields.
2. Coefficients: an equivariant 1x1 map, in ``s`` groups, from the num_mid regular fields to
   ``g`` operator fields of type ``rho (x) P^-T`` (d components x n_ops coefficients), times
   the (n_ops, 25) stencil matrix: at every pixel g*d stencils of 5x5. They are scaled by
   1/5 and each field's d*25 block is L1-normalized: ``W / (||W||_1 + 0.01)``. Regular input
   makes the map closed-form: operator field o reads mid field m through
   ``W[o, c, :, m, h] = theta[o, m, p_h^-1(c)] P(h)^-1 S`` (the stencil matrix folded in).
3. Apply: the C channels form q = num_in / g partitions of g*d channels, all using the same
   g*d stencils: ``y_c(p) = sum_o W_{c mod gd}(p, o) x_c(p + o)``, a spatially varying
   depthwise 5x5 correlation, computed as 25 shifted multiply-adds over views (never the
   25x unfolded input).
4. Output: an equivariant 1x1 map from the num_in rho-fields to ``out_type``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..bases import inverse_derivative_reps, inverse_permutations
from ..reps import FeatureType, FieldType, PermutationRep
from ..stencils import stencils as derivative_stencils
from .conv import Conv1x1
from .norms import FieldNorm
from .typed import TypedModule

L1_EPS = 0.01
STENCIL_SCALE = 0.2


def mid_fields(in_type: FeatureType, reduction: int) -> int:
    """num_mid = floor(num_in * d / (reduction * |G|)), as in the paper's code; must be >= 1."""
    total = in_type.channels
    denom = reduction * in_type.group.order
    if total // denom < 1:
        raise ValueError(
            f"the generator needs floor(num_in*d/(reduction*|G|)) = floor({total}/({reduction}*"
            f"{in_type.group.order})) >= 1 regular fields; lower the reduction"
        )
    return total // denom


class _SpatiallyVaryingProduct(torch.autograd.Function):
    """y = sum_o w_o * shift_o(x) with a hand-written backward.

    Autograd through 25 slices would allocate a zero tensor of the full input (and of the
    full stencil tensor) per offset in the backward pass; here the gradients accumulate in
    one buffer each. Only x and w are saved (no intermediate products).
    Shapes: x (B, P, K, H, W) partitions of K channels, w (B, 1, K, k*k, H, W).
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(x, w)
        return _accumulate_products(x, w)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        x, w = ctx.saved_tensors
        H, W = x.shape[-2:]
        k = math.isqrt(w.shape[3])
        r = k // 2
        grad_x = grad_w = None
        if ctx.needs_input_grad[0]:
            gxp = grad.new_zeros(*x.shape[:-2], H + 2 * r, W + 2 * r)
            for q in range(k * k):
                a, b = divmod(q, k)
                gxp[..., a : a + H, b : b + W].addcmul_(w[:, :, :, q], grad)
            grad_x = gxp[..., r : r + H, r : r + W]
        if ctx.needs_input_grad[1]:
            xp = F.pad(x, (r, r, r, r))
            grad_w = torch.stack(
                [
                    (grad * xp[..., a : a + H, b : b + W]).sum(1, keepdim=True)
                    for a, b in (divmod(q, k) for q in range(k * k))
                ],
                dim=3,
            )
        return grad_x, grad_w


def apply_spatially_varying(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """y_c(p) = sum_o w[c mod K](p, o) x_c(p + o) over the k x k offsets o.

    Args:
        x: (B, C, H, W) input, C a multiple of K.
        w: (B, K, k*k, H, W) per-pixel stencils, offset index a*k + b for row a, column b.
    Returns:
        (B, C, H, W), computed as k*k shifted multiply-adds over views (no unfolded copy).
    """
    B, C, H, W = x.shape
    K = w.shape[1]
    y = spatially_varying_product(x.reshape(B, C // K, K, H, W), w.unsqueeze(1))
    return y.reshape(B, C, H, W)


def spatially_varying_product(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """``sum_o w_o * shift_o(x)``; x (B, P, K, H, W), w (B, 1, K, k*k, H, W).

    Three paths, one result: under ``torch.jit.trace`` / ``torch.onnx.export`` plain
    out-of-place ops (:func:`shifted_products`: Pad, Slice, Mul, Add), so exported graphs
    hold only standard operators; without autograd the in-place accumulation (2-4x faster
    on a CPU than the out-of-place sum); with autograd the custom function and its
    memory-lean backward.
    """
    if torch.jit.is_tracing() or torch.onnx.is_in_onnx_export():
        return shifted_products(x, w)
    if not torch.is_grad_enabled() or not (x.requires_grad or w.requires_grad):
        return _accumulate_products(x, w)
    return _SpatiallyVaryingProduct.apply(x, w)


def _accumulate_products(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """:func:`shifted_products` accumulated in place (no autograd)."""
    H, W = x.shape[-2:]
    k = math.isqrt(w.shape[3])
    r = k // 2
    xp = F.pad(x, (r, r, r, r))
    out = w[:, :, :, 0] * xp[..., 0:H, 0:W]
    for q in range(1, k * k):
        a, b = divmod(q, k)
        out.addcmul_(w[:, :, :, q], xp[..., a : a + H, b : b + W])
    return out


def shifted_products(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """``sum_o w_o * shift_o(x)`` in plain out-of-place ops (Pad, Slice, Mul, Add), so that
    ``torch.jit.trace`` and ``torch.onnx.export`` see only standard operators.
    Shapes: x (B, P, K, H, W), w (B, 1, K, k*k, H, W); returns (B, P, K, H, W).
    """
    H, W = x.shape[-2:]
    k = math.isqrt(w.shape[3])
    r = k // 2
    xp = F.pad(x, (r, r, r, r))
    taps = w.movedim(3, 0)  # offsets first: each tap is one contiguous block in an export
    out = taps[0] * xp[..., 0:H, 0:W]
    for q in range(1, k * k):
        a, b = divmod(q, k)
        out = out + taps[q] * xp[..., a : a + H, b : b + W]
    return out


def apply_spatially_varying_reference(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """The same product through the 25x unfolded input (reference for tests)."""
    B, C, H, W = x.shape
    K, kk = w.shape[1], w.shape[2]
    k = math.isqrt(kk)
    cols = F.unfold(x, k, padding=k // 2).reshape(B, C // K, K, kk, H, W)
    return (cols * w.unsqueeze(1)).sum(3).reshape(B, C, H, W)


class NeuralEPDO(TypedModule):
    """Neural ePDO: ``in_type`` (num_in fields of type rho) -> ``out_type``.

    Args:
        order: highest derivative order of the generated operators (0..4).
        g: operator fields generated per pixel (divides num_in).
        s: groups of the coefficient map (divides num_mid and g).
        reduction: num_mid = num_in * d / (reduction * |G|).
        discretization: ``fd`` | ``gauss`` | ``rbffd`` stencils.
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
    ) -> None:
        super().__init__()
        group = in_type.group
        self.in_type, self.out_type = in_type, out_type
        self.order, self.g, self.s, self.reduction = order, g, s, reduction
        self.discretization = discretization
        if in_type.count % g != 0:
            raise ValueError(f"g={g} must divide the {in_type.count} input fields")
        num_mid = mid_fields(in_type, reduction)
        if num_mid % s != 0 or g % s != 0:
            raise ValueError(f"s={s} must divide num_mid={num_mid} and g={g}")
        self.num_mid = num_mid
        regular = FieldType((PermutationRep(group, 1),))
        mid_type = FeatureType(regular, num_mid)
        self.reduce = Conv1x1(in_type, mid_type)
        self.norm = FieldNorm(mid_type)

        stencil = derivative_stencils(discretization, order)
        n_ops, k, _ = stencil.shape
        self.kernel_size = k
        d = in_type.field.dim
        q = inverse_derivative_reps(group, order) @ stencil.reshape(n_ops, k * k)
        self.register_buffer("q", torch.from_numpy(q.copy()), persistent=False)
        gather = inverse_permutations(in_type.field)  # (|G|, d)
        self.register_buffer("gather", torch.from_numpy(gather.T.copy()), persistent=False)
        self.theta = nn.Parameter(torch.empty(g, num_mid // s, d, n_ops))
        self.out = Conv1x1(in_type, out_type, bias=bias)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        fan_in = (self.num_mid // self.s) * self.in_type.group.order
        nn.init.normal_(self.theta, std=1.0 / math.sqrt(fan_in))

    def generator_weight(self) -> torch.Tensor:
        """The folded coefficient map as a grouped 1x1 conv weight
        (g*d*k*k, num_mid*|G|/s, 1, 1), output channels ordered (field, component, offset)."""
        th = self.theta[:, :, self.gather, :]  # (g, mid/s, d, |G|, n_ops)
        w = torch.einsum("omchn,hnq->ocqmh", th, self.q.to(th.dtype))
        g, d, kk, m, G = w.shape
        return w.reshape(g * d * kk, m * G, 1, 1)

    def stencils(self, x: torch.Tensor) -> torch.Tensor:
        """Per-pixel normalized stencils (B, g*d, k*k, H, W) generated from ``x``."""
        h = F.relu(self.norm(self.reduce(x)))
        raw = F.conv2d(h, self.generator_weight(), groups=self.s)
        B, _, H, W = raw.shape
        d, kk = self.in_type.field.dim, self.kernel_size**2
        w = raw.reshape(B, self.g, d * kk, H, W) * STENCIL_SCALE
        w = w / (w.abs().sum(2, keepdim=True) + L1_EPS)
        return w.reshape(B, self.g * d, kk, H, W)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        y = apply_spatially_varying(x, self.stencils(x))
        return self.out(y)

    def extra_repr(self) -> str:
        return (
            super().extra_repr()
            + f", order={self.order}, g={self.g}, s={self.s}, reduction={self.reduction}, "
            f"num_mid={self.num_mid}, {self.discretization}"
        )
