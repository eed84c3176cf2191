"""The Neural ePDO's spatially varying stencil product, in three implementations.

Notation: x (B, C, H, W) with C = P * K channels, read as P partitions of K = g * d channels
(g operator fields of d components). At every pixel p the generator gives raw coefficients
``r[f, o, c](p)`` for field f < g, offset o of the k x k stencil and component c < d; each
field's d * k * k block is L1-normalised and applied to every partition:

    y[n, f, c](p) = sum_o r[f, o, c](p) x[n, f, c](p + o) / (sum_{o', c'} |r[f, o', c'](p)| + eps)

for partition n. The normalisation is one positive scalar per (pixel, field), so it is applied
to the k * k-term sum once instead of to every coefficient.

- :func:`generated_product` is the fast path (training and inference): the generator's 1x1
  convolution, the normalisation and the product are computed chunk by chunk over the batch,
  in channels-last layout, so the g * k * k * d coefficients per pixel (64x the input at the
  paper's sizes) live only in cache-sized pieces and are never stored for the backward pass:
  :func:`_backward` recomputes them chunk by chunk from the generator input. Both run as the
  registered operators ``epdo::stencil_product`` and ``epdo::stencil_product_backward``
  (:mod:`.product_op`), which eager code, ``torch.compile``, ``torch.export`` and
  AOTInductor call alike. On a CPU the normalisation and product of a chunk (and their
  gradients) run in one fused pass over the pixels (:mod:`.native`, compiled on first
  use); without a compiler the same chunks go through k * k shifted multiply-adds in
  PyTorch ops.
- :func:`shifted_products` is the same product in plain out-of-place ops (Pad, Slice, Mul,
  Add) for ``torch.jit.trace`` (and the ``.pt2`` programs of earlier epdo versions);
  :func:`onnx_product` records the generator's convolution and the product in an ONNX
  export as one placeholder node, which :mod:`epdo.exporters.onnx_product` expands into
  standard operators that run a cache-sized chunk of images at a time.
- :func:`stencil_product_reference` goes through the k * k-fold unfolded input: the test oracle.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from types import ModuleType

import torch
import torch.nn.functional as F

from .native import stencil_kernels

# Chunk size target on a CPU: the coefficients of one chunk should stay in cache between
# their generation and their three uses (norm, product, gradient).
CPU_CHUNK_BYTES = 4 << 20

_DEFINITION = False


@contextlib.contextmanager
def definition_path() -> Iterator[None]:
    """Within this block :func:`generated_product` computes through the definition in plain
    differentiable ops (:func:`export_product`, no recomputation), so that a FLOP counter
    sees the model's arithmetic rather than this implementation's (which regenerates the
    coefficients in the backward pass). Not thread-safe; for benchmarks and tests."""
    global _DEFINITION
    previous, _DEFINITION = _DEFINITION, True
    try:
        yield
    finally:
        _DEFINITION = previous


def stencil_product_reference(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """``y_c(p) = sum_o w[c mod K](p, o) x_c(p + o)`` through the unfolded input.

    Args:
        x: (B, C, H, W), C a multiple of K.
        w: (B, K, k*k, H, W) per-pixel stencils, offset index a*k + b for row a, column b.
    Returns:
        (B, C, H, W).
    """
    B, C, H, W = x.shape
    K, kk = w.shape[1], w.shape[2]
    k = math.isqrt(kk)
    cols = F.unfold(x, k, padding=k // 2).reshape(B, C // K, K, kk, H, W)
    return (cols * w.unsqueeze(1)).sum(3).reshape(B, C, H, W)


def shifted_products(x: torch.Tensor, taps: torch.Tensor) -> torch.Tensor:
    """``sum_o taps[:, o] * shift_o(x)`` in plain out-of-place ops (Pad, Slice, Mul, Add), so
    that ``torch.jit.trace`` and ``torch.onnx.export`` see only standard operators.

    Shapes: x (B, P, K, H, W), taps (B, k*k, 1, K, H, W) (offsets first: each tap is one
    contiguous block in an exported graph); returns (B, P, K, H, W).
    """
    H, W = x.shape[-2:]
    k = math.isqrt(taps.shape[1])
    r = k // 2
    xp = F.pad(x, (r, r, r, r))
    out = taps[:, 0] * xp[..., 0:H, 0:W]
    for q in range(1, k * k):
        a, b = divmod(q, k)
        out = out + taps[:, q] * xp[..., a : a + H, b : b + W]
    return out


def export_product(raw: torch.Tensor, x: torch.Tensor, g: int, k: int,
                   eps: float) -> torch.Tensor:
    """The normalised product from raw coefficients, in plain ops for tracing and export.

    Args:
        raw: (B, g*k*k*d, H, W) coefficients, channels ordered (field, offset, component).
        x: (B, C, H, W), C = P * g * d.
    Returns:
        y (B, C, H, W).
    """
    B, C, H, W = x.shape
    kk = k * k
    d = raw.shape[1] // (g * kk)
    fields = raw.reshape(B, g, kk * d, H, W)
    norm = fields.abs().sum(2, keepdim=True) + eps  # (B, g, 1, H, W)
    taps = raw.reshape(B, g, kk, d, H, W).transpose(1, 2).reshape(B, kk, 1, g * d, H, W)
    y = shifted_products(x.reshape(B, C // (g * d), g * d, H, W), taps)
    return (y.reshape(B, C // (g * d), g, d, H, W) / norm.unsqueeze(1)).reshape(B, C, H, W)


ONNX_DOMAIN = "epdo"
"""The domain of the placeholder node :func:`onnx_product` leaves in a freshly exported
graph; :func:`epdo.exporters.onnx_product.expand_stencil_products` replaces every one by
standard ONNX operators before anything is written."""


class _OnnxProduct(torch.autograd.Function):
    """The generated product (the generator's 1x1 convolution, then :func:`export_product`)
    that ``torch.onnx.export`` writes as one ``epdo::StencilProduct`` node with inputs
    ``h``, ``x``, ``weight`` and attributes g, k, d, groups, eps and the static C, H, W. Its
    values are computed with the tracer paused, so the traced graph holds the node alone."""

    @staticmethod
    def forward(ctx, h, x, weight, groups, g, k, eps, d, channels, height, width):  # type: ignore[override]
        state = torch._C._get_tracing_state()
        torch._C._set_tracing_state(None)
        try:
            return export_product(F.conv2d(h, weight, groups=groups), x, g, k, eps)
        finally:
            torch._C._set_tracing_state(state)

    @staticmethod
    def symbolic(graph, h, x, weight, groups, g, k, eps, d, channels, height, width):  # type: ignore[no-untyped-def]
        out = graph.op(f"{ONNX_DOMAIN}::StencilProduct", h, x, weight, g_i=g, k_i=k, d_i=d,
                       groups_i=groups, eps_f=eps, channels_i=channels, height_i=height,
                       width_i=width)
        out.setType(x.type())
        return out


def onnx_product(h: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, groups: int, g: int,
                 k: int, eps: float) -> torch.Tensor:
    """:func:`generated_product` for ``torch.onnx.export``: the same values, recorded as one
    placeholder node that the exporter expands (see :data:`ONNX_DOMAIN`). Shapes as in
    :func:`generated_product`."""
    _, C, H, W = (int(n) for n in x.shape)
    d = int(weight.shape[0]) // (g * k * k)
    return _OnnxProduct.apply(h, x, weight, groups, g, k, eps, d, C, H, W)


def tracing_plain() -> bool:
    """Whether the forward is being recorded in plain ops: by ``torch.jit.trace`` (a
    TorchScript artifact runs without epdo). ``torch.export`` and ``torch.compile`` record
    the registered operator instead (:mod:`.product_op`); ONNX has its own placeholder
    (:func:`onnx_product`)."""
    return torch.jit.is_tracing()


def chunk_size(batch: int, coefficients_per_image: int, device: torch.device) -> int:
    """Images per chunk: all of them on an accelerator, a cache-sized piece on a CPU."""
    if device.type != "cpu":
        return batch
    return max(1, min(batch, CPU_CHUNK_BYTES // (4 * coefficients_per_image)))


def _nhwc(t: torch.Tensor) -> torch.Tensor:
    """(b, C, H, W) -> (b, H, W, C), contiguous (a view for channels-last input)."""
    return t.permute(0, 2, 3, 1).contiguous()


def _padded(x: torch.Tensor, r: int, g: int, d: int) -> torch.Tensor:
    """x (b, C, H, W) -> zero-padded channels-last (b, H + 2r, W + 2r, P, g, d)."""
    b, C, H, W = x.shape
    xp = F.pad(x.permute(0, 2, 3, 1), (0, 0, r, r, r, r))
    return xp.reshape(b, H + 2 * r, W + 2 * r, C // (g * d), g, d)


class _Chunk:
    """One chunk's generated coefficients and their norms (channels-last).

    ``raw``: (b, H, W, g*k*k*d) contiguous, ``taps``: its (b, H, W, 1, g, k*k, d) view,
    ``norm`` (only with ``norm=True``; the fused kernels compute their own):
    (b, H, W, 1, g, 1) = L1 norm + eps.
    """

    def __init__(self, h: torch.Tensor, weight: torch.Tensor, groups: int, g: int, d: int,
                 eps: float, norm: bool = True) -> None:
        raw = _nhwc(F.conv2d(h, weight, groups=groups))
        b, H, W, _ = raw.shape
        self.raw = raw
        self.taps = raw.reshape(b, H, W, 1, g, -1, d)
        self.kk = self.taps.shape[5]
        if norm:
            norms = raw.reshape(b, H, W, g, -1).abs().sum(-1)  # faster than vector_norm(ord=1)
            self.norm = norms.add_(eps).reshape(b, H, W, 1, g, 1)

    def offsets_first(self) -> torch.Tensor:
        """The coefficients as (b, H, W, k*k, g*d): offsets first, the fused kernels' layout."""
        b, H, W = self.raw.shape[:3]
        g, d = self.taps.shape[4], self.taps.shape[6]
        taps = self.taps.view(b, H, W, g, self.kk, d).transpose(3, 4).contiguous()
        return taps.view(b, H, W, self.kk, g * d)

    def product(self, xp: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """out (b, H, W, P, g, d) = normalised product with the padded input xp."""
        k = math.isqrt(self.kk)
        H, W = out.shape[1:3]
        torch.mul(self.taps[..., 0, :], xp[:, :H, :W], out=out)
        for q in range(1, self.kk):
            a, b = divmod(q, k)
            out.addcmul_(self.taps[..., q, :], xp[:, a : a + H, b : b + W])
        return out.div_(self.norm)


def _native(x: torch.Tensor) -> ModuleType | None:
    """The fused CPU kernels when they apply to x (CPU, float32/float64), else None."""
    if x.device.type != "cpu" or x.dtype not in (torch.float32, torch.float64):
        return None
    return stencil_kernels()


def _forward(h: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, groups: int, g: int,
             k: int, eps: float) -> torch.Tensor:
    """The chunked forward; returns y as a channels-last (B, C, H, W) tensor."""
    B, C, H, W = x.shape
    d = weight.shape[0] // (g * k * k)
    P = C // (g * d)
    y = torch.empty(B, H, W, P, g, d, dtype=x.dtype, device=x.device)
    step = chunk_size(B, weight.shape[0] * H * W, x.device)
    kernels = _native(x)
    for i in range(0, B, step):
        chunk = _Chunk(h[i : i + step], weight, groups, g, d, eps, norm=kernels is None)
        if kernels is not None:
            xc = _nhwc(x[i : i + step]).view(-1, H, W, P, g * d)
            yc = y[i : i + step].view(-1, H, W, P, g * d)
            kernels.forward(chunk.offsets_first(), xc, yc, k, g, eps)
        else:
            chunk.product(_padded(x[i : i + step], k // 2, g, d), y[i : i + step])
    return y.reshape(B, H, W, C).permute(0, 3, 1, 2)


def _eager_backward(chunk: _Chunk, x: torch.Tensor, gy: torch.Tensor, y: torch.Tensor,
                    k: int, need_raw: bool) -> tuple[torch.Tensor | None, torch.Tensor]:
    """(grad of raw (b, H, W, g*k*k*d) or None, grad of x (b, H, W, P, g, d)) of one chunk.

    x: the chunk's input (b, C, H, W); gy, y: (b, H, W, P, g, d)."""
    b, H, W, P, g, d = gy.shape
    kk, r = k * k, k // 2
    gs = gy / chunk.norm
    gxp = gs.new_zeros(b, H + 2 * r, W + 2 * r, P, g, d)
    for q in range(kk):
        a, c = divmod(q, k)
        gxp[:, a : a + H, c : c + W].addcmul_(chunk.taps[..., q, :], gs)
    grad_x = gxp[:, r : r + H, r : r + W]
    if not need_raw:
        return None, grad_x
    xp = _padded(x, r, g, d)
    grad_raw = torch.empty_like(chunk.raw).reshape(b, H, W, g, kk, d)
    for q in range(kk):
        a, c = divmod(q, k)
        torch.sum(gs * xp[:, a : a + H, c : c + W], dim=3, out=grad_raw[..., q, :])
    grad_norm = (gs * y).sum(dim=(3, 5)).neg_()  # (b, H, W, g)
    grad_raw = grad_raw.reshape(b, H, W, g, kk * d)
    grad_raw.addcmul_(chunk.raw.reshape(b, H, W, g, kk * d).sign(), grad_norm.unsqueeze(-1))
    return grad_raw.reshape(b, H, W, -1), grad_x


def _backward(grad_y: torch.Tensor, h: torch.Tensor, x: torch.Tensor, weight: torch.Tensor,
              y: torch.Tensor, groups: int, g: int, k: int, eps: float,
              mask: list[bool]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The gradients of :func:`_forward` with respect to ``(h, x, weight)``, recomputing the
    coefficients chunk by chunk (they are never saved).

    With s = sum_o r_o x_o, N = ||r||_1 + eps and y = s / N (per field f):
    dL/dx(p + o) += r_o(p) gy(p) / N(p);  dL/dr_o = sum_n gy_n x_n(p + o) / N
    - sign(r_o) sum_{n, c in f} gy y / N; then the 1x1 convolution's own backward.

    Shapes: grad_y and y (B, C, H, W), h, x and weight as in :func:`generated_product`.
    ``mask`` says which of the three gradients to compute; the others come back as empty
    (0-element) tensors. grad_h and grad_x are channels-last, grad_w contiguous.
    """
    need_h, need_x, need_w = mask
    B, C, H, W = x.shape
    d = weight.shape[0] // (g * k * k)
    P = C // (g * d)
    grad_h = torch.empty_like(h, memory_format=torch.channels_last) if need_h else None
    grad_x = torch.empty(B, H, W, P, g, d, dtype=x.dtype, device=x.device) if need_x else None
    grad_w = torch.zeros_like(weight) if need_w else None
    step = chunk_size(B, weight.shape[0] * H * W, x.device)
    kernels = _native(x)
    for i in range(0, B, step):
        sl = slice(i, i + step)
        chunk = _Chunk(h[sl], weight, groups, g, d, eps, norm=kernels is None)
        b = chunk.raw.shape[0]
        gy = _nhwc(grad_y[sl]).reshape(b, H, W, P, g, d)
        yc = _nhwc(y[sl]).reshape(b, H, W, P, g, d)
        if kernels is not None:
            xc = _nhwc(x[sl]).view(b, H, W, P, g * d)
            gtaps, gx = kernels.backward(chunk.offsets_first(), xc, gy.view(xc.shape),
                                         yc.view(xc.shape), k, g, eps)
            graw = gtaps.view(b, H, W, k * k, g, d).transpose(3, 4).reshape(b, H, W, -1)
            gx = gx.view(b, H, W, P, g, d)
        else:
            graw, gx = _eager_backward(chunk, x[sl], gy, yc, k, need_h or need_w)
        if grad_x is not None:
            grad_x[sl] = gx
        if not (need_h or need_w):
            continue
        gh, gw, _ = torch.ops.aten.convolution_backward(
            graw.permute(0, 3, 1, 2), h[sl], weight, None, [1, 1], [0, 0], [1, 1], False,
            [0, 0], groups, [need_h, need_w, False],
        )
        if grad_h is not None:
            grad_h[sl] = gh
        if grad_w is not None:
            grad_w += gw
    return (x.new_empty(0) if grad_h is None else grad_h,
            x.new_empty(0) if grad_x is None else grad_x.reshape(B, H, W, C).permute(0, 3, 1, 2),
            x.new_empty(0) if grad_w is None else grad_w)


def generated_product(h: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, groups: int,
                      g: int, k: int, eps: float) -> torch.Tensor:
    """Generate the coefficients from h and apply them to x (see the module docstring).

    Args:
        h: (B, M, H, W) generator input.
        x: (B, C, H, W) input of the operators, C = P * g * d.
        weight: (g*k*k*d, M/groups, 1, 1) generator weight, output channels ordered
            (field, offset, component); any constant scale already folded in.
        groups: groups of the generator's 1x1 convolution.
        g, k: operator fields and stencil size (d follows from the weight).
        eps: added to each field's L1 norm.
    Returns:
        y (B, C, H, W) in channels-last memory format.

    Under autocast the three inputs are cast to the autocast dtype and everything (the
    backward's recomputation included) runs in it, with autocast off inside.
    """
    if _DEFINITION:
        return export_product(F.conv2d(h, weight, groups=groups), x, g, k, eps)
    device = x.device.type
    if torch.is_autocast_enabled(device):
        dtype = torch.get_autocast_dtype(device)
        with torch.autocast(device_type=device, enabled=False):
            return generated_product(h.to(dtype), x.to(dtype), weight.to(dtype), groups, g, k,
                                     eps)
    return torch.ops.epdo.stencil_product(h, x, weight, groups, g, k, eps)


from . import product_op as _product_op  # noqa: E402,F401  (registers epdo::stencil_product)
