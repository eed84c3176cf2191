"""The structure the rest relies on: what the previous version wrote still loads, every
module imports on its own (no import cycles), every op is defined once and complete."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import epdo
from epdo.exporters.runtime import load_classifier
from epdo.zoo.checkpoint import load_model
from epdo.zoo.ops import LAYER_OPS, OPS
from epdo.zoo.spec import load_spec

FIXTURES = Path(__file__).parent / "fixtures"
LEGACY = json.loads((FIXTURES / "legacy_expected.json").read_text())


def test_legacy_checkpoint_gives_the_same_logits() -> None:
    """A checkpoint written before the model normalised its own input (epdo 6a41a93): its
    logits on raw images equal what that version computed on normalised ones."""
    model, spec = load_model(FIXTURES / "legacy_checkpoint.pt")
    assert spec.name == "legacy_tiny" and spec.input.mean == [0.2]
    with torch.no_grad():
        logits = model(torch.tensor(LEGACY["images"]))
    torch.testing.assert_close(logits, torch.tensor(LEGACY["logits"]), atol=1e-5, rtol=1e-5)


def test_legacy_onnx_artifact_still_predicts() -> None:
    classifier = load_classifier(FIXTURES / "legacy_model.onnx", provider="cpu")
    logits = classifier.predict(np.asarray(LEGACY["images"], np.float32))
    np.testing.assert_allclose(logits, np.asarray(LEGACY["logits"]), atol=1e-4, rtol=1e-4)
    assert classifier.classes == [str(i) for i in range(10)]


@pytest.mark.parametrize("name", ["legacy_model.ts", "legacy_model.pt2",
                                  "legacy_model.aoti.pt2"])
def test_artifacts_of_the_previous_exporters_still_predict(name: str) -> None:
    """TorchScript, .pt2 and AOTInductor artifacts of the legacy checkpoint written by the
    exporters before the format registry (epdo ebeb066; the package compiled for AVX2)
    read, verify and predict the legacy logits."""
    from epdo.exporters.artifact import ArtifactError
    from epdo.exporters.formats import format_for
    from epdo.exporters.loading import read_metadata

    path = FIXTURES / name
    native = format_for(path).native_code
    try:
        meta = read_metadata(path)
    except ArtifactError as exc:  # a package runs only on its kind of CPU and torch
        if native and ("compiled for CPUs" in str(exc) or "compiled against" in str(exc)):
            pytest.skip(str(exc))
        raise
    assert meta["epdo.spec_name"] == "legacy_tiny"
    assert meta["epdo.verification"]["format"] == format_for(path).name
    classifier = load_classifier(path, provider="cpu", trust=native)
    assert classifier.verified and classifier.classes == meta["epdo.classes"]
    assert len(classifier.classes) == 10
    logits = classifier.predict(np.asarray(LEGACY["images"], np.float32))
    np.testing.assert_allclose(logits, np.asarray(LEGACY["logits"]), atol=1e-4, rtol=1e-4)


def _modules() -> list[str]:
    root = Path(epdo.__file__).resolve().parent.parent
    names = []
    for package, folder in (("epdo.zoo", "zoo"), ("epdo.cli", "cli"),
                            ("epdo.exporters", "exporters")):
        for path in sorted((root / folder).rglob("*.py")):
            parts = path.relative_to(root / folder).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            if parts and parts[-1] == "__main__":
                continue
            names.append(".".join((package, *parts)))
    return names


def test_every_module_imports_on_its_own() -> None:
    """Each module imported first, in a fresh set of epdo modules: an import cycle fails
    for the module that enters it first."""
    names = _modules()
    assert "epdo.zoo.ops.pdo_conv" in names and "epdo.zoo.spec.loader" in names
    script = (
        "import importlib, sys\n"
        "import torch, pydantic, yaml, numpy\n"
        "bad = []\n"
        f"for name in {names!r}:\n"
        "    for key in [k for k in sys.modules if k == 'epdo' or k.startswith('epdo.')]:\n"
        "        del sys.modules[key]\n"
        "    try:\n"
        "        importlib.import_module(name)\n"
        "    except Exception as exc:\n"
        "        bad.append(f'{name}: {type(exc).__name__}: {exc}')\n"
        "print('\\n'.join(bad))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ""


def test_loading_a_spec_does_not_import_torch() -> None:
    script = ("import sys\nfrom epdo.zoo.spec import load_spec\n"
              "load_spec('mnist_regular_gauss')\nprint('torch' in sys.modules)\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


def test_every_op_is_registered_once_and_complete() -> None:
    assert set(LAYER_OPS) == set(OPS)
    for name, op in OPS.items():
        assert op.name == name and op.schema.model_fields["op"].annotation.__args__ == (name,)
        assert op.summary, f"{name}: its schema needs a docstring"
        assert callable(op.plan) and callable(op.build)


def test_the_plan_is_computed_once_per_spec(monkeypatch: pytest.MonkeyPatch) -> None:
    from epdo.zoo import builder, plan
    from epdo.zoo.training.config import with_overrides

    spec = load_spec("quickstart")
    calls = []
    original = plan.plan_model
    monkeypatch.setattr(plan, "plan_model", lambda s: calls.append(s) or original(s))
    model = builder.build_model(with_overrides(spec, epochs=2))
    assert calls == [] and model.plan is spec.plan
