"""The format registry: every format declares and does what export, serving, bench and the
CLI need; nothing outside ``exporters/formats/`` branches on a format's name; an
AOTInductor package "runs here" exactly when torch's own ISA rule says so; export verifies
the bytes it writes through the serving path."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from epdo.exporters import export as export_mod
from epdo.exporters import runtime
from epdo.exporters.artifact import ArtifactError, Contents
from epdo.exporters.export import export_model
from epdo.exporters.formats import FORMATS, ArtifactFormat, all_formats, format_named
from epdo.exporters.formats.aoti import cpu_isa_flags, isa_runs_here
from epdo.zoo import build_model, load_spec

ROOT = Path(__file__).resolve().parents[1]
TINY = {
    "name": "formats_tiny",
    "group": "C4",
    "discretization": "fd",
    "input": {"channels": 1, "size": 9},
    "layers": [{"op": "pdo_conv", "fields": 2, "order": 2}, {"op": "head", "classes": 3}],
}


def test_every_format_declares_what_the_loops_need() -> None:
    names = [f.name for f in all_formats()]
    assert tuple(names) == FORMATS and len(set(names)) == len(names)
    suffixes = [s for f in all_formats() for s in f.suffixes]
    assert len(set(suffixes)) == len(suffixes)  # one format per suffix
    for fmt in all_formats():
        assert isinstance(fmt, ArtifactFormat) and format_named(fmt.name) is fmt
        assert fmt.suffix.startswith(".") and fmt.title and fmt.summary.startswith(fmt.name)
        assert fmt.atol > 0 and fmt.bench_key and fmt.family
        assert isinstance(fmt.native_code, bool)
    assert [f.name for f in all_formats() if f.native_code] == ["aoti"]
    with pytest.raises(ArtifactError, match="unknown format 'tflite'; use onnx, "):
        format_named("tflite")


def _source_files() -> list[Path]:
    folders = ("exporters", "cli")
    return [p for folder in folders for p in (ROOT / folder).rglob("*.py")
            if "formats" not in p.relative_to(ROOT).parts]


def test_nothing_outside_the_formats_package_branches_on_a_format_name() -> None:
    names = set(FORMATS)
    found = []
    for path in _source_files():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Compare):
                for side in (node.left, *node.comparators):
                    values = side.elts if isinstance(side, (ast.Tuple, ast.List, ast.Set)) \
                        else [side]
                    for value in values:
                        if isinstance(value, ast.Constant) and value.value in names:
                            found.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not found, found


def test_modules_stay_small() -> None:
    for folder in ("zoo", "cli", "exporters"):
        for path in (ROOT / folder).rglob("*.py"):
            lines = len(path.read_text(encoding="utf-8").splitlines())
            assert lines <= 500, (str(path.relative_to(ROOT)), lines)


# --------------------------------------------------------------------------- runs here


def _recordable() -> list[str]:
    """Every ISA string this torch can record in a package (``AOTI_CPU_ISA``): inductor's
    ISAs upper-cased as it writes them, and the one of scalar code."""
    from torch._inductor import cpu_vec_isa as vec

    return sorted({str(isa).upper() for isa in vec.supported_vec_isa_list}
                  | {str(vec.invalid_vec_isa).upper(), "DEFAULT"})


CPUS = {
    "avx2 only": ["avx2"],
    "avx512": ["avx2", "avx512"],
    "avx512 vnni": ["avx2", "avx512", "avx512_vnni"],
    "amx": ["avx2", "avx512", "avx512_vnni", "amx_tile"],
    "no vector unit": [],
}


@pytest.mark.parametrize("cpu", sorted(CPUS))
def test_a_package_runs_here_as_torch_decides(cpu: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """For each kind of x86 CPU, a package runs exactly when every flag of its ISA is one
    torch's checker reports; the ISA torch would compile for on that CPU always runs."""
    from torch._inductor import cpu_vec_isa as vec

    monkeypatch.setattr("platform.machine", lambda: "x86_64")
    monkeypatch.setattr(vec, "x86_isa_checker", lambda: list(CPUS[cpu]))
    offered = set(CPUS[cpu])
    assert cpu_isa_flags() == offered
    for recorded in _recordable():
        flags = set(recorded.lower().split())
        scalar = recorded in (str(vec.invalid_vec_isa).upper(), "DEFAULT")
        assert isa_runs_here(recorded) == (scalar or flags <= offered), (cpu, recorded)
    # what inductor picks on this CPU (its own rule, without the compiler probe) runs here
    picked = [isa for isa in vec.supported_vec_isa_list
              if all(f in offered for f in str(isa).split())]
    for isa in picked:
        assert isa_runs_here(str(isa).upper())


def _package(notes: dict[str, str]) -> Contents:
    meta = {"epdo.verification": {"torch_version": torch.__version__}}
    return Contents(metadata=meta, digest=None, notes={"package_notes": [notes]})


def test_packages_for_another_machine_are_refused() -> None:
    import platform
    import sys

    aoti = format_named("aoti")
    here = {"AOTI_PLATFORM": sys.platform, "AOTI_MACHINE": platform.machine(),
            "AOTI_CPU_ISA": str(__import__("torch._inductor.cpu_vec_isa",
                                           fromlist=["x"]).invalid_vec_isa).upper()}
    aoti.check_fits(_package(here), "p.aoti.pt2")  # scalar code for this machine: fits
    other = "aarch64" if platform.machine() != "aarch64" else "x86_64"
    with pytest.raises(ArtifactError, match=f"compiled for '{other}', this machine is"):
        aoti.check_fits(_package({**here, "AOTI_MACHINE": other, "AOTI_CPU_ISA": "ASIMD"}),
                        "p.aoti.pt2")
    with pytest.raises(ArtifactError, match="compiled for CPUs with MADE_UP_ISA"):
        aoti.check_fits(_package({**here, "AOTI_CPU_ISA": "MADE_UP_ISA"}), "p.aoti.pt2")
    with pytest.raises(ArtifactError, match="CPU only"):
        aoti.check_fits(_package({**here, "AOTI_DEVICE_KEY": "cuda"}), "p.aoti.pt2")


# --------------------------------------------------------------------------- export


@pytest.fixture(scope="module")
def tiny() -> tuple[Any, Any]:
    spec = load_spec(TINY)
    torch.manual_seed(0)
    return build_model(spec).eval(), spec


@pytest.mark.parametrize("name", ["onnx", "torchscript", "pt2"])
def test_export_verifies_through_the_serving_load(name: str, tiny: tuple[Any, Any],
                                                  tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Verification runs the very bytes written, loaded by ``load_classifier`` (the
    serving path), and the file left at the target is those bytes plus the figures."""
    seen: list[tuple[Path, bytes]] = []
    real = runtime.load_classifier

    def spy(path: Any, *args: Any, **kwargs: Any) -> Any:
        seen.append((Path(path), Path(path).read_bytes()))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(runtime, "load_classifier", spy)
    model, spec = tiny
    fmt = format_named(name)
    target = tmp_path / f"m{fmt.suffix}"
    report = export_model((model, spec), name, target, real_images=0, classes=list("abc"))
    assert report.passed and report.atol == fmt.atol
    assert len(seen) == 1 and seen[0][0].name.endswith(fmt.suffix)
    assert seen[0][0] != target and not seen[0][0].exists()  # a temporary beside it
    served = runtime.load_classifier(target, provider="cpu")
    assert served.verified and served.classes == list("abc")
    x = np.random.default_rng(0).random((5, 1, 9, 9), dtype=np.float32)
    with torch.no_grad():
        want = model(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(served.predict(x), want, atol=1e-4, rtol=1e-4)


def test_the_export_runner_is_the_serving_classifier(tiny: tuple[Any, Any],
                                                     tmp_path: Path) -> None:
    model, spec = tiny
    target = tmp_path / "m.onnx"
    export_model((model, spec), "onnx", target, real_images=0, classes=list("abc"))
    run = export_mod._runner(target, format_named("onnx"))
    x = torch.rand(2, 1, 9, 9)
    with torch.no_grad():
        torch.testing.assert_close(run(x), model(x), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("key", ["epdo.classes", "epdo.input_mean", "epdo.preprocess",
                                 "epdo.verification", "epdo.spec"])
def test_a_metadata_key_set_to_null_is_refused(key: str) -> None:
    """A key may be absent (a trusted artifact), but a present key is never null."""
    from epdo.exporters.artifact import validate_metadata

    with pytest.raises(ArtifactError, match=f"metadata {key} must be .*, got None"):
        validate_metadata({key: None}, "m.onnx", complete=False)
    with pytest.raises(ArtifactError, match="epdo.preprocess.scale must be"):
        validate_metadata({"epdo.preprocess": {"scale": None}}, "m.onnx", complete=False)
    with pytest.raises(ArtifactError, match="epdo.verification.checks must be"):
        validate_metadata({"epdo.verification": {"checks": [{"batch": 1.5}]}}, "m.onnx",
                          complete=False)
    assert validate_metadata({"epdo.verification": {"opset": None}}, "m", complete=False)


def test_the_metadata_digest_is_that_of_the_decoded_metadata() -> None:
    """Written from Python values, checked on what a reader decodes from JSON: tuples and
    non-string keys must not change it, any edited value must."""
    import json

    from epdo.exporters.artifact import metadata_digest

    meta = {"epdo.spec": {"widths": (16, 24), "by_epoch": {2: 1e-3, 10: 5e-4}},
            "epdo.classes": ["a", "b"], "epdo.verification": {"max_abs": 1e-7}}
    decoded = json.loads(json.dumps(meta))
    assert metadata_digest(meta) == metadata_digest(decoded)
    assert metadata_digest({**decoded, "epdo.classes": ["b", "a"]}) != metadata_digest(meta)
    with_digests = {**decoded, "epdo.verification": {"max_abs": 1e-7, "graph_sha256": "0" * 64}}
    assert metadata_digest(with_digests) == metadata_digest(meta)  # its digests left out


def test_every_export_writes_a_model_card(tiny: tuple[Any, Any], tmp_path: Path) -> None:
    import yaml

    model, spec = tiny
    target = tmp_path / "m.onnx"
    report = export_model((model, spec), "onnx", target, real_images=0, classes=["a`b", "c", "d"])
    card = (tmp_path / "m.onnx.md").read_text()
    assert report.card == str(tmp_path / "m.onnx.md")
    front = yaml.safe_load(card.split("---\n")[1])
    assert front["library_name"] == "epdo" and front["pipeline_tag"] == "image-classification"
    assert {"rotation-equivariant", "pdo-econv", "C4", "onnx"} <= set(front["tags"])
    assert front["metrics"] == ["accuracy"] and front["datasets"]
    for section in ("## Model", "## Data and classes", "## Accuracy",
                    "## Agreement with PyTorch and equivariance", "## Speed",
                    "## Preprocessing", "## Serving"):
        assert section in card
    assert "90 degree rotation" in card and "images/s" in card
    assert "```text\na`b\nc\nd\n```" in card  # class names are data: in a code block
