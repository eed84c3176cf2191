"""The Neural ePDO's fast stencil product against its definition (values and gradients).

The definition: generate raw coefficients with the grouped 1x1 convolution, L1-normalise each
field's d*k*k block, and apply the per-pixel stencils through the unfolded input
(:func:`stencil_product_reference`). The fast path (chunked, channels-last, recomputing in the
backward) and the export path must give the same numbers.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from epdo.zoo.groups import parse_group
from epdo.zoo.layers import stencil_product as sp
from epdo.zoo.layers.neural_epdo import L1_EPS, NeuralEPDO
from epdo.zoo.layers.norms import FieldBatchNorm
from epdo.zoo.reps import FeatureType, parse_field_type

G, D, K, GROUPS = 2, 3, 5, 2  # operator fields, field dim, stencil size, generator groups


@pytest.fixture(params=["fused", "pytorch"])
def path(request, monkeypatch) -> str:
    """Run a test through the fused CPU kernels and through the PyTorch implementation."""
    if request.param == "pytorch":
        monkeypatch.setattr(sp, "stencil_kernels", lambda: None)
    elif sp.stencil_kernels() is None:
        pytest.skip("the fused CPU kernels could not be built here (no C++ compiler?)")
    return request.param


def definition(h, x, weight, groups=GROUPS, g=G, k=K, eps=L1_EPS):
    raw = F.conv2d(h, weight, groups=groups)
    B, _, H, W = raw.shape
    kk = k * k
    d = raw.shape[1] // (g * kk)
    w = raw.reshape(B, g, kk * d, H, W)
    w = w / (w.abs().sum(2, keepdim=True) + eps)
    w = w.reshape(B, g, kk, d, H, W).transpose(2, 3).reshape(B, g * d, kk, H, W)
    return sp.stencil_product_reference(x, w)


def inputs(batch=5, parts=2, mid=4, size=(7, 6), channels_last=False, seed=0):
    gen = torch.Generator().manual_seed(seed)
    H, W = size
    h = torch.randn(batch, mid, H, W, generator=gen, dtype=torch.float64)
    x = torch.randn(batch, parts * G * D, H, W, generator=gen, dtype=torch.float64)
    w = torch.randn(G * K * K * D, mid // GROUPS, 1, 1, generator=gen, dtype=torch.float64)
    if channels_last:
        h, x = (t.contiguous(memory_format=torch.channels_last) for t in (h, x))
    return [t.requires_grad_(True) for t in (h, x, w)]


@pytest.mark.parametrize("images_per_chunk", [1, 2, 100])
@pytest.mark.parametrize("channels_last", [False, True])
def test_fast_path_matches_definition(monkeypatch, path, images_per_chunk,
                                      channels_last) -> None:
    h, x, w = inputs(channels_last=channels_last)
    H, W = x.shape[-2:]
    monkeypatch.setattr(sp, "CPU_CHUNK_BYTES", 4 * w.shape[0] * H * W * images_per_chunk)
    assert sp.chunk_size(5, w.shape[0] * H * W, x.device) == min(5, images_per_chunk)
    fast = sp.generated_product(h, x, w, GROUPS, G, K, L1_EPS)
    ref = definition(h, x, w)
    assert ref.std() > 0.01
    torch.testing.assert_close(fast, ref, rtol=1e-12, atol=1e-12)
    gy = torch.randn_like(ref)
    grads = torch.autograd.grad(fast, (h, x, w), gy)
    expected = torch.autograd.grad(ref, (h, x, w), gy)
    for name, a, b in zip("hxw", grads, expected, strict=True):
        assert b.abs().max() > 1e-3, name
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12, msg=f"gradient of {name}")


def test_fast_path_partial_gradients_and_no_grad(path) -> None:
    h, x, w = inputs(seed=1)
    ref = definition(h, x, w)
    gy = torch.randn_like(ref)
    gx_ref, gw_ref = torch.autograd.grad(ref, (x, w), gy)
    y = sp.generated_product(h.detach(), x, w.detach(), GROUPS, G, K, L1_EPS)
    torch.testing.assert_close(torch.autograd.grad(y, x, gy)[0], gx_ref, rtol=1e-10, atol=1e-12)
    y = sp.generated_product(h.detach(), x.detach(), w, GROUPS, G, K, L1_EPS)
    torch.testing.assert_close(torch.autograd.grad(y, w, gy)[0], gw_ref, rtol=1e-10, atol=1e-12)
    with torch.no_grad():
        y = sp.generated_product(h, x, w, GROUPS, G, K, L1_EPS)
    assert y.grad_fn is None
    torch.testing.assert_close(y, ref.detach(), rtol=1e-12, atol=1e-12)


def test_export_path_matches_definition() -> None:
    h, x, w = inputs(size=(6, 9), seed=2)
    raw = F.conv2d(h, w, groups=GROUPS)
    torch.testing.assert_close(sp.export_product(raw, x, G, K, L1_EPS), definition(h, x, w))


def test_reference_is_the_spatially_varying_correlation() -> None:
    """stencil_product_reference against a literal per-pixel loop."""
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(1, 4, 5, 6, generator=gen, dtype=torch.float64)
    w = torch.randn(1, 2, 9, 5, 6, generator=gen, dtype=torch.float64)
    xp = F.pad(x, (1, 1, 1, 1))
    expected = torch.zeros_like(x)
    for c in range(4):
        for i in range(5):
            for j in range(6):
                patch = xp[0, c, i : i + 3, j : j + 3].reshape(-1)
                expected[0, c, i, j] = (w[0, c % 2, :, i, j] * patch).sum()
    torch.testing.assert_close(sp.stencil_product_reference(x, w), expected)


def neural_epdo(seed=0) -> NeuralEPDO:
    torch.manual_seed(seed)
    ft = FeatureType(parse_field_type(parse_group("C4"), "regular"), 4)
    return NeuralEPDO(ft, ft, order=2, g=2, s=2, reduction=1, discretization="gauss").double()


def test_neural_epdo_forward_and_gradients_match_definition(path) -> None:
    layer = neural_epdo()
    x = torch.randn(3, 16, 8, 8, dtype=torch.float64, requires_grad=True)
    y = layer(x)
    ref = layer.out(sp.stencil_product_reference(x, layer.stencils(x)))
    torch.testing.assert_close(y, ref, rtol=1e-12, atol=1e-12)
    gy = torch.randn_like(ref)
    params = [x] + list(layer.parameters())
    fast = torch.autograd.grad(y, params, gy)
    expected = torch.autograd.grad(ref, params, gy)
    for a, b in zip(fast, expected, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_training_graph_never_saves_the_coefficients() -> None:
    """Memory: nothing of the size of the g*k*k*d coefficient maps is kept for backward."""
    layer = neural_epdo()
    x = torch.randn(2, 16, 10, 10, dtype=torch.float64, requires_grad=True)
    coefficient_numel = 2 * layer.g * layer.kernel_size**2 * 4 * 10 * 10
    saved: list[int] = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.numel()) or t,
                                                  lambda t: t):
        layer(x).sum().backward()
    assert saved and max(saved) < coefficient_numel / 4
    # the naive path (autograd through the stencils) does keep them
    saved.clear()
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.numel()) or t,
                                                  lambda t: t):
        layer.out(sp.stencil_product_reference(x, layer.stencils(x))).sum().backward()
    assert max(saved) >= coefficient_numel


def test_field_batch_norm_channels_last_matches_nchw() -> None:
    ft = FeatureType(parse_field_type(parse_group("C4"), "regular"), 3)
    a, b = FieldBatchNorm(ft).double(), FieldBatchNorm(ft).double()
    x = torch.randn(4, 12, 5, 5, dtype=torch.float64) * 3 + 1
    xl = x.contiguous(memory_format=torch.channels_last)
    ya, yb = a(x), b(xl)
    assert yb.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(ya, yb)
    torch.testing.assert_close(a.bn.running_mean, b.bn.running_mean)
    torch.testing.assert_close(a.bn.running_var, b.bn.running_var)
    a.eval(), b.eval()
    torch.testing.assert_close(a(x), b(xl))


def test_definition_path_same_numbers_without_the_recomputation(path) -> None:
    from torch.utils.flop_counter import FlopCounterMode

    h, x, w = inputs(seed=4)
    gy = torch.randn(5, x.shape[1], 7, 6, dtype=torch.float64)

    def step() -> tuple[int, torch.Tensor, tuple[torch.Tensor, ...]]:
        counter = FlopCounterMode(display=False)
        with counter:
            y = sp.generated_product(h, x, w, GROUPS, G, K, L1_EPS)
            grads = torch.autograd.grad(y, (h, x, w), gy)
        return counter.get_total_flops(), y, grads

    fast_flops, y_fast, g_fast = step()
    with sp.definition_path():
        def_flops, y_def, g_def = step()
    torch.testing.assert_close(y_def, y_fast)
    for a, b in zip(g_def, g_fast, strict=True):
        torch.testing.assert_close(a, b)
    # the fast backward regenerates the coefficients: one more generator convolution
    generator = 2 * 5 * 7 * 6 * w.shape[0] * w.shape[1]
    assert fast_flops - def_flops == generator


@pytest.mark.parametrize("momentum", [0.1, None])
def test_field_batch_norm_channels_last_gradients(momentum) -> None:
    ft = FeatureType(parse_field_type(parse_group("C4"), "regular"), 3)
    a, b = FieldBatchNorm(ft).double(), FieldBatchNorm(ft).double()
    for bn in (a, b):
        bn.bn.momentum = momentum
        with torch.no_grad():
            bn.bn.weight.copy_(torch.tensor([0.5, 2.0, -1.0]))
            bn.bn.bias.copy_(torch.tensor([0.1, -0.3, 0.7]))
    x = torch.randn(3, 12, 5, 4, dtype=torch.float64) * 2 + 0.5
    xa = x.clone().requires_grad_(True)
    xb = x.contiguous(memory_format=torch.channels_last).requires_grad_(True)
    for _ in range(2):
        ya, yb = a(xa), b(xb)
    gy = torch.randn_like(ya)
    ga = torch.autograd.grad(ya, [xa, a.bn.weight, a.bn.bias], gy)
    gb = torch.autograd.grad(yb, [xb, b.bn.weight, b.bn.bias], gy)
    for u, v in zip(ga, gb, strict=True):
        assert v.abs().max() > 1e-3
        torch.testing.assert_close(u, v)
    torch.testing.assert_close(a.bn.running_var, b.bn.running_var)
    assert int(a.bn.num_batches_tracked) == int(b.bn.num_batches_tracked) == 2


def test_fused_and_pytorch_paths_agree_in_float32(monkeypatch) -> None:
    """The paper's layer-1 shape (C16, g = 4, d = 16, 4 partitions) in float32."""
    if sp.stencil_kernels() is None:
        pytest.skip("the fused CPU kernels could not be built here (no C++ compiler?)")
    gen = torch.Generator().manual_seed(5)
    h = torch.relu(torch.randn(2, 64, 9, 9, generator=gen)).requires_grad_(True)
    x = torch.randn(2, 256, 9, 9, generator=gen).requires_grad_(True)
    w = (torch.randn(4 * 25 * 16, 16, 1, 1, generator=gen) * 0.1).requires_grad_(True)
    gy = torch.randn(2, 256, 9, 9, generator=gen)
    y1 = sp.generated_product(h, x, w, 4, 4, 5, L1_EPS)
    g1 = torch.autograd.grad(y1, (h, x, w), gy)
    monkeypatch.setattr(sp, "stencil_kernels", lambda: None)
    y2 = sp.generated_product(h, x, w, 4, 4, 5, L1_EPS)
    g2 = torch.autograd.grad(y2, (h, x, w), gy)
    torch.testing.assert_close(y1, y2, rtol=1e-5, atol=1e-6)
    for a, b in zip(g1, g2, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_native_opt_out(monkeypatch) -> None:
    from epdo.zoo.layers import native

    monkeypatch.setenv("EPDO_NATIVE", "0")
    assert native.stencil_kernels() is None
    monkeypatch.setenv("EPDO_NATIVE", "1")
    assert native.native_enabled()


def test_autocast_runs_the_product_in_the_autocast_dtype() -> None:
    h, x, w = inputs(seed=6)
    h, x, w = (t.detach().float().requires_grad_(True) for t in (h, x, w))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = sp.generated_product(h, x, w, GROUPS, G, K, L1_EPS)
    assert y.dtype == torch.bfloat16
    ref = definition(h.double(), x.double(), w.double())
    torch.testing.assert_close(y.double(), ref, rtol=0.05, atol=0.02)
    gh, gx, gw = torch.autograd.grad(y.float().sum(), (h, x, w))
    assert gh.dtype == gx.dtype == gw.dtype == torch.float32
    gref = torch.autograd.grad(ref.sum(), (h, x, w))
    for a, b in zip((gh, gx, gw), gref, strict=False):
        assert torch.isfinite(a).all()
        assert float((a.double() - b).norm() / b.norm()) < 0.05


def test_failed_build_falls_back_with_one_warning(monkeypatch) -> None:
    from epdo.zoo.layers import native

    def no_compiler():
        raise OSError("c++: command not found")

    monkeypatch.setattr(native, "_build", no_compiler)
    monkeypatch.setattr(native, "_kernels", native._UNSET)
    with pytest.warns(RuntimeWarning, match="c\\+\\+: command not found.*PyTorch implementation"):
        assert native.stencil_kernels() is None
    assert native.stencil_kernels() is None  # decided once, no second warning
    h, x, w = inputs(seed=7)
    torch.testing.assert_close(sp.generated_product(h, x, w, GROUPS, G, K, L1_EPS),
                               definition(h, x, w))
