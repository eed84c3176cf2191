"""The registered operator ``epdo::stencil_product`` (:mod:`epdo.zoo.layers.product_op`):
torch's own checks of a custom operator, values and gradients against the definition, a
compiled training step through it without a graph break, and a ``.pt2`` program that keeps
it (verified, and refused when it calls anything else of epdo's namespace)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_checks import cli, refused
from PIL import Image
from test_pt2 import CLASSES, edit_json, rewrite
from test_stencil_product import definition, neural_epdo

from epdo.exporters import PT2Classifier, ServingError
from epdo.exporters.export import export_model
from epdo.exporters.formats.pt2_checks import EPDO_OPS
from epdo.zoo import build_model, load_spec
from epdo.zoo.layers import product_op
from epdo.zoo.layers import stencil_product as sp

G, D, K, GROUPS = 2, 3, 5, 2
EPS = 0.01
OP = "torch.ops.epdo.stencil_product.default"
NEURAL_TINY = {
    "name": "op_tiny",
    "group": "C4",
    "discretization": "fd",
    "input": {"channels": 1, "size": 12, "mean": 0.2, "std": 0.4},
    "layers": [{"op": "pdo_conv", "fields": 4, "order": 2},
               {"op": "neural_epdo", "fields": 4, "order": 2, "g": 2},
               {"op": "head", "classes": 3}],
}


def sample(seed: int = 0, dtype: torch.dtype = torch.float64, grad: bool = True,
           channels_last: bool = False) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    h = torch.randn(3, 4, 7, 6, generator=gen, dtype=dtype)
    x = torch.randn(3, 2 * G * D, 7, 6, generator=gen, dtype=dtype)
    w = torch.randn(G * K * K * D, 4 // GROUPS, 1, 1, generator=gen, dtype=dtype)
    if channels_last:
        h, x = (t.contiguous(memory_format=torch.channels_last) for t in (h, x))
    return [t.requires_grad_(grad) for t in (h, x, w)]


@pytest.mark.parametrize("case", ["float64", "float32", "no_grad", "channels_last"])
def test_opcheck(case: str) -> None:
    """Schema, fake tensor (shapes and strides), autograd registration and AOT dispatch."""
    args = sample(dtype=torch.float32 if case == "float32" else torch.float64,
                  grad=case != "no_grad", channels_last=case == "channels_last")
    result = torch.library.opcheck(torch.ops.epdo.stencil_product.default,
                                   (*args, GROUPS, G, K, EPS))
    assert set(result.values()) == {"SUCCESS"}, result


@pytest.mark.parametrize("native", [True, False])
def test_values_and_gradients_equal_the_definition(native: bool,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    if not native:
        monkeypatch.setattr(sp, "stencil_kernels", lambda: None)
    h, x, w = sample(seed=3)
    y = torch.ops.epdo.stencil_product(h, x, w, GROUPS, G, K, EPS)
    ref = definition(h, x, w, GROUPS, G, K, EPS)
    torch.testing.assert_close(y, ref, rtol=1e-10, atol=1e-12)
    gy = torch.randn_like(ref)
    got = torch.autograd.grad(y, (h, x, w), gy)
    want = torch.autograd.grad(ref, (h, x, w), gy)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_the_allow_list_spells_the_registered_schema() -> None:
    """What a .pt2 may call is exactly the operator torch has registered under that name."""
    kinds = {"Tensor": "as_tensor", "SymInt": "as_int", "int": "as_int", "float": "as_float"}
    schema = product_op.registered_schema()
    assert schema == product_op.SCHEMA
    args = torch.ops.epdo.stencil_product.default._schema.arguments
    assert EPDO_OPS == {product_op.OP_NAME: tuple((a.name, kinds[str(a.type)]) for a in args)}
    assert product_op.registered_schema("stencil_product_backward") == product_op.BACKWARD_SCHEMA


def test_a_compiled_training_step_has_no_graph_break() -> None:
    """A Neural ePDO layer's loss (generator, FieldNorm, the product, the output 1x1)
    compiles as one graph (fullgraph), forward and backward through the two operators, and
    gives the eager gradients."""
    layer = neural_epdo()
    x = torch.randn(3, 16, 8, 8, dtype=torch.float64, requires_grad=True)
    target = torch.randn(3, 16, 8, 8, dtype=torch.float64)

    def loss_fn(images: torch.Tensor) -> torch.Tensor:
        return (layer(images) - target).square().mean()

    explained = torch._dynamo.explain(loss_fn)(x)
    assert explained.graph_break_count == 0 and explained.graph_count == 1
    targets = {str(n.target) for gm in explained.graphs for n in gm.graph.nodes}
    assert any("stencil_product" in t for t in targets), targets
    torch._dynamo.reset()
    compiled = torch.compile(loss_fn, backend="aot_eager", fullgraph=True)
    params = [x, *layer.parameters()]
    got = torch.autograd.grad(compiled(x), params)
    want = torch.autograd.grad(loss_fn(x), params)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


@pytest.fixture(scope="module")
def program(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("op-pt2")
    torch.manual_seed(0)
    spec = load_spec(NEURAL_TINY)
    model = build_model(spec).eval()
    report = export_model((model, spec), "pt2", folder / "m.pt2", real_images=0,
                          classes=CLASSES)
    assert report.passed and report.agreement == 1.0
    assert report.rotation_max_rel is not None and report.rotation_max_rel < 1e-4
    pixels = np.random.default_rng(0).integers(0, 256, (12, 12), dtype=np.uint8)
    Image.fromarray(pixels).save(folder / "good.png")
    return folder / "m.pt2", folder / "good.png"


def _nodes(path: Path) -> list[dict]:
    import zipfile

    with zipfile.ZipFile(path) as zf:
        name = next(n for n in zf.namelist() if n.endswith("models/model.json"))
        return json.loads(zf.read(name))["graph_module"]["graph"]["nodes"]


def test_the_pt2_program_calls_the_op_and_serves(program: tuple[Path, Path]) -> None:
    path, good = program
    targets = [n["target"] for n in _nodes(path)]
    assert targets.count(OP) == 1
    assert not any(t.endswith(".slice.Tensor") for t in targets)  # no 25-slice expansion
    clf = PT2Classifier(path, "cpu")
    assert clf.predict(np.random.default_rng(1).random((5, 1, 12, 12), np.float32)).shape \
        == (5, 3)
    result = cli("predict", path, good, "--json", "--provider", "cpu")
    assert result.exit_code == 0, result.stderr


def _edit_op(fn) -> dict:  # noqa: ANN001 - a function of one graph node
    def apply(program: dict) -> None:
        for node in program["graph_module"]["graph"]["nodes"]:
            if node["target"] == OP:
                fn(node)

    return {"models/model.json": edit_json(apply)}


@pytest.mark.parametrize("case", ["other_op", "backward_op", "overload", "renamed_arg",
                                  "extra_arg", "float_for_int", "two_results"])
def test_other_ops_of_the_namespace_or_schemas_are_refused(program: tuple[Path, Path],
                                                           tmp_path: Path, case: str) -> None:
    edits = {
        "other_op": lambda n: n.update(target="torch.ops.epdo.run_anything.default"),
        "backward_op": lambda n: n.update(target="torch.ops.epdo.stencil_product_backward"
                                                 ".default"),
        "overload": lambda n: n.update(target="torch.ops.epdo.stencil_product.out"),
        "renamed_arg": lambda n: n["inputs"][0].update(name="path"),
        "extra_arg": lambda n: n["inputs"].append({"name": "file", "arg": {"as_string": "x"},
                                                   "kind": 1}),
        "float_for_int": lambda n: n["inputs"][4].update(arg={"as_float": 2.0}),
        "two_results": lambda n: n["outputs"].append({"as_tensor": {"name": "relu"}}),
    }
    path, good = program
    crafted = rewrite(path, tmp_path / f"{case}.pt2", redigest=True,
                      edit=_edit_op(edits[case]))
    needle = "another schema" if case not in ("other_op", "backward_op", "overload") \
        else "epdo's namespace"
    refused(cli("info", crafted, "--trust"), 2, f"{case}.pt2", needle)
    with pytest.raises(ServingError, match="epdo loads"):
        PT2Classifier(crafted, "cpu", trust=True)


def test_the_inference_graph_feeds_the_product_channels_last() -> None:
    """As in the zoo model, the feature maps of the inference graph (what ``.pt2`` and AOTI
    are exported from) are channels-last, even after a stem convolution fed one channel
    (a convolution returns NCHW there): the 1x1 convolutions and the fused product run
    fastest on that layout, and an NCHW input costs a copy of every chunk's coefficients."""
    from epdo.zoo.layers.neural_epdo import NeuralEPDOInference
    from epdo.zoo.layers.plain import ChannelsLastConv2d

    torch.manual_seed(0)
    graph = build_model(load_spec(NEURAL_TINY)).eval().export()
    seen: list[tuple[str, bool]] = []

    def record(module: torch.nn.Module, inputs: tuple, out: torch.Tensor) -> None:
        seen.append((type(module).__name__, out.is_contiguous(memory_format=torch.channels_last)
                     and not out.is_contiguous()))

    for module in graph.modules():
        if isinstance(module, NeuralEPDOInference):
            module.reduce.register_forward_hook(
                lambda mod, inputs, out: seen.append(
                    ("product input", inputs[0].is_contiguous(memory_format=torch.channels_last)
                     and not inputs[0].is_contiguous())))
        if isinstance(module, ChannelsLastConv2d | NeuralEPDOInference):
            module.register_forward_hook(record)
    with torch.no_grad():
        graph(torch.rand(2, 1, 12, 12))
    stem, product, reduce, out = (("ChannelsLastConv2d", True), ("product input", True),
                                  ("ChannelsLastConv2d", True), ("ChannelsLastConv2d", True))
    assert seen == [stem, product, reduce, out, ("NeuralEPDOInference", True)]


def test_a_whole_models_training_step_compiles_as_one_graph() -> None:
    """``torch.compile`` of a zoo model's training forward and loss (stem, field
    BatchNorms in their first update, the Neural ePDO, the head) captures one graph with no
    break, gives the eager loss and gradients, and ``epdo bench --compile`` times it."""
    import copy

    import torch.nn.functional as F

    from epdo.zoo.benchmark import random_batch
    from epdo.zoo.compiled_step import compiled_step_figures, graph_breaks

    torch.manual_seed(0)
    model = build_model(load_spec(NEURAL_TINY)).double()
    x, y = random_batch(model, 4, torch.device("cpu"))
    x = x.double()
    assert graph_breaks(model, x, y) == (1, 0)
    twin = copy.deepcopy(model)
    torch._dynamo.reset()
    compiled = torch.compile(lambda a, b: F.cross_entropy(twin(a), b), backend="aot_eager",
                             fullgraph=True)
    for _ in range(2):  # the first update seeds the running statistics, the second not
        got = torch.autograd.grad(compiled(x, y), list(twin.parameters()))
        want = torch.autograd.grad(F.cross_entropy(model(x), y), list(model.parameters()))
        for a, b in zip(got, want, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)
    for a, b in zip(twin.buffers(), model.buffers(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)
    torch._dynamo.reset()
    figures = compiled_step_figures(model.float(), 4, 2, torch.device("cpu"),
                                    backend="aot_eager")
    assert figures["train_compiled_graph_breaks"] == 0
    assert figures["train_compiled_images_per_s"] > 0 and figures["train_compile_s"] > 0
