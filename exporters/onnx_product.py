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


def _ints(helper: Any, name: str, values: list[int]) -> Any:
    return helper.make_tensor(name, 7, [len(values)], values)  # 7: INT64


def _attributes(node: Any) -> dict[str, Any]:
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


WIDE = True
SUM = False


def _chain(op: Any, terms: list[str]) -> str:
    acc = terms[0]
    for term in terms[1:]:
        acc = op("Add", [acc, term], "acc")
    return acc


def _body(node: Any, raw: str, x: str, name: _Names, consts: list[Any]) -> Any:
    """The Loop body: image ``i`` of ``raw`` and ``x`` -> its product (1, C, H, W)."""
    from onnx import TensorProto, helper

    a = _attributes(node)
    g, k, eps = int(a["g"]), int(a["k"]), float(a["eps"])
    C, H, W = int(a["channels"]), int(a["height"]), int(a["width"])
    kk, r = k * k, k // 2
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
    zero, one = const([0], "axis0"), const([1], "one")
    start = op("Unsqueeze", [i_name, zero], "start")
    stop = op("Add", [start, one], "stop")
    raw_i = op("Slice", [raw, start, stop, zero], "raw_i")
    x_i = op("Slice", [x, start, stop, zero], "x_i")
    # the L1 norm of each field's k*k*d coefficients, plus eps: (1, g, 1, H, W)
    fields = op("Reshape", [raw_i, const([1, g, -1, H, W], "fields_shape")], "fields")
    norm = op("ReduceSum", [op("Abs", [fields], "abs"), const([2], "axis2")], "l1", keepdims=1)
    norm = op("Add", [norm, const(np.array([eps], np.float32), "eps", TensorProto.FLOAT)],
              "norm")
    # the coefficients offset by offset: kk pieces of (1, 1, g*d, H, W)
    taps = op("Reshape", [raw_i, const([1, g, kk, -1, H, W], "taps6_shape")], "taps6")
    taps = op("Transpose", [taps], "taps_t", perm=[0, 2, 1, 3, 4, 5])
    taps = op("Reshape", [taps, const([1, kk, -1, H, W], "taps_shape")], "taps")
    pieces = [name("tap") for _ in range(kk)]
    nodes.append(helper.make_node("Split", [taps, const([1] * kk, "split")], pieces,
                                  name=name("Split"), axis=1))
    # the input as P partitions of the K = g*d operator channels, zero-padded by r
    d = int(a["d"])
    K = g * d
    P = C // K
    if WIDE:
        # rows of W + 2r: a shift by (dy, dx) is one contiguous range of the flattened,
        # padded image, and the coefficients are padded to the same wide rows
        Wp = W + 2 * r
        xr = op("Reshape", [x_i, const([1, P, K, H, W], "x5_shape")], "x5")
        xp = op("Pad", [xr, const([0, 0, 0, r, r, 0, 0, 0, r + 1, r], "pads")], "xp",
                mode="constant")  # one extra row: the last shifts stay inside
        xf = op("Reshape", [xp, const([1, P, K, (H + 2 * r + 1) * Wp], "xf_shape")], "xf")
        L = H * Wp
        axes = const([3], "l_axis")
        terms = []
        for q in range(kk):
            dy, dx = divmod(q, k)
            begin = dy * Wp + dx
            window = op("Slice", [xf, const([begin], "begin"), const([begin + L], "end"), axes],
                        "window")
            tap = op("Reshape", [op("Pad", [pieces[q], const([0, 0, 0, 0, 0, 0, 0, 0, 0, 2 * r],
                                                                "tap_pads")], "tap_wide",
                                        mode="constant"),
                                 const([1, 1, K, L], "tap_shape")], "tap_flat")
            terms.append(op("Mul", [window, tap], "term"))
        wide = op("Sum", terms, "acc") if SUM else _chain(op, terms)
        wide = op("Reshape", [wide, const([1, P, K, H, Wp], "wide_shape")], "wide5")
        acc = op("Slice", [wide, const([0], "c0"), const([W], "cW"), const([4], "w_axis")],
                 "acc")
    else:
        xr = op("Reshape", [x_i, const([1, P, K, H, W], "x5_shape")], "x5")
        xp = op("Pad", [xr, const([0, 0, 0, r, r, 0, 0, 0, r, r], "pads")], "xp",
                mode="constant")
        axes = const([3, 4], "hw_axes")
        terms = []
        for q in range(kk):
            dy, dx = divmod(q, k)
            window = op("Slice", [xp, const([dy, dx], "begin"), const([dy + H, dx + W], "end"),
                                  axes], "window")
            terms.append(op("Mul", [window, pieces[q]], "term"))
        acc = op("Sum", terms, "acc") if SUM else _chain(op, terms)
    y6 = op("Reshape", [acc, const([1, P, g, d, H, W], "y6_shape")], "y6")
    n6 = op("Reshape", [norm, const([1, 1, g, 1, H, W], "n6_shape")], "n6")
    y6 = op("Div", [y6, n6], "y6n")
    nodes.append(helper.make_node("Reshape", [y6, const([1, C, H, W], "y_shape")], [y_out],
                                  name=name("Reshape")))
    nodes.append(helper.make_node("Identity", [cond_in], [cond_out], name=name("Identity")))
    return helper.make_graph(
        nodes, name("body"),
        [helper.make_tensor_value_info(i_name, TensorProto.INT64, []),
         helper.make_tensor_value_info(cond_in, TensorProto.BOOL, [])],
        [helper.make_tensor_value_info(cond_out, TensorProto.BOOL, []),
         helper.make_tensor_value_info(y_out, TensorProto.FLOAT, [1, C, H, W])],
    )


def _expansion(node: Any, index: int, consts: list[Any]) -> list[Any]:
    """The outer nodes that replace placeholder ``node``: the batch size, the Loop, and the
    reshape of its stacked outputs (B, 1, C, H, W) to y (B, C, H, W)."""
    from onnx import TensorProto, helper

    name = _Names(f"stencil_product_{index}")
    raw, x = node.input
    (y,) = node.output
    a = _attributes(node)
    C, H, W = int(a["channels"]), int(a["height"]), int(a["width"])
    shape, batch, true, stacked = name("shape"), name("batch"), name("true"), name("stacked")
    zero = name("zero")
    consts.append(helper.make_tensor(zero, TensorProto.INT64, [], [0]))
    consts.append(helper.make_tensor(true, TensorProto.BOOL, [], [True]))
    y_shape = name("y_shape")
    consts.append(helper.make_tensor(y_shape, TensorProto.INT64, [4], [-1, C, H, W]))
    body = _body(node, raw, x, name, consts)
    return [
        helper.make_node("Shape", [x], [shape], name=name("Shape")),
        helper.make_node("Gather", [shape, zero], [batch], name=name("Gather"), axis=0),
        helper.make_node("Loop", [batch, true], [stacked], name=name("Loop"), body=body),
        helper.make_node("Reshape", [stacked, y_shape], [y], name=name("Reshape")),
    ]


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
