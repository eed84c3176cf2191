"""What a ``.pt2`` program must be before ``torch.export.load`` sees a byte of it.

``torch.export.load`` can run code that a crafted ``.pt2`` brings, along five paths:
pickles (a weight or constant marked ``use_pickle`` goes through
``torch.load(weights_only=False)``, an opaque constant through ``pickle.loads``, a torchbind
object through torch's pickler), the example inputs (``torch.load(weights_only=True)``,
retried with ``weights_only=False`` when that fails), guard code (``guards_code`` strings
that ``ExportedProgram.module()`` compiles with ``exec``), shape expressions (``expr_str``,
parsed by ``sympy.sympify``, which evaluates Python), and the graph itself (a node may call
any ``torch.*`` attribute; ``aten::from_file`` maps a file into a tensor). So
:func:`check_program` reads the checked zip (:mod:`epdo.exporters.archive`) and refuses a
program that is not exactly what ``epdo export --format pt2`` writes:

- entries: only the names ``torch.export.save`` gives one program of plain tensors
  (:data:`PROGRAM_ENTRIES`): no AOTInductor code, no legacy pickled weights, no custom
  objects;
- weights and constants: raw tensor bytes on the CPU only (``use_pickle`` false
  everywhere);
- example inputs: they load with ``torch.load(weights_only=True)`` (tensors, no objects),
  so torch's first try succeeds and its fallback is never reached;
- the graph: one tensor input, one tensor output, parameters, buffers and tensor constants;
  every node an operator of :data:`PT2_OPS` (pure tensor functions: no file names, no
  in-place or ``out=`` variants) or the Neural ePDO's fused product of epdo's own
  namespace with its exact schema (:data:`EPDO_OPS`); no subgraphs, operators as
  arguments or custom objects;
  every shape expression a symbol or arithmetic on symbols and integers (a fixed grammar:
  no attributes, no strings but symbol names, no powers); no guard code; plain names.

A tampered ``.pt2`` that passes these checks can still compute wrong logits (the digest
catches edits that did not also rewrite it) or ask for a huge allocation (an error); it
cannot run code of its own.
"""

from __future__ import annotations

import io
import json
import re
from typing import Any

from epdo.zoo.values import shown

from ..archive import Archive
from ..artifact import ArtifactError, first_line, show
from .torch_common import quiet_torch

__all__ = ["EPDO_OPS", "PROGRAM", "PROGRAM_ENTRIES", "PT2_OPS", "bad", "check_entries",
           "check_program", "json_entry"]

PROGRAM = "torch.export program"
"""How messages name a ``.pt2`` file."""

PT2_OPS = frozenset({
    # what the shipped zoo's inference graphs use (every MNIST, RGB and CIFAR spec)
    "abs", "add", "amax", "avg_pool2d", "conv2d", "div", "group_norm", "linear",
    "max_pool2d", "mean", "mul", "pad", "relu", "reshape", "select", "slice", "sub", "sum",
    "sym_size", "transpose", "unflatten", "unsqueeze",
    # their decomposed forms and close kin, which another torch release may emit
    "addmm", "constant_pad_nd", "convolution", "expand", "flatten", "max_pool2d_with_indices",
    "mm", "native_group_norm", "permute", "view", "clone", "contiguous", "squeeze", "cat",
    "neg", "sqrt", "rsqrt", "clamp", "maximum", "minimum", "where", "sigmoid", "tanh",
    # the decoder's x2 upsampling (op upsample)
    "upsample_nearest2d", "upsample_bilinear2d",
})
"""The ATen operators a ``.pt2`` program may call (``torch.ops.aten.NAME.OVERLOAD``, any
overload but ``out`` ones; no in-place ``NAME_``): pure functions of tensors and numbers.
An operator outside it refuses the file; a new layer that needs one adds it here once its
schema is checked (no file names, no writes; ``tests/test_pt2.py`` checks every entry)."""

EPDO_OPS: dict[str, tuple[tuple[str, str], ...]] = {
    "stencil_product": (("h", "as_tensor"), ("x", "as_tensor"), ("weight", "as_tensor"),
                        ("groups", "as_int"), ("g", "as_int"), ("k", "as_int"),
                        ("eps", "as_float")),
}
"""The operators of epdo's own namespace a ``.pt2`` program may call
(``torch.ops.epdo.NAME.default``), each with its arguments exactly as the serialized graph
spells them (name, kind) and one tensor result: the Neural ePDO's fused product
(``epdo::stencil_product``, :mod:`epdo.zoo.layers.product_op`, whose registered schema
``tests/test_pt2.py`` checks against this). Any other operator of the namespace, another
overload or other arguments refuse the file."""

_OTHER_TARGETS = frozenset({"_operator.getitem"})
"""Node targets outside ATen that are allowed: picking one output of a multi-output op."""

PROGRAM_ENTRIES = re.compile(
    r"archive_format|archive_version|byteorder|\.data/version|\.data/serialization_id"
    r"|extra/epdo\.json|models/model\.json|data/sample_inputs/model\.pt"
    r"|data/weights/model_weights_config\.json|data/weights/weight_\d{1,6}"
    r"|data/constants/model_constants_config\.json|data/constants/tensor_\d{1,6}")
"""Every entry (relative to the top folder) ``torch.export.save`` writes for one program of
plain tensors named ``model``; any other entry refuses the file."""

REQUIRED_PROGRAM = ("archive_format", "archive_version", "models/model.json",
                     "data/sample_inputs/model.pt", "data/weights/model_weights_config.json",
                     "data/constants/model_constants_config.json")

_ALLOWED_TAGS = frozenset({
    "as_none", "as_tensor", "as_tensors", "as_int", "as_ints", "as_float", "as_floats",
    "as_string", "as_strings", "as_sym_int", "as_sym_ints", "as_scalar_type",
    "as_memory_format", "as_layout", "as_device", "as_bool", "as_bools", "as_sym_bool",
    "as_sym_bools", "as_optional_tensors", "as_sym_float", "as_sym_floats",
    "as_optional_tensor", "as_complex", "as_int_lists", "as_float_lists", "as_expr",
    "as_name",
})
"""Argument kinds of the serialized graph epdo accepts: values, tensors and shapes; never
``as_graph`` (a subgraph), ``as_operator`` (an op passed around) or ``as_custom_obj``."""

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,199}")
_FQN = re.compile(r"(?!__)[A-Za-z_][A-Za-z0-9_]{0,99}(\.(?!__)[A-Za-z0-9_]{1,100}){0,30}")
_SYMBOL = re.compile(r"[a-z]\d{1,9}")
_EXPR_TOKENS = re.compile(r"\s+|'[^']{0,20}'|[A-Za-z_][A-Za-z0-9_]*|\d+|\*\*|[-+*/(),=]")
_EXPR_NAMES = frozenset({
    "Symbol", "Integer", "Add", "Mul", "FloorDiv", "CeilDiv", "Mod", "PythonMod", "Max",
    "Min", "positive", "integer", "nonnegative", "True", "False",
})
_MAX_EXPR = 300


def bad(where: Any, kind: str, why: str) -> ArtifactError:
    """``<where>: not a <kind> epdo loads (<why>)``."""
    return ArtifactError(f"{where}: not a {kind} epdo loads ({why})")


def json_entry(archive: Archive, name: str, where: Any, kind: str) -> Any:
    """An entry of the archive decoded as JSON; refused when it is not JSON."""
    try:
        return json.loads(archive.read(name).decode("utf-8"))
    except (ValueError, RecursionError, UnicodeDecodeError) as exc:
        raise bad(where, kind, f"{name} is not valid JSON") from exc


def check_entries(archive: Archive, pattern: re.Pattern[str], required: tuple[str, ...],
                  where: Any, kind: str) -> None:
    """Every entry's name matches ``pattern`` (no ``..``), and the ``required`` ones are
    there."""
    for name in archive.names:
        if not pattern.fullmatch(name) or ".." in name:
            raise bad(where, kind, f"it holds the entry {show(name)}, which epdo export "
                      "does not write")
    missing = [n for n in required if n not in archive.names]
    if missing:
        raise bad(where, kind, f"it lacks {', '.join(missing)}")


def check_program(archive: Archive,
                  where: Any) -> tuple[tuple[int | None, ...], tuple[int | None, ...], str]:
    """Check a ``.pt2``'s entries as the module docstring says; returns ``(input dims
    (C, H, W), output dims ((K,) or (K, H, W)), the writer's torch version)`` from its
    graph."""
    check_entries(archive, PROGRAM_ENTRIES, REQUIRED_PROGRAM, where, PROGRAM)
    program = json_entry(archive, "models/model.json", where, PROGRAM)
    for folder, prefix in (("weights", "weight_"), ("constants", "tensor_")):
        config = json_entry(archive, f"data/{folder}/model_{folder}_config.json", where,
                            PROGRAM)
        _check_payloads(config, folder, prefix, set(archive.names), where)
    _check_example_inputs(archive.read("data/sample_inputs/model.pt"), where)
    return _check_program(program, where)


def _check_payloads(config: Any, folder: str, prefix: str, names: set[str],
                    where: Any) -> None:
    """Every weight / constant is raw tensor bytes on the CPU (never a pickle)."""
    table = config.get("config") if isinstance(config, dict) else None
    if not isinstance(table, dict):
        raise bad(where, PROGRAM, f"data/{folder}/model_{folder}_config.json has no config")
    for fqn, meta in table.items():
        if not _FQN.fullmatch(str(fqn)) or not isinstance(meta, dict):
            raise bad(where, PROGRAM, f"the {folder} config names {show(fqn)}")
        if meta.get("use_pickle") is not False:
            raise bad(where, PROGRAM, f"{folder} entry {show(fqn)} is a pickle, which epdo "
                      "never loads (a pickle can run code)")
        path = meta.get("path_name")
        if (not isinstance(path, str) or not re.fullmatch(rf"{prefix}\d{{1,6}}", path)
                or f"data/{folder}/{path}" not in names):
            raise bad(where, PROGRAM, f"{folder} entry {show(fqn)} points at {show(path)}")
        tensor = meta.get("tensor_meta")
        device = tensor.get("device") if isinstance(tensor, dict) else None
        if not isinstance(device, dict) or device.get("type") != "cpu":
            raise bad(where, PROGRAM, f"{folder} entry {show(fqn)} is not a CPU tensor")
        _check_tree(tensor, where)


def _check_example_inputs(raw: bytes, where: Any) -> None:
    """The example inputs load as plain tensors: ``torch.load(weights_only=True)``, the very
    call ``torch.export.load`` tries first (so it never falls back to ``weights_only=False``)."""
    try:
        import torch

        with quiet_torch():
            value = torch.load(io.BytesIO(raw), weights_only=True)
    except Exception as exc:  # the restricted unpickler refused something, or bad bytes
        raise bad(where, PROGRAM, "its example inputs are not plain tensors "
                  f"({first_line(exc)[:80]})") from exc
    del value


def _safe_expression(text: Any) -> bool:
    """Whether a shape expression is a symbol or arithmetic of symbols and integers in
    sympy's printed forms (``s34``, ``Symbol('s34', positive=True, integer=True)``,
    ``Mul(Integer(2), ...)``, ``2*s34``), nothing that ``sympify`` could turn into code."""
    if not isinstance(text, str) or len(text) > _MAX_EXPR:
        return False
    tokens = _EXPR_TOKENS.findall(text)
    if "".join(tokens) != text:
        return False
    for token in tokens:
        if token == "**":
            return False
        if token.startswith("'"):
            if not _SYMBOL.fullmatch(token[1:-1]):
                return False
        elif token[0].isalpha() or token[0] == "_":
            if token not in _EXPR_NAMES and not _SYMBOL.fullmatch(token):
                return False
        elif token.isdigit() and len(token) > 18:
            return False
    return True


def _check_tree(value: Any, where: Any) -> None:
    """The rules that hold anywhere in the serialized program: known argument kinds only,
    safe shape expressions, plain names."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(v for v in item if isinstance(v, (dict, list)))
            continue
        if not isinstance(item, dict):
            continue
        for key, child in item.items():
            if key.startswith("as_") and key not in _ALLOWED_TAGS:
                raise bad(where, PROGRAM, f"the graph has an argument of kind {show(key)} "
                          "(subgraphs, operators and custom objects are refused)")
            if key == "expr_str" and not _safe_expression(child):
                raise bad(where, PROGRAM, f"the shape expression {show(child)} is not "
                          "arithmetic on sizes")
            if key in ("name", "as_name") and isinstance(child, str) \
                    and not _IDENTIFIER.fullmatch(child):
                raise bad(where, PROGRAM, f"the graph names a value {show(child)}")
            if isinstance(child, (dict, list)):
                stack.append(child)


def _sizes(graph: dict[str, Any], arg: Any, where: Any) -> list[int | None]:
    """The sizes of a graph tensor argument (None for a symbolic size)."""
    name = arg.get("as_tensor", {}).get("name") if isinstance(arg, dict) else None
    meta = graph.get("tensor_values", {}).get(name) if isinstance(name, str) else None
    sizes = meta.get("sizes") if isinstance(meta, dict) else None
    if not isinstance(sizes, list):
        raise bad(where, PROGRAM, "the graph does not describe its input or output tensor")
    out: list[int | None] = []
    for size in sizes:
        value = size.get("as_int") if isinstance(size, dict) else None
        out.append(value if isinstance(value, int) and not isinstance(value, bool) else None)
    return out


def _check_signature(module: dict[str, Any], where: Any) -> tuple[Any, Any]:
    """One tensor input, one tensor output, and otherwise parameters, buffers and tensor
    constants under plain dotted names; returns the (input, output) arguments."""
    signature = module.get("signature")
    if not isinstance(signature, dict):
        raise bad(where, PROGRAM, "the graph has no signature")
    user_inputs = []
    for spec in signature.get("input_specs") or []:
        if not isinstance(spec, dict) or len(spec) != 1:
            raise bad(where, PROGRAM, "the graph's signature is malformed")
        (kind, body), = spec.items()
        if kind == "user_input":
            user_inputs.append(body.get("arg") if isinstance(body, dict) else None)
        elif kind in ("parameter", "buffer", "tensor_constant"):
            fqn = body.get(f"{kind}_name") if isinstance(body, dict) else None
            if not isinstance(fqn, str) or not _FQN.fullmatch(fqn):
                raise bad(where, PROGRAM, f"the graph's {kind} is named {show(fqn)}")
        else:
            raise bad(where, PROGRAM, f"the graph takes an input of kind {show(kind)}")
    outputs = signature.get("output_specs") or []
    if (len(user_inputs) != 1 or not isinstance(user_inputs[0], dict)
            or "as_tensor" not in user_inputs[0] or len(outputs) != 1
            or not isinstance(outputs[0], dict) or list(outputs[0]) != ["user_output"]):
        raise bad(where, PROGRAM, "the graph does not map one tensor to one tensor")
    out = outputs[0]["user_output"]
    arg = out.get("arg") if isinstance(out, dict) else None
    if not isinstance(arg, dict) or "as_tensor" not in arg:
        raise bad(where, PROGRAM, "the graph does not return one tensor")
    return user_inputs[0], arg


def _check_nodes(graph: dict[str, Any], where: Any) -> None:
    for node in graph.get("nodes") or []:
        target = node.get("target") if isinstance(node, dict) else None
        if not isinstance(target, str):
            raise bad(where, PROGRAM, "a graph node has no operator")
        if target in _OTHER_TARGETS:
            continue
        if target.startswith("torch.ops.epdo."):
            _check_epdo_node(node, target, where)
            continue
        match = re.fullmatch(r"torch\.ops\.aten\.([a-z0-9_]+)\.([A-Za-z0-9_]+)", target)
        if (match is None or match.group(1) not in PT2_OPS
                or "out" in match.group(2).split("_")):
            raise bad(where, PROGRAM, f"the graph calls {show(target)}, which is not one of "
                      "the pure tensor operators epdo loads (PT2_OPS)")


def _check_epdo_node(node: dict[str, Any], target: str, where: Any) -> None:
    """A call of an operator of epdo's namespace: one of :data:`EPDO_OPS`, its default
    overload, with exactly its arguments and one tensor result."""
    match = re.fullmatch(r"torch\.ops\.epdo\.([a-z0-9_]+)\.default", target)
    expected = EPDO_OPS.get(match.group(1)) if match else None
    if expected is None:
        raise bad(where, PROGRAM, f"the graph calls {show(target)}, which is not one of the "
                  "operators of epdo's namespace epdo loads (EPDO_OPS)")
    inputs = node.get("inputs")
    spelled: list[tuple[Any, Any]] = []
    for item in inputs if isinstance(inputs, list) else [None]:
        arg = item.get("arg") if isinstance(item, dict) else None
        kinds = list(arg) if isinstance(arg, dict) else [None]
        spelled.append((item.get("name") if isinstance(item, dict) else None,
                        kinds[0] if len(kinds) == 1 else None))
    outputs = node.get("outputs")
    if (tuple(spelled) != expected or not isinstance(outputs, list) or len(outputs) != 1
            or not isinstance(outputs[0], dict) or list(outputs[0]) != ["as_tensor"]):
        raise bad(where, PROGRAM, f"the graph calls {show(target)} with another schema than "
                  "the one epdo registers")


def _check_program(program: Any, where: Any) -> tuple[tuple[int | None, ...],
                                                      tuple[int | None, ...], str]:
    """The checks of the serialized ``ExportedProgram`` (``models/model.json``)."""
    import torch

    if not isinstance(program, dict) or not isinstance(program.get("graph_module"), dict):
        raise bad(where, PROGRAM, "models/model.json holds no graph")
    version = program.get("schema_version")
    major = version.get("major") if isinstance(version, dict) else None
    writer = program.get("torch_version")
    writer = writer if isinstance(writer, str) else "an unknown torch"
    try:
        from torch._export.serde.schema import SCHEMA_VERSION
    except ImportError:  # pragma: no cover - torch moved it; let torch.export.load judge
        SCHEMA_VERSION = (major, None)
    if major != SCHEMA_VERSION[0]:
        raise ArtifactError(
            f"{where}: written by torch {shown(writer, 40)} in torch.export format "
            f"{show(major)}.x; this torch {torch.__version__} reads format "
            f"{SCHEMA_VERSION[0]}.x: run it with a torch of the writer's series or re-export "
            "it")
    if program.get("guards_code") not in ([], None):
        raise bad(where, PROGRAM, "it carries guard code, which epdo never runs")
    verifiers = program.get("verifiers") or []
    if not isinstance(verifiers, list) or not set(verifiers) <= {"", "ATEN", "TRAINING"}:
        raise bad(where, PROGRAM, f"it names the verifiers {show(verifiers)}")
    ranges = program.get("range_constraints") or {}
    if not isinstance(ranges, dict) or not all(_SYMBOL.fullmatch(str(k)) for k in ranges):
        raise bad(where, PROGRAM, "its range constraints are not on size symbols")
    module = program["graph_module"]
    graph = module.get("graph")
    if not isinstance(graph, dict):
        raise bad(where, PROGRAM, "models/model.json holds no graph")
    if graph.get("custom_obj_values") or module.get("treespec_namedtuple_fields"):
        raise bad(where, PROGRAM, "the graph holds custom objects or named tuples")
    _check_tree(program, where)
    _check_nodes(graph, where)
    inp, out = _check_signature(module, where)
    in_sizes, out_sizes = _sizes(graph, inp, where), _sizes(graph, out, where)
    if len(in_sizes) != 4 or len(out_sizes) not in (2, 4):
        raise bad(where, PROGRAM, f"the graph maps a tensor of {len(in_sizes)} dimensions to "
                  f"one of {len(out_sizes)}, not (batch, C, H, W) to (batch, classes) or "
                  "(batch, classes, H, W)")
    return tuple(in_sizes[1:]), tuple(out_sizes[1:]), writer

