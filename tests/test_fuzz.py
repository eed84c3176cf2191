"""Property-based fuzzing: a mutated valid spec or a mutated artifact's metadata ends in a
model (or a working classifier) or in one clean epdo error, never in a traceback.

Hypothesis draws derandomized examples (the same ones on every run) within a budget of a few
seconds; the mutations are the kinds a careless or hostile file holds: wrong types, huge or
non-finite numbers, markup and control characters, missing and unknown keys.
"""

from __future__ import annotations

import copy
import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from epdo.exporters.export import export_model
from epdo.exporters.runtime import load_classifier
from epdo.zoo import build_model
from epdo.zoo.errors import EpdoError
from epdo.zoo.spec import load_spec

FUZZ = settings(max_examples=50, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow,
                                       HealthCheck.function_scoped_fixture])

BASE_SPEC: dict[str, Any] = {
    "name": "fuzz",
    "group": "C4",
    "discretization": "fd",
    "input": {"channels": 1, "size": 12, "mean": 0.2, "std": 0.4},
    "defaults": {"type": "regular"},
    "layers": [
        {"op": "pdo_conv", "fields": 2, "pool": 2},
        {"op": "neural_epdo", "fields": 2, "g": 2},
        {"op": "residual", "body": [{"op": "conv1x1", "fields": 2}]},
        {"op": "head", "classes": 3, "hidden": [4]},
    ],
    "train": {"epochs": 1, "lr": 0.01, "augment": {"rotate": True}},
}

HOSTILE_TEXT = ["[/]", "[bold]x", ":100:", "a\x00b", "\x1b[31m", "../../etc/passwd",
                "C100000000", "D0", "regular", "quotient4", "", " ", "é" * 3]

values = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([0, 1, 2, 3, 4, 5, 16, 10**9, -1]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.none(),
    st.sampled_from(HOSTILE_TEXT),
    st.text(max_size=8),
    st.lists(st.sampled_from([1, "regular", None, 2.5]), max_size=3),
    st.dictionaries(st.sampled_from(["op", "fields", "x", "[/]"]),
                    st.sampled_from([1, "pool", None]), max_size=2),
)

plausible = st.sampled_from([1, 2, 3, 4, 8, "regular", "trivial", "quotient2", "max", "avg",
                             True, False, 0.5, [2], "D4", "C8", "gauss", "raw"])
"""Values a spec could hold where they stand, so that many mutants still build."""


def _paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    """Every key path into nested dicts and lists (the root excluded)."""
    out = []
    if isinstance(node, dict):
        for key, value in node.items():
            out.append(prefix + (key,))
            out += _paths(value, prefix + (key,))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            out.append(prefix + (i,))
            out += _paths(value, prefix + (i,))
    return out


@st.composite
def mutated_specs(draw: st.DrawFn) -> dict[str, Any]:
    spec = copy.deepcopy(BASE_SPEC)
    for _ in range(draw(st.integers(1, 3))):
        paths = _paths(spec)
        path = draw(st.sampled_from(paths))
        parent = spec
        for step in path[:-1]:
            parent = parent[step]
        action = draw(st.sampled_from(["replace", "replace", "delete", "add"]))
        if action == "delete":
            del parent[path[-1]]
        elif action == "add" and isinstance(parent, dict):
            parent[draw(st.sampled_from(["extra", "op", "repeat", "[/]", "extends"]))] = draw(
                st.one_of(plausible, values))
        else:
            parent[path[-1]] = draw(st.one_of(plausible, plausible, values))
    return spec


@pytest.fixture
def small_models(monkeypatch: pytest.MonkeyPatch) -> None:
    """Models the size of the base spec's neighbours: bigger mutants are refused by the
    spec's own size estimate (one more clean error), which keeps the budget to seconds."""
    monkeypatch.setenv("EPDO_MAX_ACTIVATION_BYTES", str(8 << 20))
    monkeypatch.setenv("EPDO_MAX_WEIGHTS", str(1 << 20))


@FUZZ
@given(spec=mutated_specs())
def test_mutated_specs_give_a_model_or_one_clean_error(small_models: None,
                                                       spec: dict[str, Any]) -> None:
    try:
        loaded = load_spec(spec)
        model = build_model(loaded).eval()
        with torch.no_grad():
            out = model(torch.rand(1, *model.input_shape))
        assert out.shape[0] == 1
    except EpdoError as exc:
        text = str(exc)
        assert text.strip() and "\n" not in text.strip() and "Traceback" not in text


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    spec = load_spec(BASE_SPEC)
    model = build_model(spec).eval()
    path = tmp_path_factory.mktemp("fuzz") / "fuzz.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        export_model((model, spec), "onnx", path, real_images=0, classes=["a", "b", "c"])
    return path


metadata_values = st.one_of(
    st.sampled_from(HOSTILE_TEXT),
    st.text(max_size=12),
    values.map(lambda v: json.dumps(v, allow_nan=True)),
    st.sampled_from(['["a", "b"]', '["a", "b", "c", "d"]', "[100000, 100000, 3]",
                     "[1, 12, 12]", "{}", "[]", '"x"', "1e999", "NaN", "null"]),
)


@FUZZ
@given(data=st.data())
def test_mutated_artifact_metadata_gives_a_classifier_or_one_clean_error(
    artifact: Path, tmp_path: Path, data: st.DataObject
) -> None:
    proto = onnx.load(str(artifact))
    props = proto.metadata_props
    for _ in range(data.draw(st.integers(1, 3))):
        index = data.draw(st.integers(0, len(props) - 1))
        if data.draw(st.booleans()):
            props[index].value = data.draw(metadata_values)
        else:
            del props[index]
    target = tmp_path / "mutated.onnx"
    onnx.save(proto, str(target))
    try:
        classifier = load_classifier(target, provider="cpu")
        probabilities = classifier.predict_proba(np.zeros(classifier.input_shape, np.float32))
        assert np.all(np.isfinite(probabilities))
    except EpdoError as exc:
        text = str(exc)
        assert text.strip() and "\n" not in text.strip() and "Traceback" not in text
