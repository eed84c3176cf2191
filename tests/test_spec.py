"""Loading specs: shipped zoo, extends, defaults, round trip and located errors."""

from __future__ import annotations

import json
import pickle
import textwrap
from pathlib import Path

import pytest

from epdo.zoo.ops.dense_head import DenseHeadLayer
from epdo.zoo.shipped import list_specs, resolve_spec_source, specs_dir
from epdo.zoo.spec import (
    BODY_OPS,
    LAYER_OPS,
    HeadLayer,
    NeuralEpdoLayer,
    PdoConvLayer,
    ResidualLayer,
    Spec,
    SpecError,
    load_spec,
)

SHIPPED = [
    "mnist_d16c16_gauss",
    "mnist_pdoeconv_gauss",
    "mnist_quotient_gauss",
    "mnist_regular_fd",
    "mnist_regular_gauss",
    "quickstart",
]

BASE = """\
group: C4
input: {channels: 1, size: 16}
layers:
  - {op: pdo_conv, fields: 4}
"""


def write(tmp_path: Path, text: str, name: str = "model.yaml") -> Path:
    """Write a dedented YAML file into ``tmp_path``."""
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def spec_error(source: object) -> SpecError:
    with pytest.raises(SpecError) as info:
        load_spec(source)  # type: ignore[arg-type]
    return info.value


# --------------------------------------------------------------------------- zoo


def test_registry_lists_the_shipped_specs() -> None:
    names = list_specs()
    assert names == sorted(names)
    assert set(SHIPPED) <= set(names)
    assert resolve_spec_source("quickstart") == specs_dir() / "quickstart.yaml"
    assert resolve_spec_source("quickstart.yaml").name == "quickstart.yaml"


def test_resolve_spec_source_prefers_an_existing_file(tmp_path: Path) -> None:
    path = write(tmp_path, BASE)
    assert resolve_spec_source(path) == path
    with pytest.raises(FileNotFoundError, match="quickstart"):
        resolve_spec_source(tmp_path / "missing.yaml")


@pytest.mark.parametrize("name", list_specs())
def test_every_shipped_spec_loads(name: str) -> None:
    spec = load_spec(name)
    assert spec.name == name
    assert spec.source_file is not None and spec.source_file.endswith(f"{name}.yaml")
    assert spec.description
    assert isinstance(spec.layers[-1], HeadLayer | DenseHeadLayer)
    assert spec.plan.num_classes is not None


@pytest.mark.parametrize("name", list_specs())
def test_resolved_round_trips(name: str) -> None:
    spec = load_spec(name)
    data = spec.resolved()
    assert "extends" not in data
    assert load_spec(data) == spec
    assert load_spec(json.loads(json.dumps(data))) == spec


def test_paper_training_settings() -> None:
    train = load_spec("mnist_regular_gauss").train
    assert (train.dataset, train.optimizer, train.batch_size, train.epochs) == (
        "mnist-rot",
        "adam",
        64,
        200,
    )
    assert train.lr == pytest.approx(2e-3)
    assert train.weight_decay == pytest.approx(1e-4)
    assert train.lr_milestones == {60: 2e-4, 120: 1e-4, 150: 5e-5, 180: 2.5e-5}
    assert train.augment.rotate


def test_layer_models_per_op() -> None:
    spec = load_spec("mnist_regular_gauss")
    assert isinstance(spec.layers[0], PdoConvLayer)
    assert all(isinstance(layer, NeuralEpdoLayer) for layer in spec.layers[1:6])
    assert [layer.fields for layer in spec.layers[:6]] == [16, 24, 32, 32, 48, 64]
    assert [layer.pool for layer in spec.layers[:6]] == [None, 2, None, 2, None, None]
    assert [layer.dropout for layer in spec.layers[:6]] == [0, 0, 0.1, 0.1, 0.1, 0.1]
    assert {(layer.g, layer.s, layer.reduction, layer.order) for layer in spec.layers[1:6]} == {
        (4, 4, 1, 4)
    }
    assert spec.group_obj.order == 16


# --------------------------------------------------------------------------- extends / defaults


def test_extends_a_shipped_spec_and_overrides(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        extends: mnist_regular_gauss
        discretization: rbffd
        train: {epochs: 3, augment: {flip: true}}
        """,
        "short.yaml",
    )
    spec, parent = load_spec(path), load_spec("mnist_regular_gauss")
    assert spec.name == "short"  # the name is not inherited
    assert spec.description == parent.description
    assert spec.discretization == "rbffd"
    assert spec.layers == parent.layers
    assert spec.train.epochs == 3
    assert spec.train.lr == parent.train.lr  # mappings merge key by key
    assert spec.train.augment.rotate and spec.train.augment.flip


def test_extends_relative_path_replaces_lists(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()  # a parent inside the child's folder tree (../ is refused)
    write(tmp_path, BASE + "  - {op: pool}\n", "sub/base.yaml")
    child = write(
        tmp_path,
        """\
        extends: sub/base.yaml
        name: child
        layers:
          - {op: conv1x1, fields: 2}
        """,
        "child.yaml",
    )
    spec = load_spec(child)
    assert spec.name == "child"
    assert [layer.op for layer in spec.layers] == ["conv1x1"]
    assert spec.group == "C4"


def test_dict_source_extends_a_shipped_name() -> None:
    spec = load_spec({"extends": "quickstart", "name": "mine", "train": {"epochs": 1}})
    assert spec.name == "mine" and spec.train.epochs == 1 and spec.group == "C8"
    assert spec.source_file is None


def test_defaults_fill_only_accepting_layers(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        group: C4
        input: {channels: 1, size: 16}
        defaults: {g: 2, s: 2, order: 3, bn: false}
        layers:
          - {op: pdo_conv, fields: 4}
          - {op: neural_epdo, fields: 4, order: 2}
          - op: residual
            body:
              - {op: neural_epdo, fields: 4}
          - {op: pool}
        """,
    )
    spec = load_spec(path)
    stem, nepdo, res, _ = spec.layers
    assert isinstance(res, ResidualLayer)
    assert (stem.order, stem.bn) == (3, False)
    assert (nepdo.g, nepdo.s, nepdo.order) == (2, 2, 2)
    assert (res.body[0].g, res.body[0].order) == (2, 3)
    assert spec.defaults.g == 2
    assert load_spec(spec.resolved()) == spec


def test_input_normalization_broadcasts() -> None:
    spec = load_spec(
        {
            "group": "C1",
            "input": {"channels": 3, "size": [8, 10], "mean": 0.5},
            "layers": [{"op": "conv", "channels": 2, "kernel": 3}],
        }
    )
    assert spec.input.mean == [0.5, 0.5, 0.5] and spec.input.std == [1.0, 1.0, 1.0]
    assert (spec.input.height, spec.input.width) == (8, 10)


# --------------------------------------------------------------------------- errors


def test_spec_error_is_one_line() -> None:
    err = SpecError("g=4 must divide", path="layers[3].g", file="specs/foo.yaml", line=12)
    assert str(err) == "specs/foo.yaml:12: layers[3].g: g=4 must divide"
    assert str(SpecError("bad", path="group")) == "group: bad"
    assert isinstance(err, ValueError)
    again = pickle.loads(pickle.dumps(err))
    assert (again.file, again.path, again.line, str(again)) == (err.file, err.path, 12, str(err))


NEURAL = """\
group: C4
input: {{channels: 1, size: 16}}
layers:
  - {{op: pdo_conv, fields: 6}}
  - op: neural_epdo
    fields: 8
    {key}: {value}
"""

CASES = {
    "g": (NEURAL.format(key="g", value=4), "layers[1].g", "allowed: 1, 2, 3, 6", 7),
    "reduction": (
        NEURAL.format(key="g", value="2\n    reduction: 7"),
        "layers[1].reduction",
        "allowed: 1..6",
        8,
    ),
    "s": (NEURAL.format(key="g", value="2\n    s: 4"), "layers[1].s", "allowed: 1, 2", 8),
    "quotient": (
        NEURAL.format(key="type", value="[regular, quotient3]"),
        "layers[1].type",
        "M dividing 4",
        7,
    ),
    "order": (NEURAL.format(key="order", value=5), "layers[1].order", "less than or equal", 7),
    "wrong type": (NEURAL.format(key="g", value="four"), "layers[1].g", "valid integer", 7),
    "unknown key": (NEURAL.format(key="gg", value=2), "layers[1].gg", "unknown key 'gg'", 7),
    "restrict": (BASE + "  - {op: restrict}\n", "layers[1].op", "no reflections", 5),
    "plain conv": (BASE + "  - {op: conv, channels: 3}\n", "layers[1].op", "set group: C1", 5),
    "unknown op": (
        BASE + "  - {op: convolution, fields: 3}\n",
        "layers[1]",
        "allowed ops: " + ", ".join(LAYER_OPS),
        5,
    ),
    "residual body": (
        BASE
        + "  - op: residual\n    body:\n      - {op: pool}\n      - {op: conv1x1, fields: 0}\n",
        "layers[1].body[1].fields",
        "greater than or equal to 1",
        8,
    ),
    "head in body": (
        BASE + "  - op: residual\n    body:\n      - {op: head, classes: 3}\n",
        "layers[1].body[0]",
        "allowed ops: " + ", ".join(BODY_OPS),
        7,
    ),
    "head not last": (
        BASE + "  - {op: head, classes: 3}\n  - {op: pool}\n",
        "layers[2]",
        "last layer",
        6,
    ),
    "pool too big": (BASE + "  - {op: pool, size: 32}\n", "layers[1].size", "below 1x1", 5),
    "unknown top key": ("lyers: []\n" + BASE, "lyers", "allowed: name, description, extends", 1),
    "group": (BASE.replace("C4", "Z4"), "group", "C<N> or D<N>", 1),
    "missing field": (BASE + "  - {op: conv1x1}\n", "layers[1].fields", "missing", 5),
    "train key": (BASE + "train: {epoch: 3}\n", "train.epoch", "epochs", 5),
}


@pytest.mark.parametrize("case", list(CASES))
def test_invalid_spec_is_located(tmp_path: Path, case: str) -> None:
    text, path, words, line = CASES[case]
    err = spec_error(write(tmp_path, text, "broken.yaml"))
    assert err.path == path
    assert err.line == line
    assert err.file is not None and err.file.endswith("broken.yaml")
    message = str(err)
    assert message.startswith(f"{err.file}:{line}: {path}: ")
    assert words in message
    assert "\n" not in message


def test_union_tag_never_appears_in_the_path(tmp_path: Path) -> None:
    err = spec_error(write(tmp_path, NEURAL.format(key="g", value="x")))
    assert "neural_epdo" not in (err.path or "")


@pytest.mark.parametrize("key", ["group", "input", "layers"])
def test_missing_required_key(tmp_path: Path, key: str) -> None:
    full = {
        "group": "group: C4\n",
        "input": "input: {channels: 1, size: 8}\n",
        "layers": "layers: [{op: pool}]\n",
    }
    text = "".join(v for k, v in full.items() if k != key)
    err = spec_error(write(tmp_path, text, "partial.yaml"))
    assert err.path == key
    assert "partial.yaml" in str(err) and f"missing required key '{key}'" in str(err)


def test_top_level_must_be_a_mapping(tmp_path: Path) -> None:
    err = spec_error(write(tmp_path, "- group: C4\n", "list.yaml"))
    assert "list.yaml" in str(err) and "mapping" in str(err)
    assert "empty" in str(spec_error(write(tmp_path, "# nothing\n", "empty.yaml")))


def test_malformed_yaml_has_its_line(tmp_path: Path) -> None:
    path = write(tmp_path, "group: C4\ninput: {channels: 1, size: 8\nlayers: []\n", "bad.yaml")
    err = spec_error(path)
    assert err.line == 3
    assert str(err).startswith(f"{err.file}:3: malformed YAML")


def test_duplicate_key_is_an_error(tmp_path: Path) -> None:
    err = spec_error(write(tmp_path, BASE + "  - op: pool\n    size: 2\n    size: 4\n"))
    assert (err.path, err.line) == ("layers[1].size", 7)
    assert "duplicate key 'size'" in str(err)


def test_extends_cycle(tmp_path: Path) -> None:
    write(tmp_path, "extends: b.yaml\n", "a.yaml")
    write(tmp_path, "extends: a.yaml\n", "b.yaml")
    err = spec_error(tmp_path / "a.yaml")
    assert err.path == "extends" and "cycle" in str(err)
    assert "a.yaml" in str(err) and "b.yaml" in str(err)


def test_extends_missing_parent(tmp_path: Path) -> None:
    err = spec_error(write(tmp_path, "name: x\nextends: nowhere\n", "orphan.yaml"))
    assert (err.path, err.line) == ("extends", 2)
    assert "orphan.yaml:2: extends:" in str(err) and "nowhere" in str(err)


def test_error_in_parent_points_at_the_parent_file(tmp_path: Path) -> None:
    write(tmp_path, NEURAL.format(key="g", value=4), "parent.yaml")
    err = spec_error(write(tmp_path, "extends: parent.yaml\ndescription: child\n", "kid.yaml"))
    assert err.file is not None and err.file.endswith("parent.yaml")
    assert (err.path, err.line) == ("layers[1].g", 7)


def test_error_from_defaults_points_at_the_default(tmp_path: Path) -> None:
    text = """\
    group: C4
    input: {channels: 1, size: 16}
    defaults:
      g: 4
    layers:
      - {op: pdo_conv, fields: 6}
      - {op: neural_epdo, fields: 8}
    """
    err = spec_error(write(tmp_path, text))
    assert (err.path, err.line) == ("layers[1].g", 4)


def test_dict_errors_have_no_file() -> None:
    err = spec_error({"group": "C4", "input": {"channels": 1, "size": 8}, "layers": []})
    assert err.file is None and err.line is None
    assert str(err).startswith("layers: ")


def test_load_spec_accepts_a_spec() -> None:
    spec = load_spec("quickstart")
    assert load_spec(spec) is spec
    assert isinstance(spec, Spec)
