"""The Neural ePDO's generated product in standard ONNX operators, a chunk of images at a time.

``torch.onnx.export`` records each product, the generator's 1x1 convolution included, as one
placeholder node ``epdo::StencilProduct(h, x, weight)``
(:func:`epdo.zoo.layers.stencil_product.onnx_product`); :func:`expand_stencil_products`
replaces every such node, before anything is written, by ONNX ``Loop`` nodes over chunks of the
batch whose body computes, for its images,

    raw = Conv1x1(h, weight)                                  (groups as the layer's)
    y[n, f, c](p) = sum_o raw[f, o, c](p) x[n, f, c](p + o)
                    / (sum_{o', c'} |raw[f, o', c'](p)| + eps)

with ``Conv``, one ``Split`` of the coefficients by offset o of the k x k stencil, one
``Slice`` of the padded input per offset, ``Mul`` and ``Add``, then the per-field L1
normalisation (``Abs``, ``ReduceSum``, ``Div``). Shapes: h (B, M, H, W); weight
(g*k*k*d, M/groups, 1, 1), output channels ordered (field, offset, component); x and y
(B, C, H, W), C = P * g * d.

Why chunks: the coefficients are g*k*k*d numbers per pixel, 6 to 25 times the feature map
(320 MB for the first Neural ePDO layer of ``mnist_regular_gauss`` at batch 64). Made for the
whole batch, onnxruntime wrote them to memory and read them back; made per chunk of about
:data:`COEFFICIENT_BYTES` inside the loop, they are used while in cache, as the eager fused
path does. The arithmetic is that of the plain-op product PyTorch traces
(:func:`~epdo.zoo.layers.stencil_product.export_product`), so the values agree to float
rounding; only standard-domain operators of opset 13 and later are used (Loop, Shape,
Gather, Unsqueeze, Slice, Reshape, Split, Pad, Conv, Mul, Add, Abs, ReduceSum, Div, Sub,
Concat, Identity).
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["PLACEHOLDER", "expand_stencil_products"]

PLACEHOLDER = ("epdo", "StencilProduct")
"""``(domain, op_type)`` of the node :func:`expand_stencil_products` replaces."""


class _Names:
    """Unique value names inside one expansion."""

    def __init__(self, prefix: str) -> None:
        self.prefix, self.count = prefix, 0

    def __call__(self, what: str) -> str:
        self.count += 1
        return f"{self.prefix}/{what}_{self.count}"


def _attributes(node: Any) -> dict[str, Any]:
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


COEFFICIENT_BYTES = 4 << 20
"""Coefficient bytes one loop iteration generates: the chunk's g*k*k*d coefficients per
pixel are made by the generator's 1x1 ``Conv`` inside the loop body and used while they
are still in cache, never stored for the whole batch."""
MAX_CHUNK = 16


def chunk_images(coefficients: int, height: int, width: int) -> int:
    """Images per iteration: as many as keep their ``coefficients`` per pixel (on the
    ``height`` x ``width`` map, rows widened by the padding) within
    :data:`COEFFICIENT_BYTES` (1 to :data:`MAX_CHUNK`)."""
    return max(1, min(MAX_CHUNK, COEFFICIENT_BYTES // (4 * coefficients * height * width)))


def _body(node: Any, h: str, x: str, weight: str, offset: str, chunk: int, name: _Names,
          consts: list[Any]) -> Any:
    """The Loop body: images ``offset + i*chunk ...`` (``chunk`` of them) of the generator
    input ``h`` (already padded to wide rows) and of ``x`` -> their product (chunk, C, H, W).

    Rows are W + 2r pixels wide throughout. The generator's 1x1 ``Conv`` of the wide h gives
    the coefficients already in that layout (zero in the extra columns: the convolution has
    no bias). The padded input is flattened with rows of W + 2r pixels (and one extra padded
    row), so the shift by (dy, dx) is the contiguous range ``dy*(W+2r) + dx ... + H*(W+2r)``
    of it: one long copy per channel instead of H short ones. The r*2 extra columns of each
    row are computed and dropped at the end."""
    from onnx import TensorProto, helper

    a = _attributes(node)
    g, k, d, eps = int(a["g"]), int(a["k"]), int(a["d"]), float(a["eps"])
    groups = int(a["groups"])
    C, H, W = int(a["channels"]), int(a["height"]), int(a["width"])
    kk, r, c = k * k, k // 2, chunk
    K = g * d
    P = C // K
    Wp = W + 2 * r
    L = H * Wp
    nodes: list[Any] = []

    def const(values: list[int] | np.ndarray, what: str, dtype: int = TensorProto.INT64) -> str:
        cname = name(what)
        array = np.asarray(values)
        consts.append(helper.make_tensor(cname, dtype, list(array.shape), array.flatten()))
        return cname

    def op(op_type: str, inputs: list[str], what: str, **attrs: Any) -> str:
        out = name(what)
        nodes.append(helper.make_node(op_type, inputs, [out], name=name(op_type), **attrs))
        return out

    i_name, cond_in, cond_out, y_out = name("i"), name("cond_in"), name("cond_out"), name("y")
    axis0 = const([0], "axis0")
    start = op("Add", [op("Mul", [op("Unsqueeze", [i_name, axis0], "i1"),
                                  const([c], "chunk")], "ic"), offset], "start")
    stop = op("Add", [start, const([c], "chunk")], "stop")
    h_c = op("Slice", [h, start, stop, axis0], "h_c")
    x_c = op("Slice", [x, start, stop, axis0], "x_c")
    # the chunk's coefficients, (c, g, k*k, d, L), channels ordered (field, offset, component)
    raw = op("Conv", [h_c, weight], "raw", group=groups, kernel_shape=[1, 1])
    raw = op("Reshape", [raw, const([c, g, kk, d, L], "raw_shape")], "raw5")
    # the L1 norm of each field's k*k*d coefficients, plus eps: (c, 1, g, 1, L)
    norm = op("ReduceSum", [op("Abs", [raw], "abs"), const([2, 3], "axes")], "l1", keepdims=1)
    norm = op("Add", [norm, const(np.array([eps], np.float32), "eps", TensorProto.FLOAT)],
              "norm")
    norm = op("Reshape", [norm, const([c, 1, g, 1, L], "norm_shape")], "norm5")
    # one (c, 1, K, L) piece of coefficients per offset
    pieces = [name("tap") for _ in range(kk)]
    nodes.append(helper.make_node("Split", [raw, const([1] * kk, "split")], pieces,
                                  name=name("Split"), axis=2))
    tap_shape = const([c, 1, K, L], "tap_shape")
    # the input as P partitions of the K = g*d operator channels, padded and flattened
    xr = op("Reshape", [x_c, const([c, P, K, H, W], "x5_shape")], "x5")
    xp = op("Pad", [xr, const([0, 0, 0, r, r, 0, 0, 0, r + 1, r], "pads")], "xp",
            mode="constant")
    xf = op("Reshape", [xp, const([c, P, K, (H + 2 * r + 1) * Wp], "xf_shape")], "xf")
    axis3 = const([3], "axis3")
    acc = None
    for q in range(kk):
        dy, dx = divmod(q, k)
        begin = dy * Wp + dx
        window = op("Slice", [xf, const([begin], "begin"), const([begin + L], "end"), axis3],
                    "window")
        tap = op("Reshape", [pieces[q], tap_shape], "tap_q")
        term = op("Mul", [window, tap], "term")
        acc = term if acc is None else op("Add", [acc, term], "acc")
    y5 = op("Div", [op("Reshape", [acc, const([c, P, g, d, L], "acc5_shape")], "acc5"), norm],
            "y5")
    wide = op("Reshape", [y5, const([c, P, K, H, Wp], "wide_shape")], "wide")
    y = op("Slice", [wide, const([0], "zero"), const([W], "width"), const([4], "axis4")], "y")
    nodes.append(helper.make_node("Reshape", [y, const([c, C, H, W], "y_shape")], [y_out],
                                  name=name("Reshape")))
    nodes.append(helper.make_node("Identity", [cond_in], [cond_out], name=name("Identity")))
    return helper.make_graph(
        nodes, name("body"),
        [helper.make_tensor_value_info(i_name, TensorProto.INT64, []),
         helper.make_tensor_value_info(cond_in, TensorProto.BOOL, [])],
        [helper.make_tensor_value_info(cond_out, TensorProto.BOOL, []),
         helper.make_tensor_value_info(y_out, TensorProto.FLOAT, [c, C, H, W])],
    )


def _expansion(node: Any, index: int, consts: list[Any]) -> list[Any]:
    """The outer nodes that replace placeholder ``node``: h padded to wide rows, then with
    B images and a chunk of c, one Loop over the B // c whole chunks, one over the B mod c
    images left, and y (B, C, H, W) as their stacked outputs one after the other."""
    from onnx import TensorProto, helper

    name = _Names(f"stencil_product_{index}")
    h, x, weight = node.input
    (y,) = node.output
    a = _attributes(node)
    g, k, d = int(a["g"]), int(a["k"]), int(a["d"])
    C, H, W = int(a["channels"]), int(a["height"]), int(a["width"])
    r = k // 2
    chunk = chunk_images(g * k * k * d, H, W + 2 * r)

    def const(values: list[Any], what: str, dtype: int = TensorProto.INT64,
              dims: list[int] | None = None) -> str:
        cname = name(what)
        consts.append(helper.make_tensor(cname, dtype, [len(values)] if dims is None else dims,
                                         values))
        return cname

    nodes: list[Any] = []

    def op(op_type: str, inputs: list[str], what: str, **attrs: Any) -> str:
        out = name(what)
        nodes.append(helper.make_node(op_type, inputs, [out], name=name(op_type), **attrs))
        return out

    wide_h = op("Pad", [h, const([0, 0, 0, 0, 0, 0, 0, 2 * r], "h_pads")], "h_wide",
                mode="constant")
    true = const([True], "true", TensorProto.BOOL, [])
    batch = op("Gather", [op("Shape", [x], "shape"), const([0], "zero", dims=[])], "batch",
               axis=0)
    loops = [(batch, const([0], "offset0"), 1)]
    if chunk > 1:  # whole chunks, then the images left one by one
        whole = op("Div", [batch, const([chunk], "chunk", dims=[])], "whole")
        done = op("Mul", [whole, const([chunk], "chunk_again", dims=[])], "done")
        left = op("Sub", [batch, done], "left")
        loops = [(whole, loops[0][1], chunk),
                 (left, op("Unsqueeze", [done, const([0], "axis0")], "offset1"), 1)]
    y_shape = const([-1, C, H, W], "y_shape")
    parts = []
    for trips, offset, size in loops:
        body = _body(node, wide_h, x, weight, offset, size, name, consts)
        stacked = op("Loop", [trips, true], "stacked", body=body)
        parts.append(op("Reshape", [stacked, y_shape], "part"))
    if len(parts) == 1:
        nodes.append(helper.make_node("Identity", parts, [y], name=name("Identity")))
    else:
        nodes.append(helper.make_node("Concat", parts, [y], name=name("Concat"), axis=0))
    return nodes


def expand_stencil_products(model: Any) -> int:
    """Replace, in place, every ``epdo::StencilProduct`` node of ``model`` (an
    ``onnx.ModelProto``) by its standard-operator expansion (module docstring) and drop the
    ``epdo`` opset import; returns the number of nodes replaced."""
    graph = model.graph
    nodes = list(graph.node)
    consts: list[Any] = []
    out: list[Any] = []
    replaced = 0
    for node in nodes:
        if (node.domain, node.op_type) == PLACEHOLDER:
            out += _expansion(node, replaced, consts)
            replaced += 1
        else:
            out.append(node)
    if not replaced:
        return 0
    del graph.node[:]
    graph.node.extend(out)
    graph.initializer.extend(consts)
    kept = [o for o in model.opset_import if o.domain != PLACEHOLDER[0]]
    del model.opset_import[:]
    model.opset_import.extend(kept)
    return replaced
