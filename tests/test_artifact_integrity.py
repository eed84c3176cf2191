"""What an artifact's checks guarantee against crafted files: zip artifacts that two readers
could read differently are refused by construction (Python's zipfile, epdo's checks, and
torch's miniz, the loader, must see the same entries at the same bytes, or nothing of the
file is loaded), and the metadata a user is told is covered by a digest."""

from __future__ import annotations

import io
import json
import pickle
import struct
import zipfile
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from cli_checks import cli, refused
from test_pt2 import CLASSES, TINY, MakeDir, edit_json, rewrite

from epdo.exporters import ServingError, load_classifier
from epdo.exporters.export import export_model
from epdo.exporters.loading import read_metadata
from epdo.zoo import build_model, load_spec


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("zip-layout")
    spec = load_spec(TINY)
    model = build_model(spec).eval()
    out = {}
    for name, suffix in (("pt2", ".pt2"), ("torchscript", ".ts"), ("onnx", ".onnx")):
        out[name] = folder / f"m{suffix}"
        export_model((model, spec), name, out[name], real_images=0, classes=CLASSES)
    np.save(folder / "good.npy", np.full((12, 12), 0.5, np.float32))
    out["input"] = folder / "good.npy"
    return out


def _without_end_records(data: bytes) -> bytes:
    """A torch archive up to its zip64 end record (its locator and end record cut off)."""
    locator = len(data) - 22 - 20
    assert data[locator:locator + 4] == b"PK\x06\x07"
    return data[:locator]


def test_the_prefixed_copy_attack_loads_nothing(artifacts: dict[str, Path],
                                                tmp_path: Path) -> None:
    """The attack of the second round: a patched copy of the entries (a weight that is a
    pickle making a folder, its config saying use_pickle, CRCs right), its central directory
    and zip64 end record, placed before the original archive. Python's zipfile reads the
    original behind the prefix (every offset shifted); torch would read the copy. epdo
    refuses the file in info and predict alike, and nothing of it ever runs."""
    marker = tmp_path / "marker"
    payload = pickle.dumps(MakeDir(marker))

    def pickled(config: dict) -> None:
        next(iter(config["config"].values()))["use_pickle"] = True

    patched = rewrite(artifacts["pt2"], tmp_path / "patched.pt2", redigest=True, edit={
        "data/weights/model_weights_config.json": edit_json(pickled),
        "data/weights/weight_0": lambda _: payload})
    original = artifacts["pt2"].read_bytes()
    copy = patched.read_bytes()
    prefix = copy[:copy.rindex(b"PK\x05\x06")]  # entries, central directory (no end record)
    crafted = tmp_path / "crafted.pt2"
    crafted.write_bytes(prefix + original)
    with zipfile.ZipFile(io.BytesIO(crafted.read_bytes())) as zf:  # Python's reader is fooled
        assert zf.read(zf.namelist()[0]) == zipfile.ZipFile(artifacts["pt2"]).read(
            zf.namelist()[0])
    for args in (("info", crafted), ("info", crafted, "--trust"),
                 ("predict", crafted, artifacts["input"], "--trust")):
        refused(cli(*args), 2, "crafted.pt2", "zip readers could disagree")
    with pytest.raises(ServingError, match="zip readers could disagree"):
        load_classifier(crafted, provider="cpu", trust=True)
    assert not marker.exists()


@pytest.mark.parametrize("kind", ["pt2", "torchscript"])
@pytest.mark.parametrize("case", ["junk-before", "junk-after", "comment", "shifted-end",
                                  "overlap"])
def test_layouts_readers_disagree_on_are_refused_by_info_and_predict_alike(
        artifacts: dict[str, Path], tmp_path: Path, kind: str, case: str) -> None:
    path = artifacts[kind]
    data = bytearray(path.read_bytes())
    end = len(data) - 22
    if case == "junk-before":
        data = bytearray(b"\0" * 4096) + data
    elif case == "junk-after":
        data += b"\0" * 64
    elif case == "comment":
        struct.pack_into("<H", data, end + 20, 4)
        data += b"note"
    elif case == "shifted-end":  # the zip64 end record moved, its locator left pointing
        locator = end - 20
        (record,) = struct.unpack_from("<Q", data, locator + 8)
        struct.pack_into("<Q", data, locator + 8, record - 8)
    else:  # the second entry's directory offset pointed at the first entry
        with zipfile.ZipFile(path) as zf:
            second = sorted(zf.infolist(), key=lambda i: i.header_offset)[1]
        at = data.find(b"PK\x01\x02")
        while at != -1:
            (name_len,) = struct.unpack_from("<H", data, at + 28)
            if data[at + 46:at + 46 + name_len].decode() == second.orig_filename:
                break
            at = data.find(b"PK\x01\x02", at + 4)
        offset_field = at + 42
        (offset,) = struct.unpack_from("<I", data, offset_field)
        if offset == 0xFFFFFFFF:
            pytest.skip("the offset is in a zip64 extra field")
        struct.pack_into("<I", data, offset_field, 0)
    bad = tmp_path / f"{case}{path.suffix}"
    bad.write_bytes(bytes(data))
    info = refused(cli("info", bad, "--trust"), 2, bad.name)
    predict = refused(cli("predict", bad, artifacts["input"], "--trust", "--provider", "cpu"),
                      2, bad.name)
    assert info == predict  # the same check, the same line
    with pytest.raises(Exception, match=bad.name):
        read_metadata(bad, trust=True)


def _reversed_classes(path: Path, dest: Path) -> Path:
    """A copy of an artifact with its class names reversed and nothing else changed (the
    digests as they were)."""
    if path.suffix == ".onnx":
        proto = onnx.load(str(path))
        for prop in proto.metadata_props:
            if prop.key == "epdo.classes":
                prop.value = json.dumps(json.loads(prop.value)[::-1])
        onnx.save(proto, str(dest))
        return dest
    with zipfile.ZipFile(path) as zin, zipfile.ZipFile(dest, "w", zipfile.ZIP_STORED) as zout:
        for info in zin.infolist():
            data = zin.read(info)
            if info.filename.endswith("/extra/epdo.json"):
                meta = json.loads(data)
                meta["epdo.classes"] = meta["epdo.classes"][::-1]
                data = json.dumps(meta).encode()
            zout.writestr(info, data)
    return dest


@pytest.mark.parametrize("kind", ["onnx", "torchscript", "pt2"])
def test_edited_metadata_is_detected(artifacts: dict[str, Path], tmp_path: Path,
                                     kind: str) -> None:
    """The second round's case: class names reversed, the model untouched. The metadata
    digest catches it in info and predict alike; the model digest alone did not."""
    path = artifacts[kind]
    ver = read_metadata(path)["epdo.verification"]
    assert len(ver["metadata_sha256"]) == 64
    edited = _reversed_classes(path, tmp_path / f"edited{path.suffix}")
    for args in (("info", edited), ("info", edited, "--trust"),
                 ("predict", edited, artifacts["input"], "--trust", "--provider", "cpu")):
        refused(cli(*args), 2, edited.name, "its metadata does not match the digest")


def test_info_says_what_the_digests_cover(artifacts: dict[str, Path]) -> None:
    fresh = " ".join(cli("info", artifacts["onnx"], env={"COLUMNS": "200"}).stdout.split())
    assert "matches the model and its metadata" in fresh
    legacy = Path(__file__).parent / "fixtures" / "legacy_model.onnx"
    old = " ".join(cli("info", legacy, env={"COLUMNS": "200"}).stdout.split())
    assert "matches the model; its metadata is not covered" in old


class Leak(torch.nn.Module):
    """A TorchScript model whose forward reads a file's bytes into its logits."""

    def __init__(self, secret: str) -> None:
        super().__init__()
        self.secret = secret

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        data = torch.from_file(self.secret, False, 3, dtype=torch.uint8)
        return data.float().unsqueeze(0).expand(x.shape[0], 3) + x.sum() * 0


class Overwrite(torch.nn.Module):
    """A TorchScript model whose forward overwrites a file (a shared mapping, filled)."""

    def __init__(self, victim: str) -> None:
        super().__init__()
        self.victim = victim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        written = torch.from_file(self.victim, True, 3, dtype=torch.uint8).fill_(0)
        return written.float().unsqueeze(0).expand(x.shape[0], 3) + x.sum() * 0


@pytest.mark.parametrize("kind", ["leak", "overwrite"])
def test_torchscript_that_touches_files_is_refused_without_trust(
        artifacts: dict[str, Path], tmp_path: Path, kind: str) -> None:
    """The second round's case: a scripted model saved with epdo's own writer (so its
    digests are right) whose graph reads or writes a file. Refused by info and predict
    until the user vouches for it; the file is never touched."""
    from epdo.exporters.artifact import build_metadata
    from epdo.exporters.formats.torchscript import save_torchscript

    target = tmp_path / "secret.bin"
    target.write_bytes(b"\x07\x08\x09")
    module = torch.jit.script(Leak(str(target)) if kind == "leak" else Overwrite(str(target)))
    meta = build_metadata(load_spec(TINY), CLASSES, {"format": "torchscript"})
    path = tmp_path / f"{kind}.ts"
    save_torchscript(module, path, meta)
    for args in (("info", path), ("predict", path, artifacts["input"], "--provider", "cpu")):
        refused(cli(*args), 2, path.name, "aten::from_file", "--trust")
    with pytest.raises(ServingError, match="aten::from_file"):
        load_classifier(path, provider="cpu")
    assert target.read_bytes() == b"\x07\x08\x09"  # neither read into logits nor overwritten
    trusted = cli("info", path, "--trust")
    assert trusted.exit_code == 0  # the user vouches for it: shown


def test_torchscript_with_setstate_is_refused_before_loading(artifacts: dict[str, Path],
                                                             tmp_path: Path) -> None:
    class Stateful(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.flatten(1)[:, :3]

        @torch.jit.export
        def __getstate__(self) -> int:
            return 1

        @torch.jit.export
        def __setstate__(self, state: int) -> None:
            self.training = False

    from epdo.exporters.artifact import build_metadata
    from epdo.exporters.formats.torchscript import save_torchscript

    path = tmp_path / "stateful.ts"
    save_torchscript(torch.jit.script(Stateful()), path,
                     build_metadata(load_spec(TINY), CLASSES, {"format": "torchscript"}))
    for trust in ((), ("--trust",)):
        refused(cli("info", path, *trust), 2, "stateful.ts", "__setstate__")
