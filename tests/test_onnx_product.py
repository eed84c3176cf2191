"""The ONNX form of the Neural ePDO product: Loops over chunks of the batch, of standard
operators, whose values are the definition's, for every layout the zoo uses."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F
from onnx import TensorProto, helper, numpy_helper

from epdo.exporters import onnx_product
from epdo.exporters.onnx_product import PLACEHOLDER, expand_stencil_products
from epdo.exporters.ort_options import session_options
from epdo.zoo.layers.stencil_product import (
    export_product,
    generated_product,
    stencil_product_reference,
)

ort = pytest.importorskip("onnxruntime")


def _model(M: int, C: int, H: int, W: int, g: int, d: int, k: int, groups: int, eps: float,
           weight: np.ndarray) -> onnx.ModelProto:
    """A graph of one placeholder node, as ``torch.onnx.export`` leaves it: inputs the
    generator input h (batch, M, H, W) and x (batch, C, H, W), the generator weight an
    initializer."""
    node = helper.make_node(PLACEHOLDER[1], ["h", "x", "weight"], ["y"], domain=PLACEHOLDER[0],
                            g=g, k=k, d=d, groups=groups, eps=eps, channels=C, height=H,
                            width=W)
    graph = helper.make_graph(
        [node], "product",
        [helper.make_tensor_value_info("h", TensorProto.FLOAT, ["batch", M, H, W]),
         helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", C, H, W])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", C, H, W])],
        initializer=[numpy_helper.from_array(weight, "weight")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                   helper.make_opsetid(PLACEHOLDER[0], 1)])


# (M, C, H, W, g, d, k, groups): quickstart's first layer, a non-square map, several
# partitions with a grouped generator (one group per field), k = 3, one field
CASES = [(32, 16, 14, 14, 2, 8, 5, 1), (12, 24, 7, 9, 1, 12, 5, 1),
         (16, 64, 6, 6, 4, 4, 3, 4), (6, 8, 5, 5, 1, 8, 5, 1), (8, 48, 9, 7, 2, 8, 5, 2)]


@pytest.mark.parametrize(("M", "C", "H", "W", "g", "d", "k", "groups"), CASES)
def test_expansion_equals_the_definition(M: int, C: int, H: int, W: int, g: int, d: int,
                                         k: int, groups: int,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    # chunks of 2 images, so batches 1, 3 and 4 take no whole chunk, 1 + 1 left, and 2
    per_image = 4 * g * k * k * d * H * (W + 2 * (k // 2))
    monkeypatch.setattr(onnx_product, "COEFFICIENT_BYTES", 2 * per_image)
    gen = torch.Generator().manual_seed(C + H)
    weight = torch.randn(g * k * k * d, M // groups, 1, 1, generator=gen)
    model = _model(M, C, H, W, g, d, k, groups, 1e-6, weight.numpy())
    assert expand_stencil_products(model) == 1
    onnx.checker.check_model(model, full_check=True)
    assert {n.domain for n in model.graph.node} == {""}
    assert [o.domain for o in model.opset_import] == [""]
    session = ort.InferenceSession(model.SerializeToString(), session_options(2),
                                   providers=["CPUExecutionProvider"])
    for batch in (1, 3, 4, 17):
        h = torch.randn(batch, M, H, W, generator=gen)
        x = torch.randn(batch, C, H, W, generator=gen)
        (y,) = session.run(None, {"h": h.numpy(), "x": x.numpy()})
        raw = F.conv2d(h, weight, groups=groups)
        expected = export_product(raw, x, g, k, 1e-6)
        np.testing.assert_allclose(y, expected.numpy(), rtol=1e-5, atol=1e-5)
        # the fused eager path
        fused = generated_product(h, x, weight, groups, g, k, 1e-6)
        np.testing.assert_allclose(y, fused.numpy(), rtol=1e-5, atol=1e-5)
        # and the definition through the unfolded input, normalised per field
        w = raw.reshape(batch, g, -1, H, W)
        w = w / (w.abs().sum(2, keepdim=True) + 1e-6)
        w = w.reshape(batch, g, k * k, d, H, W).transpose(2, 3).reshape(batch, g * d, k * k, H,
                                                                         W)
        np.testing.assert_allclose(y, stencil_product_reference(x, w).numpy(), rtol=1e-5,
                                   atol=1e-5)


def test_chunks_hold_the_coefficient_budget() -> None:
    # mnist_regular_gauss's first layer (1600 coefficients per pixel on 28 x 32 wide rows,
    # 5.7 MB an image) goes one image at a time; its last (7 x 11) takes 8 per iteration
    assert onnx_product.chunk_images(1600, 28, 32) == 1
    assert onnx_product.chunk_images(1600, 7, 11) == 8
    assert onnx_product.chunk_images(16, 2, 2) == onnx_product.MAX_CHUNK


def test_a_graph_without_products_is_left_alone() -> None:
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "plain",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    model = helper.make_model(graph)
    before = model.SerializeToString()
    assert expand_stencil_products(model) == 0
    assert model.SerializeToString() == before
