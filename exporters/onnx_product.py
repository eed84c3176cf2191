"""The Neural ePDO's spatially varying product in standard ONNX operators, one image at a time.

``torch.onnx.export`` records each product as one placeholder node,
``epdo::StencilProduct(raw, x)`` (:func:`epdo.zoo.layers.stencil_product.onnx_product`);
:func:`expand_stencil_products` replaces every such node, before anything is written, by an
ONNX ``Loop`` over the images of the batch whose body computes, for one image,

    y[n, f, c](p) = sum_o raw[f, o, c](p) x[n, f, c](p + o)
                    / (sum_{o', c'} |raw[f, o', c'](p)| + eps)

with ``Pad``, one ``Slice`` of the padded input per offset o of the k x k stencil, ``Mul`` by
that offset's coefficients (one ``Split`` makes them) and ``Add``, then the per-field L1
normalisation (``Abs``, ``ReduceSum``, ``Div``). Shapes: raw (B, g*k*k*d, H, W), channels
ordered (field, offset, component); x and y (B, C, H, W), C = P * g * d.

Why a loop: the k*k shifted copies and products of a whole batch are k*k = 25 times the
size of the feature map (1.3 GB for the first Neural ePDO layer of ``mnist_regular_gauss``
at batch 64), so onnxruntime streamed them through memory; one image's fit in cache. The
same arithmetic as the plain-op product PyTorch traces (:func:`export_product`), so the
values agree to float rounding; only standard-domain operators of opset 13 and later are
used (Loop, Shape, Gather, Unsqueeze, Slice, Reshape, Transpose, Split, Pad, Mul, Add, Abs,
ReduceSum, Div, Identity).
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


CHUNK_BYTES = 2 << 20
"""Feature-map bytes of the images one loop iteration takes: the k*k products of a chunk
(about 4 times its feature map alive at once) stay in cache, and the loop's per-operator
overhead is paid once per chunk, not once per image."""
MAX_CHUNK = 16


def chunk_images(channels: int, height: int, width: int) -> int:
    """Images per iteration: as many as fit :data:`CHUNK_BYTES` (1 to :data:`MAX_CHUNK`)."""
    return max(1, min(MAX_CHUNK, CHUNK_BYTES // (4 * channels * height * width)))


def _body(node: Any, raw: str, x: str, offset: str, chunk: int, name: _Names,
          consts: list[Any]) -> Any:
    """The Loop body: images ``offset + i*chunk ...`` (``chunk`` of them) of ``raw`` and
    ``x`` -> their product (chunk, C, H, W).

    The padded input is flattened with rows of W + 2r pixels (and one extra padded row), so
    the shift by (dy, dx) is the contiguous range ``dy*(W+2r) + dx ... + H*(W+2r)`` of it
    (one long copy per channel instead of H short ones); the coefficients are padded to the
    same rows, the r*2 extra columns of each row are computed and dropped."""
    from onnx import TensorProto, helper

    a = _attributes(node)
    g, k, d, eps = int(a["g"]), int(a["k"]), int(a["d"]), float(a["eps"])
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
    raw_c = op("Slice", [raw, start, stop, axis0], "raw_c")
    x_c = op("Slice", [x, start, stop, axis0], "x_c")
    # the L1 norm of each field's k*k*d coefficients, plus eps: (c, g, 1, H, W)
    fields = op("Reshape", [raw_c, const([c, g, kk * d, H, W], "fields_shape")], "fields")
    norm = op("ReduceSum", [op("Abs", [fields], "abs"), const([2], "axis2")], "l1", keepdims=1)
    norm = op("Add", [norm, const(np.array([eps], np.float32), "eps", TensorProto.FLOAT)],
              "norm")
    # the coefficients, offset-major and padded to wide rows: kk pieces of (c, 1, K, L)
    taps = op("Reshape", [raw_c, const([c, g, kk, d, H, W], "taps6_shape")], "taps6")
    taps = op("Transpose", [taps], "taps_t", perm=[0, 2, 1, 3, 4, 5])
    taps = op("Reshape", [taps, const([c, kk, K, H, W], "taps_shape")], "taps")
    taps = op("Pad", [taps, const([0, 0, 0, 0, 0, 0, 0, 0, 0, 2 * r], "tap_pads")], "taps_w",
              mode="constant")
    taps = op("Reshape", [taps, const([c, kk, K, L], "tapsf_shape")], "taps_f")
    pieces = [name("tap") for _ in range(kk)]
    nodes.append(helper.make_node("Split", [taps, const([1] * kk, "split")], pieces,
                                  name=name("Split"), axis=1))
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
        term = op("Mul", [window, pieces[q]], "term")
        acc = term if acc is None else op("Add", [acc, term], "acc")
    wide = op("Reshape", [acc, const([c, P, K, H, Wp], "wide_shape")], "wide")
    y5 = op("Slice", [wide, const([0], "zero"), const([W], "width"), const([4], "axis4")], "y5")
    y6 = op("Reshape", [y5, const([c, P, g, d, H, W], "y6_shape")], "y6")
    n6 = op("Reshape", [norm, const([c, 1, g, 1, H, W], "n6_shape")], "n6")
    y6 = op("Div", [y6, n6], "y6n")
    nodes.append(helper.make_node("Reshape", [y6, const([c, C, H, W], "y_shape")], [y_out],
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
    """The outer nodes that replace placeholder ``node``: with B images and a chunk of c,
    one Loop over the B // c whole chunks, one over the B mod c images left, and y (B, C,
    H, W) as their stacked outputs one after the other."""
    from onnx import TensorProto, helper

    name = _Names(f"stencil_product_{index}")
    raw, x = node.input
    (y,) = node.output
    a = _attributes(node)
    C, H, W = int(a["channels"]), int(a["height"]), int(a["width"])
    chunk = chunk_images(C, H, W)

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
        body = _body(node, raw, x, offset, size, name, consts)
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
