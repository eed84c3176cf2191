"""The ONNX form of the Neural ePDO product: a per-image Loop of standard operators whose
values are the plain-op product's (the definition), for every layout the zoo uses."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper

from epdo.exporters.onnx_product import PLACEHOLDER, expand_stencil_products
from epdo.exporters.ort_options import session_options
from epdo.zoo.layers.stencil_product import export_product, stencil_product_reference

ort = pytest.importorskip("onnxruntime")


def _model(C: int, H: int, W: int, g: int, d: int, k: int, eps: float) -> onnx.ModelProto:
    """A graph of one placeholder node, as ``torch.onnx.export`` leaves it."""
    R = g * k * k * d
    node = helper.make_node(PLACEHOLDER[1], ["raw", "x"], ["y"], domain=PLACEHOLDER[0], g=g,
                            k=k, d=d, eps=eps, channels=C, height=H, width=W)
    graph = helper.make_graph(
        [node], "product",
        [helper.make_tensor_value_info("raw", TensorProto.FLOAT, ["batch", R, H, W]),
         helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", C, H, W])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", C, H, W])],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                   helper.make_opsetid(PLACEHOLDER[0], 1)])


# (C, H, W, g, d, k): quickstart's first layer, a non-square map, several partitions, k = 3
CASES = [(16, 14, 14, 2, 8, 5), (24, 7, 9, 1, 12, 5), (64, 6, 6, 4, 4, 3), (8, 5, 5, 1, 8, 5)]


@pytest.mark.parametrize(("C", "H", "W", "g", "d", "k"), CASES)
def test_expansion_equals_the_definition(C: int, H: int, W: int, g: int, d: int,
                                         k: int) -> None:
    model = _model(C, H, W, g, d, k, 1e-6)
    assert expand_stencil_products(model) == 1
    onnx.checker.check_model(model, full_check=True)
    assert {n.domain for n in model.graph.node} == {""}
    assert [o.domain for o in model.opset_import] == [""]
    session = ort.InferenceSession(model.SerializeToString(), session_options(2),
                                   providers=["CPUExecutionProvider"])
    gen = torch.Generator().manual_seed(C + H)
    for batch in (1, 3, 17, 32):  # chunks of up to 16 images: none whole, 1 + 1 left, 2
        raw = torch.randn(batch, g * k * k * d, H, W, generator=gen)
        x = torch.randn(batch, C, H, W, generator=gen)
        (y,) = session.run(None, {"raw": raw.numpy(), "x": x.numpy()})
        expected = export_product(raw, x, g, k, 1e-6)
        np.testing.assert_allclose(y, expected.numpy(), rtol=1e-5, atol=1e-5)
        # and the definition through the unfolded input, normalised per field
        w = raw.reshape(batch, g, -1, H, W)
        w = w / (w.abs().sum(2, keepdim=True) + 1e-6)
        w = w.reshape(batch, g, k * k, d, H, W).transpose(2, 3).reshape(batch, g * d, k * k, H,
                                                                         W)
        np.testing.assert_allclose(y, stencil_product_reference(x, w).numpy(), rtol=1e-5,
                                   atol=1e-5)


def test_a_graph_without_products_is_left_alone() -> None:
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "plain",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    model = helper.make_model(graph)
    before = model.SerializeToString()
    assert expand_stencil_products(model) == 0
    assert model.SerializeToString() == before
