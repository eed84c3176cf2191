"""Hostile specs (issue 11, classes 1, 5 and 7 for specs): ``extends`` reads only shipped
specs and files inside the naming spec's folder tree and never shows what it refused; alias
bombs, deep nesting, huge files and absurd sizes are refused in bounded time and memory,
with the model-size estimate before anything is built; crafted but parseable values
(control characters, ``true`` for a count, ``1e9`` for an integer, NaN) give one located
SpecError, never a traceback. Through the command line each is exit 2 and one line."""

from __future__ import annotations

import copy
import os
import random
import resource
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from typer.testing import CliRunner

from epdo.cli.main import app
from epdo.zoo import build_model, list_specs
from epdo.zoo.checkpoint import CHECKPOINT_FORMAT
from epdo.zoo.plan import plan_cost
from epdo.zoo.spec import SpecError, limits, load_spec

runner = CliRunner()

GOOD = """\
group: C4
input: {channels: 1, size: 16}
layers:
  - {op: pdo_conv, fields: 4}
  - {op: head, classes: 10}
"""
SECRET = "SECRET_TOKEN_42"


def write(folder: Path, text: str | bytes, name: str = "model.yaml") -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def refused(source: Any, seconds: float = 30.0) -> SpecError:
    """The SpecError ``load_spec(source)`` raises, within ``seconds``, as one line.

    A bomb that got through would plan, allocate or read for minutes; refused, each takes
    well under a second. The bound is wide because a shared CI machine can stall a process
    for seconds (a full CI run once took 10 s for a 0.06 s refusal)."""
    start = time.perf_counter()
    with pytest.raises(SpecError) as info:
        load_spec(source)
    assert time.perf_counter() - start < seconds
    text = str(info.value)
    assert "\n" not in text and "\x1b" not in text and "\x00" not in text
    return info.value


def cli_refuses(*args: str, naming: str) -> str:
    """``epdo <args>`` exits 2 with one ``error:`` line on stderr naming ``naming``."""
    result = runner.invoke(app, list(args))
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert naming in lines[0]
    return lines[0]


@pytest.fixture
def secret(tmp_path: Path) -> Path:
    """A YAML file outside the spec's folder, as a secret would be."""
    return write(tmp_path / "outside", f"{SECRET}: hunter2\n", "secret.yaml")


@pytest.fixture
def specs(tmp_path: Path) -> Path:
    folder = tmp_path / "specs"
    folder.mkdir()
    return folder


# --------------------------------------------------------------------------- class 1: extends


def _outside_values(specs: Path, secret: Path) -> dict[str, str]:
    (specs / "link.yaml").symlink_to(secret)
    (specs / "linked").symlink_to(secret.parent, target_is_directory=True)
    return {
        "absolute": str(secret),
        "relative ../": "../outside/secret.yaml",
        "symlinked file": "link.yaml",
        "file in a symlinked folder": "linked/secret.yaml",
        "system file": "/etc/passwd",
        "folder": str(secret.parent),
    }


def test_extends_outside_the_folder_is_refused_by_name_unread(specs: Path, secret: Path) -> None:
    for label, value in _outside_values(specs, secret).items():
        spec = write(specs, GOOD + f"extends: {value}\n", "child.yaml")
        err = refused(spec)
        assert (err.path, err.line) == ("extends", 6), label
        assert err.file is not None and err.file.endswith("child.yaml")
        assert f"refused {value!r}" in str(err) and "EPDO_EXTENDS_PATH" in str(err), label
        assert SECRET not in str(err) and "hunter2" not in str(err) and "root:" not in str(err)


def test_extends_inside_the_folder_tree_and_shipped_names_load(specs: Path) -> None:
    write(specs, GOOD.replace("fields: 4", "fields: 3"), "parts/base.yaml")
    (specs / "alias.yaml").symlink_to(specs / "parts" / "base.yaml")
    for value in ("parts/base.yaml", "alias", "alias.yaml", str(specs / "parts/base.yaml")):
        spec = load_spec(write(specs, f"extends: {value}\nname: kid\n", "kid.yaml"))
        assert spec.layers[0].fields == 3 and spec.name == "kid"
    shipped = load_spec(write(specs, "extends: quickstart\ntrain: {epochs: 1}\n", "q.yaml"))
    assert shipped.group == "C8" and shipped.train.epochs == 1


def test_extends_path_variable_allows_a_named_folder(
    specs: Path, secret: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(secret.parent, GOOD, "shared.yaml")
    spec = write(specs, "extends: ../outside/shared.yaml\n", "child.yaml")
    refused(spec)
    monkeypatch.setenv(limits.EXTENDS_PATH_VARIABLE, str(secret.parent))
    assert load_spec(spec).group == "C4"


def test_a_spec_given_as_data_extends_only_shipped_specs(
    tmp_path: Path, secret: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    write(tmp_path, GOOD, "here.yaml")
    for value in (str(secret), "here.yaml", "outside/secret.yaml", "/etc/passwd"):
        err = refused({"extends": value, "name": "x"})
        assert err.path == "extends" and "only a shipped spec" in str(err)
        assert SECRET not in str(err)
    assert load_spec({"extends": "quickstart", "name": "mine"}).group == "C8"


def test_checkpoint_whose_spec_extends_a_file_is_refused_by_export(
    tmp_path: Path, secret: Path
) -> None:
    spec = {**load_spec("quickstart").resolved(), "extends": str(secret)}
    ckpt = tmp_path / "ckpt.pt"
    torch.save({"format": CHECKPOINT_FORMAT, "spec": spec, "model": {}, "epoch": 0}, ckpt)
    out = tmp_path / "model.onnx"
    line = cli_refuses("export", str(ckpt), "-o", str(out), naming="ckpt.pt")
    assert "only a shipped spec" in line and SECRET not in line
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == [
        "ckpt.pt",
        "outside",
    ]


@pytest.mark.parametrize("command", ["info", "check", "train"])
def test_cli_refuses_an_outside_parent(
    command: str, specs: Path, secret: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(specs)
    spec = write(specs, GOOD + f"extends: {secret}\n", "child.yaml")
    before = spec.read_bytes()
    line = cli_refuses(command, str(spec), naming="child.yaml:6: extends: refused")
    assert SECRET not in line
    assert spec.read_bytes() == before and sorted(p.name for p in specs.iterdir()) == [
        "child.yaml"
    ]


def test_symlink_loops_and_impossible_names_are_one_line(
    specs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(specs)
    (specs / "loop.yaml").symlink_to("loop.yaml")
    err = refused(write(specs, "extends: loop.yaml\n", "kid.yaml"))
    assert err.path == "extends" and "symlink loop" in str(err)
    long = "a" * 5000
    err = refused(write(specs, f"extends: {long}\n", "kid.yaml"))
    assert err.path == "extends" and len(str(err)) < 1000
    assert "File name too long" in str(refused(long)) and len(str(refused(long))) < 200
    assert len(str(refused({"extends": long}))) < 1000
    cli_refuses("info", long, naming="File name too long")


def test_a_parent_that_is_not_utf8_or_not_yaml_is_not_shown(specs: Path) -> None:
    write(specs, f"{SECRET}: caf\xe9\n".encode("latin-1"), "latin1.yaml")
    write(specs, f"{SECRET}: [unclosed\n  x: {{\n", "broken.yaml")
    write(specs, f"x: *{SECRET}\n", "alias.yaml")
    write(specs, f"x: !{SECRET} 1\n", "tag.yaml")
    for parent, line in (("latin1", 1), ("broken", 2), ("alias", 1), ("tag", 1)):
        err = refused(write(specs, f"extends: {parent}.yaml\n", "child.yaml"))
        assert err.file is not None and err.file.endswith(f"{parent}.yaml") and err.line == line
        assert SECRET not in str(err) and "\\xe9" not in str(err) and "caf" not in str(err)


def test_deep_chains_and_cycles_are_one_line(specs: Path) -> None:
    depth = limits.MAX_EXTENDS_DEPTH
    for i in range(1500):
        write(specs, f"extends: c{i + 1}.yaml\n" if i < 1499 else GOOD, f"chain/c{i}.yaml")
    err = refused(specs / "chain" / "c0.yaml")
    assert err.path == "extends" and f"more than {depth} specs" in str(err)
    for i in range(depth):  # exactly the limit loads
        write(specs, f"extends: d{i + 1}.yaml\n" if i < depth - 1 else GOOD, f"ok/d{i}.yaml")
    assert load_spec(specs / "ok" / "d0.yaml").group == "C4"
    write(specs, "extends: b.yaml\n", "a.yaml")
    write(specs, "extends: a.yaml\n", "b.yaml")
    write(specs, "extends: self.yaml\n", "self.yaml")
    for name in ("a.yaml", "self.yaml"):
        err = refused(specs / name)
        assert err.path == "extends" and "cycle" in str(err)


# --------------------------------------------------------------------------- class 5: sizes


def _bomb(levels: int = 9, width: int = 9) -> str:
    """A billion-laughs spec: ``width ** levels`` values in a few hundred bytes, aimed at a
    field the schema validates (``hidden``)."""
    text = "group: C4\ninput: {channels: 1, size: 16}\n"
    text += "x0: &l0 [" + ", ".join(["1"] * width) + "]\n"
    for i in range(1, levels):
        text += f"x{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * width) + "]\n"
    return text + "layers:\n  - {op: pdo_conv, fields: 4}\n" + (
        f"  - {{op: head, classes: 10, hidden: *l{levels - 1}}}\n"
    )


def _merge_bomb(levels: int = 9) -> str:
    """The same with ``<<`` merge keys, which copy key-value pairs at every level."""
    text = "a0: &a0 {" + ", ".join(f"k{j}: {j}" for j in range(9)) + "}\n"
    for i in range(1, levels):
        text += f"a{i}: &a{i} {{<<: [" + ", ".join([f"*a{i - 1}"] * 9) + "]}\n"
    return GOOD + text


BOMBS = {
    "alias bomb": _bomb(),
    "merge-key bomb": _merge_bomb(),
    "deep nesting": "group: C4\nx: " + "[" * 20000 + "]" * 20000 + "\n",
    "recursive alias": "group: C4\nlayers: &l [{op: residual, body: *l}]\n",
    "large file": GOOD + "#" * (2 << 20) + "\n",
}


def test_bombs_are_refused_in_bounded_time_and_memory(tmp_path: Path) -> None:
    """Each bomb, loaded in a process limited to 768 MiB of address space (the library
    needs about 400), is one SpecError within seconds."""
    for name, text in BOMBS.items():
        write(tmp_path, text, f"{name.replace(' ', '_')}.yaml")
    script = textwrap.dedent(
        """\
        import sys, time
        from epdo.zoo.spec import SpecError, load_spec
        for path in sys.argv[1:]:
            start = time.perf_counter()
            try:
                load_spec(path)
                print("LOADED", path)
            except SpecError as exc:
                print("REFUSED", round(time.perf_counter() - start, 2), str(exc))
        """
    )

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (768 << 20, 768 << 20))

    files = sorted(str(p) for p in tmp_path.glob("*.yaml"))
    result = subprocess.run(
        [sys.executable, "-c", script, *files], capture_output=True, text=True, timeout=120,
        preexec_fn=limit, cwd=tmp_path,
    )
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr[-2000:]
    lines = result.stdout.splitlines()
    assert len(lines) == len(BOMBS) and all(line.startswith("REFUSED") for line in lines), lines
    assert all(float(line.split()[1]) < 5 for line in lines), lines
    messages = " | ".join(lines)
    assert "EPDO_MAX_SPEC_NODES" in messages and "deeper than 32" in messages
    assert "EPDO_MAX_SPEC_BYTES" in messages and "contains it" in messages


def test_alias_bomb_through_the_cli_under_a_memory_limit(tmp_path: Path) -> None:
    """``epdo check`` on the bomb, with torch imported, in 5 GiB of address space (a clean
    start needs about 4): exit 2 and one line."""
    bomb = write(tmp_path, _bomb(), "bomb.yaml")

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (5 << 30, 5 << 30))

    result = subprocess.run(
        [sys.executable, "-m", "epdo.cli", "check", str(bomb)], capture_output=True,
        text=True, timeout=120, preexec_fn=limit, cwd=tmp_path,
    )
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "bomb.yaml:" in lines[0] and "EPDO_MAX_SPEC_NODES" in lines[0]
    assert [p.name for p in tmp_path.iterdir()] == ["bomb.yaml"]


def test_normal_anchors_and_merge_keys_still_work(tmp_path: Path) -> None:
    text = """\
    group: C4
    input: {channels: 1, size: 16}
    layers:
      - &block {op: pdo_conv, fields: 4, pool: 2}
      - *block
      - {<<: *block, fields: 8, pool: null}
      - {op: head, classes: 10}
    """
    spec = load_spec(write(tmp_path, text))
    assert [(layer.fields, layer.pool) for layer in spec.layers[:3]] == [(4, 2), (4, 2), (8, None)]


HUGE = {
    "repeat: 100000000": ("fields: 4}", "fields: 4, repeat: 100000000}", "layers[0].repeat",
                          "EPDO_MAX_LAYERS"),
    "fields: 1000000000": ("fields: 4", "fields: 1000000000", "layers[0]", "EPDO_MAX_WEIGHTS"),
    "group: C100000000": ("C4", "C100000000", "group", "EPDO_MAX_GROUP_N"),
    "group: D<5000 digits>": ("C4", "D" + "9" * 5000, "group", "EPDO_MAX_GROUP_N"),
    "size: 1000000000": ("size: 16", "size: 1000000000", "layers[0]",
                         "EPDO_MAX_ACTIVATION_BYTES"),
    "classes: 1000000000": ("classes: 10", "classes: 1000000000", "layers[1]",
                            "EPDO_MAX_WEIGHTS"),
    "hidden: [1000000000]": ("classes: 10", "classes: 10, hidden: [1000000000]", "layers[1]",
                             "EPDO_MAX_WEIGHTS"),
    "kernel: 1000001": ("C4", "C1", None, None),
    "crop_padding: 1e9": ("classes: 10}", "classes: 10}\ntrain: {augment: {crop_padding: "
                          "1000000000}}", "train", "crop_padding"),
    "fields: 1e9": ("fields: 4", "fields: 1e9", "layers[0].fields", "valid integer"),
    "size: 1e9": ("size: 16", "size: 1e9", "input.size", "size must be"),
}


@pytest.mark.parametrize("case", list(HUGE))
def test_absurd_sizes_are_refused_before_building(case: str, tmp_path: Path) -> None:
    old, new, path, hint = HUGE[case]
    text = GOOD.replace(old, new)
    if case.startswith("kernel"):
        text = text.replace("op: pdo_conv, fields: 4", "op: conv, channels: 4, kernel: 1000001")
        path, hint = "layers[0]", "EPDO_MAX_WEIGHTS"
    err = refused(write(tmp_path, text))
    assert err.path == path and hint in str(err) and err.line is not None, str(err)
    if hint in ("EPDO_MAX_WEIGHTS", "EPDO_MAX_ACTIVATION_BYTES"):
        assert "B as float32" in str(err) or "B of values" in str(err)  # the estimate


def test_fifo_is_refused_without_waiting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    os.mkfifo(tmp_path / "fifo.yaml")
    cli_refuses("info", "fifo.yaml", naming="fifo.yaml")
    err = refused(write(tmp_path, "extends: fifo.yaml\n", "kid.yaml"))
    assert err.path == "extends" and "fifo.yaml" in str(err)


def test_every_shipped_spec_is_well_inside_the_limits() -> None:
    for name in list_specs():
        spec = load_spec(name)
        cost = plan_cost(spec.plan)
        assert cost.weights * 5 < limits.MAX_WEIGHTS, name
        assert cost.values * 4 * 50 < limits.MAX_ACTIVATION_BYTES, name
        assert len(spec.plan.layers) * 50 < limits.MAX_LAYERS, name
        assert spec.group_obj.N * 8 <= limits.MAX_GROUP_N, name


MIXED = {
    "name": "mixed", "group": "D4", "discretization": "fd",
    "input": {"channels": 3, "size": 15}, "defaults": {"type": "regular", "order": 2},
    "layers": [
        {"op": "pdo_conv", "fields": 2, "pool": 2},
        {"op": "neural_epdo", "fields": 4, "g": 2},
        {"op": "residual", "body": [{"op": "conv1x1", "fields": 3, "stride": 2,
                                     "type": ["regular", "quotient2"]}]},
        {"op": "restrict"},
        {"op": "blur_pool"},
        {"op": "head", "classes": 5, "hidden": [7], "group_pool": "none"},
    ],
}


@pytest.mark.parametrize("source", ["mnist_cnn", MIXED], ids=["mnist_cnn", "mixed"])
def test_the_weight_estimate_is_what_the_exported_model_holds(source: Any) -> None:
    spec = load_spec(source)
    exported = build_model(spec).export()
    held = sum(t.numel() for t in [*exported.parameters(), *exported.buffers()])
    assert abs(plan_cost(spec.plan).weights - held) <= 0.02 * held


def test_limits_are_raised_by_their_variables(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = write(tmp_path, GOOD.replace("fields: 4}", "fields: 4, repeat: 20}"))
    monkeypatch.setenv("EPDO_MAX_LAYERS", "10")
    assert "EPDO_MAX_LAYERS" in str(refused(spec))
    monkeypatch.setenv("EPDO_MAX_LAYERS", "21")
    assert len(load_spec(spec).plan.layers) == 21
    monkeypatch.setenv("EPDO_MAX_WEIGHTS", "1000")
    err = refused("quickstart")
    assert "41,438 weights" in str(err) and "limit of 1,000 weights" in str(err)
    monkeypatch.setenv("EPDO_MAX_WEIGHTS", "lots")
    assert "EPDO_MAX_WEIGHTS must be a whole number" in str(refused("quickstart"))
    monkeypatch.delenv("EPDO_MAX_WEIGHTS")
    monkeypatch.setenv("EPDO_MAX_GROUP_N", "4")
    assert "EPDO_MAX_GROUP_N" in str(refused("quickstart"))
    monkeypatch.setenv("EPDO_MAX_SPEC_BYTES", "100")
    assert "larger than 100 bytes" in str(refused(write(tmp_path, GOOD, "small.yaml")))


# --------------------------------------------------------------------------- class 7: values

CRAFTED = {
    # YAML text -> (key path or None, line, words in the message)
    "NUL": (GOOD + "description: a\x00b\n", None, 6, "U+0000"),
    "escape": (GOOD + "description: a\x1b[2Jb\n", None, 6, "U+001B"),
    "bell in a key": (GOOD + "\x07x: 1\n", None, 6, "U+0007"),
    "escaped escape": (GOOD + 'description: "a\\e[2Jb"\n', "description", 6, "U+001B"),
    "escape in a key": (GOOD.replace("fields: 4", 'fields: 4, "\\e[31mred": 1'),
                        "layers[0]['\\x1b[31mred']", 4, "control character"),
    "newline in a key": (GOOD.replace("fields: 4", 'fields: 4, "a\\nb": 1'),
                         "layers[0]['a\\nb']", 4, "control character"),
    "fields: true": (GOOD.replace("fields: 4", "fields: true"), "layers[0].fields", 4,
                     "valid integer"),
    "fields: '8'": (GOOD.replace("fields: 4", "fields: '8'"), "layers[0].fields", 4,
                    "valid integer"),
    "order: 2.0": (GOOD.replace("fields: 4", "fields: 4, order: 2.0"), "layers[0].order", 4,
                   "valid integer"),
    "bn: 1": (GOOD.replace("fields: 4", "fields: 4, bn: 1"), "layers[0].bn", 4,
              "valid boolean"),
    "size: [16, 16.0]": (GOOD.replace("size: 16", "size: [16, 16.0]"), "input.size[1]", 2,
                         "valid integer"),
    "size: [true, 16]": (GOOD.replace("size: 16", "size: [true, 16]"), "input.size[0]", 2,
                         "valid integer"),
    "lr: .inf": (GOOD + "train: {lr: .inf}\n", "train.lr", 6, "finite"),
    "std: .nan": (GOOD.replace("size: 16}", "size: 16, std: .nan}"), "input.std[0]", 2,
                  "finite"),
    "mean: .inf": (GOOD.replace("size: 16}", "size: 16, mean: .inf}"), "input.mean[0]", 2,
                   "finite"),
    "seed: 1e23": (GOOD + "train: {seed: 1.0e+23}\n", "train.seed", 6, "valid integer"),
    "5000 digits": (GOOD.replace("fields: 4", "fields: 1" + "0" * 5000), None, 4,
                    "cannot read this value"),
    "2001-02-30": (GOOD.replace("fields: 4", "fields: 2001-02-30"), None, 4,
                   "cannot read this value"),
    "complex key": (GOOD + "? [a, b]\n: c\n", None, 6, "a key must be"),
    "python tag": (GOOD + "x: !!python/object/apply:os.system ['echo pwned']\n", None, 6,
                   "malformed YAML"),
    "name ../": (GOOD + "name: ../../../tmp/evil\n", "name", 6, "one file name"),
    "name /abs": (GOOD + "name: /tmp/evil\n", "name", 6, "one file name"),
    "data_dir NUL": (GOOD + 'train: {data_dir: "a\\0b"}\n', "train.data_dir", 6, "U+0000"),
    "merge of a scalar": (GOOD + "train: {<<: 5}\n", "train", 6, "<< merges a mapping"),
    "type: 5": (GOOD.replace("fields: 4", "fields: 4, type: 5"), "layers[0].type", 4,
                "field type"),
    "op: [list]": (GOOD.replace("op: head", "op: [head]") + "defaults: {bn: false}\n",
                   "layers[1]", 5, "op"),
    "extends: 5": (GOOD + "extends: 5\n", "extends", 6, "shipped spec name"),
}


@pytest.mark.parametrize("case", list(CRAFTED))
def test_crafted_values_are_one_located_error(case: str, tmp_path: Path) -> None:
    text, path, line, words = CRAFTED[case]
    err = refused(write(tmp_path, text.encode("utf-8")))
    assert err.file is not None and err.file.endswith("model.yaml")
    assert (err.path, err.line) == (path, line) and words in str(err), str(err)


def test_non_utf8_and_utf16_name_the_line(tmp_path: Path) -> None:
    err = refused(write(tmp_path, (GOOD + "description: caf\xe9\n").encode("latin-1")))
    assert err.line == 6 and "not UTF-8" in str(err) and "xe9" not in str(err)
    err = refused(write(tmp_path, GOOD.encode("utf-16"), "wide.yaml"))
    assert err.line == 1 and "not UTF-8" in str(err)


@pytest.mark.parametrize("case", ["NUL", "escape in a key", "fields: true", "5000 digits"])
def test_crafted_values_through_the_cli(case: str, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    write(tmp_path, CRAFTED[case][0].encode("utf-8"))
    line = cli_refuses("info", "model.yaml", naming=f"model.yaml:{CRAFTED[case][2]}")
    assert all(ord(c) >= 32 for c in line)


def _dict_spec() -> dict[str, Any]:
    return load_spec("quickstart").resolved()


def test_crafted_dicts_are_one_error() -> None:
    cyclic = _dict_spec()
    cyclic["description"] = cyclic
    deep: dict[str, Any] = {}
    cursor = deep
    for _ in range(5000):
        cursor["x"] = {}
        cursor = cursor["x"]
    cases = {
        "cyclic": (cyclic, "description", "contains itself"),
        "deep": ({**_dict_spec(), "description": deep}, None, "deeper than 32"),
        "object": ({**_dict_spec(), "description": object()}, "description", "not a object"),
        "huge int": ({**_dict_spec(), "train": {"seed": 2**100}}, "train.seed", "101 bits"),
        "bool fields": (
            {**_dict_spec(), "layers": [{"op": "pdo_conv", "fields": True},
                                        {"op": "head", "classes": 10}]},
            "layers[0].fields", "valid integer"),
        "bytes group": ({**_dict_spec(), "group": b"C4"}, "group", "valid string"),
    }
    for name, (data, path, words) in cases.items():
        err = refused(data)
        assert words in str(err), (name, str(err))
        if path is not None:
            assert err.path == path, (name, err.path)
    assert load_spec({**_dict_spec(), "input": {"channels": 1, "size": (28, 28)}}).input.size == [
        28, 28
    ]


def test_mutated_specs_give_a_spec_or_one_spec_error() -> None:
    """A few hundred random mutations of shipped specs (types, values, keys): every outcome
    is a Spec or a SpecError (the Hypothesis fuzz test covers building too)."""
    rng = random.Random(11)
    pool: list[Any] = [0, -1, 1, 2, 3, 5, 7, 16, 2**31, 2**70, 0.5, 1e9, float("nan"),
                       float("inf"), True, False, None, "", "regular", "quotient3", "C4",
                       "D1", "x" * 200, "a\x00b", "[/]", ["regular", "trivial"], [], [1, 2],
                       {}, {"op": "pool"}, "head", "residual", "h9", "rbffd"]
    bases = [load_spec(n).resolved() for n in ("quickstart", "mnist_cnn",
                                               "cifar10_pdoeconv_p6m_resnet26")]

    def paths(node: Any, prefix: tuple = ()) -> list[tuple]:
        out = []
        items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(
            node, list) else []
        for key, value in items:
            out += [prefix + (key,), *paths(value, prefix + (key,))]
        return out

    outcomes = {"spec": 0, "error": 0}
    for _ in range(400):
        data = copy.deepcopy(rng.choice(bases))
        for _ in range(rng.randint(1, 3)):
            where = rng.choice(paths(data))
            parent = data
            for key in where[:-1]:
                parent = parent[key]
            if rng.random() < 0.2 and isinstance(parent, dict):
                del parent[where[-1]]
            else:
                parent[where[-1]] = copy.deepcopy(rng.choice(pool))
        try:
            load_spec(data)
            outcomes["spec"] += 1
        except SpecError as exc:
            assert "\n" not in str(exc)
            outcomes["error"] += 1
    assert outcomes["spec"] > 10 and outcomes["error"] > 100, outcomes


def test_resolved_spec_survives_json_with_text_epochs() -> None:
    spec = load_spec("cifar10_pdoeconv_p8_resnet44")
    data = spec.resolved()
    data["train"]["lr_milestones"] = {str(k): v for k, v in data["train"]["lr_milestones"].items()}
    given = copy.deepcopy(data)
    assert load_spec(data) == spec
    assert data == given  # loading does not change the dict it is given
