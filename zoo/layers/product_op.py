"""The Neural ePDO's generated stencil product as registered torch operators in epdo's
namespace, so that eager training, ``torch.compile``, ``torch.export`` (``.pt2``) and
AOTInductor all call the one fused implementation instead of spelling it in plain ops.

``epdo::stencil_product(Tensor h, Tensor x, Tensor weight, int groups, int g, int k,
float eps) -> Tensor``

    raw = conv2d(h, weight, groups=groups)              (B, g*k*k*d, H, W)
    N[f](p) = sum_{o, c} |raw[f, o, c](p)| + eps
    y[n, f, c](p) = sum_o raw[f, o, c](p) x[n, f, c](p + o) / N[f](p)

with h (B, M, H, W), x (B, C, H, W), C = P * g * d, weight (g*k*k*d, M/groups, 1, 1), output
channels ordered (field, offset, component); the result is (B, C, H, W) in channels-last
memory format (see :mod:`.stencil_product`).

``epdo::stencil_product_backward(Tensor grad_y, Tensor h, Tensor x, Tensor weight, Tensor y,
int groups, int g, int k, float eps, bool[] mask) -> (Tensor, Tensor, Tensor)``

    the gradients with respect to (h, x, weight), recomputing the coefficients chunk by
    chunk; a gradient that ``mask`` does not ask for is an empty (0-element) tensor.

Implementations: one kernel for every device (:func:`.stencil_product._forward` and
:func:`.stencil_product._backward`: on a CPU the fused C++ kernels when they are built, on any
other device, or without a compiler, the same chunks in PyTorch ops: the reference), fake
(meta) kernels that only compute shapes and strides (for tracing, export and compilation),
and the autograd formula of the forward operator (its backward is the second operator, so a
compiled training step traces through both without a graph break).

Importing this module registers both operators; a ``.pt2`` program or AOTInductor package
that calls them loads only where epdo is installed (epdo's loaders import it first).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from . import stencil_product as sp

__all__ = ["BACKWARD_SCHEMA", "NAMESPACE", "OP_NAME", "SCHEMA", "stencil_product",
           "stencil_product_backward"]

NAMESPACE = "epdo"
OP_NAME = "stencil_product"
SCHEMA = ("(Tensor h, Tensor x, Tensor weight, SymInt groups, SymInt g, SymInt k, float eps)"
          " -> Tensor")
"""The forward operator's schema (arguments and result), as ``torch.library`` prints it."""
BACKWARD_SCHEMA = ("(Tensor grad_y, Tensor h, Tensor x, Tensor weight, Tensor y, SymInt groups,"
                   " SymInt g, SymInt k, float eps, bool[] mask) -> (Tensor, Tensor, Tensor)")


def _check_shapes(h: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, groups: int, g: int,
                  k: int) -> int:
    """The component count d of the product's arguments, after checking that they fit."""
    torch._check(h.dim() == 4 and x.dim() == 4 and weight.dim() == 4,
                 lambda: "h, x and weight must be 4-d")
    torch._check(weight.shape[0] % (g * k * k) == 0,
                 lambda: f"weight has {weight.shape[0]} rows, not a multiple of g*k*k")
    d = weight.shape[0] // (g * k * k)
    torch._check(x.shape[1] % (g * d) == 0,
                 lambda: f"x has {x.shape[1]} channels, not a multiple of g*d = {g * d}")
    torch._check(h.shape[1] == weight.shape[1] * groups,
                 lambda: "h does not match the weight and groups")
    return d


@torch.library.custom_op(f"{NAMESPACE}::{OP_NAME}", mutates_args=())
def stencil_product(h: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, groups: int,
                    g: int, k: int, eps: float) -> torch.Tensor:
    """See the module docstring: the fused kernel on a CPU, chunked PyTorch ops elsewhere."""
    _check_shapes(h, x, weight, groups, g, k)
    return sp._forward(h, x, weight, groups, g, k, eps)


@stencil_product.register_fake
def _stencil_product_fake(h: torch.Tensor, x: torch.Tensor, weight: torch.Tensor,
                          groups: int, g: int, k: int, eps: float) -> torch.Tensor:
    """Shape and strides only: (B, C, H, W) channels-last, like the real kernel."""
    _check_shapes(h, x, weight, groups, g, k)
    B, C, H, W = x.shape
    return x.new_empty((B, H, W, C)).permute(0, 3, 1, 2)


@torch.library.custom_op(f"{NAMESPACE}::{OP_NAME}_backward", mutates_args=())
def stencil_product_backward(grad_y: torch.Tensor, h: torch.Tensor, x: torch.Tensor,
                             weight: torch.Tensor, y: torch.Tensor, groups: int, g: int,
                             k: int, eps: float, mask: Sequence[bool],
                             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """See the module docstring (:func:`.stencil_product._backward`)."""
    return sp._backward(grad_y, h, x, weight, y, groups, g, k, eps, list(mask))


@stencil_product_backward.register_fake
def _stencil_product_backward_fake(grad_y: torch.Tensor, h: torch.Tensor, x: torch.Tensor,
                                   weight: torch.Tensor, y: torch.Tensor, groups: int, g: int,
                                   k: int, eps: float, mask: Sequence[bool],
                                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """grad_h channels-last like h, grad_x channels-last like x, grad_w like weight; empty
    where ``mask`` is false."""
    need_h, need_x, need_w = mask
    B, C, H, W = x.shape
    grad_h = torch.empty_like(h, memory_format=torch.channels_last) if need_h else x.new_empty(0)
    grad_x = x.new_empty((B, H, W, C)).permute(0, 3, 1, 2) if need_x else x.new_empty(0)
    grad_w = torch.empty_like(weight, memory_format=torch.contiguous_format) if need_w \
        else x.new_empty(0)
    return grad_h, grad_x, grad_w


def _setup_context(ctx: Any, inputs: tuple[Any, ...], output: torch.Tensor) -> None:
    """Saved: h, x, the weight and y (feature-map sized); never the coefficients."""
    h, x, weight, groups, g, k, eps = inputs
    ctx.save_for_backward(h, x, weight, output)
    ctx.settings = (groups, g, k, eps)


def _backward(ctx: Any, grad_y: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
    h, x, weight, y = ctx.saved_tensors
    mask = [bool(n) for n in ctx.needs_input_grad[:3]]
    grads = torch.ops.epdo.stencil_product_backward(grad_y, h, x, weight, y, *ctx.settings,
                                                    mask)
    return (*(gr if need else None for gr, need in zip(grads, mask, strict=True)),
            None, None, None, None)


stencil_product.register_autograd(_backward, setup_context=_setup_context)


def _generator_flops(h_shape: Sequence[int], weight_shape: Sequence[int]) -> int:
    """FLOPs of the generator's 1x1 convolution (a FLOP counter counts convolutions and
    matrix products only)."""
    from torch.utils.flop_counter import conv_flop_count

    out_shape = [h_shape[0], weight_shape[0], *h_shape[2:]]
    return conv_flop_count(list(h_shape), list(weight_shape), out_shape)


def _register_flop_formulas() -> None:
    """So that ``FlopCounterMode`` sees the convolutions inside the operators as it would see
    them in plain ops: the generator convolution in the forward; in the backward the
    regenerating convolution plus the convolution's backward for grad h and grad weight
    (counted by torch's own formula)."""
    from torch.utils.flop_counter import conv_flop_count, register_flop_formula

    @register_flop_formula(torch.ops.epdo.stencil_product)
    def _forward_flops(h: Any, x: Any, weight: Any, *args: Any, **kwargs: Any) -> int:
        return _generator_flops(h, weight)

    @register_flop_formula(torch.ops.epdo.stencil_product_backward)
    def _backward_flops(grad_y: Any, h: Any, x: Any, weight: Any, y: Any, groups: Any, g: Any,
                        k: Any, eps: Any, mask: Sequence[bool], **kwargs: Any) -> int:
        if not (mask[0] or mask[2]):
            return 0
        raw = [h[0], weight[0], *h[2:]]
        flops = _generator_flops(h, weight)
        if mask[0]:  # grad h: a transposed convolution of grad raw with the weight
            flops += conv_flop_count(raw, list(weight), list(h), transposed=True)
        if mask[2]:  # grad weight: h against grad raw, batch and channels swapped
            def swap(shape: Sequence[int]) -> list[int]:
                return [shape[1], shape[0], *shape[2:]]
            flops += conv_flop_count(swap(h), swap(raw), swap(weight))
        return flops

_register_flop_formulas()


def registered_schema(name: str = OP_NAME) -> str:
    """The schema torch has registered for ``epdo::<name>`` (arguments and result)."""
    packet = getattr(getattr(torch.ops, NAMESPACE), name)
    text = str(packet.default._schema)
    return text[text.index("("):]
