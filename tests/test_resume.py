"""Exact resume: a run stopped after epoch 1, or by Ctrl-C within epoch 2, and resumed ends
with the same weights as the run that went straight through, bit for bit.

The spec draws from every random source training has: the shuffle generator, the
augmentation generator (all five augmentations: resized crop, rotation, flip, vertical flip,
padding crop) and the global torch generator (``Dropout2d`` after a Neural ePDO layer, a
``dropout`` op and the head's ``Dropout``). numpy's and Python's global generators are set to
different states before every part of every run: training does not draw from them, which is
why checkpoints no longer save them (see :mod:`epdo.zoo.training.resume_state`).
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch
from test_train import DATA, TINY, state_equal

from epdo.zoo.checkpoint import LAST, read_checkpoint
from epdo.zoo.training import Engine, TrainingInterrupted, train
from epdo.zoo.training.resume_state import ResumeState

SPEC = {
    **TINY,
    "name": "tiny_random",
    "layers": [
        {"op": "pdo_conv", "fields": 2, "order": 2},
        {"op": "neural_epdo", "fields": 2, "g": 2, "order": 2, "dropout": 0.3},
        {"op": "dropout", "p": 0.2},
        {"op": "head", "classes": 3, "hidden": [6], "dropout": 0.2},
    ],
    "train": {**TINY["train"], "augment": {
        "rotate": True, "flip": True, "vflip": True, "crop_padding": 1,
        "resized_crop": {"scale": [0.5, 1.0]}}},
}
STEPS = 5  # 80 training images in batches of 16


def scramble(seed: int) -> None:
    """Put every global generator in a state of its own (``seed``)."""
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)


@pytest.fixture(scope="module")
def straight(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The last checkpoint of 2 epochs in one go."""
    out = tmp_path_factory.mktemp("straight")
    scramble(1)
    train(SPEC, out=out, data=DATA)
    return torch.load(out / LAST, weights_only=True)


def same_run(a: dict, b: dict) -> bool:
    """Equal weights (every state_dict tensor) and equal optimizer moments."""
    moments = [(a["optimizer"]["state"][k][m], b["optimizer"]["state"][k][m])
               for k in a["optimizer"]["state"] for m in ("exp_avg", "exp_avg_sq")]
    return state_equal(a["model"], b["model"]) and all(torch.equal(x, y) for x, y in moments)


def interrupt_at(monkeypatch: pytest.MonkeyPatch, call: int) -> None:
    """Ctrl-C at the ``call``-th training step of the run (counting from 1)."""
    real_step, calls = Engine.step, {"n": 0}

    def step(self, x, y):
        calls["n"] += 1
        if calls["n"] == call:
            raise KeyboardInterrupt
        return real_step(self, x, y)

    monkeypatch.setattr(Engine, "step", step)


def stopped_in_epoch_two(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A run interrupted after 2 steps of epoch 2; its checkpoint-last.pt."""
    interrupt_at(monkeypatch, STEPS + 3)
    scramble(2)
    with pytest.raises(TrainingInterrupted) as info:
        train(SPEC, out=tmp_path, data=DATA)
    assert (info.value.epoch, info.value.step) == (1, 2)
    monkeypatch.undo()
    return tmp_path / LAST


def test_the_spec_draws_from_every_random_source() -> None:
    """The test's premise: dropout in training mode, and every augmentation switched on."""
    from epdo.zoo import build_model, load_spec

    spec = load_spec(SPEC)
    augment = spec.train.augment
    assert augment.rotate and augment.flip and augment.vflip and augment.crop_padding
    assert augment.resized_crop is not None
    kinds = {type(m) for m in build_model(spec).modules()}
    assert {torch.nn.Dropout, torch.nn.Dropout2d} <= kinds


def test_stopped_after_epoch_one_and_resumed_gives_the_same_weights(straight, tmp_path):
    scramble(3)
    train(SPEC, out=tmp_path, data=DATA, epochs=1)
    scramble(4)
    train(resume=tmp_path, data=DATA, epochs=2)
    assert same_run(straight, torch.load(tmp_path / LAST, weights_only=True))


def test_ctrl_c_within_an_epoch_resumes_to_the_same_weights(straight, tmp_path, monkeypatch):
    saved = read_checkpoint(stopped_in_epoch_two(tmp_path, monkeypatch))
    state = ResumeState.from_checkpoint(saved)
    assert state.step == 2 and state.interrupted and state.rng is not None
    expected = {"torch", "cuda"} if torch.cuda.is_available() else {"torch"}
    assert set(saved["rng"]) == expected  # no numpy or Python state: nothing draws from them
    scramble(5)
    train(resume=tmp_path, data=DATA)
    assert same_run(straight, torch.load(tmp_path / LAST, weights_only=True))


def test_the_saved_torch_state_is_what_makes_it_exact(straight, tmp_path, monkeypatch):
    """Without its random state the resumed epoch draws other dropout masks (from a seed)
    and ends elsewhere: the restored generator is the one dropout draws from."""
    last = stopped_in_epoch_two(tmp_path, monkeypatch)
    checkpoint = torch.load(last, weights_only=True)
    checkpoint["rng"] = None
    torch.save(checkpoint, last)
    train(resume=tmp_path, data=DATA)
    assert not state_equal(straight["model"], torch.load(last, weights_only=True)["model"])


def test_a_checkpoint_with_the_old_numpy_and_python_states_resumes_exactly(
    straight, tmp_path, monkeypatch
):
    """Checkpoints of the previous version also saved numpy's and Python's generators
    (numpy's key array as an int64 tensor, Python's state as nested lists); they are read,
    ignored, and the run continues exactly."""
    last = stopped_in_epoch_two(tmp_path, monkeypatch)
    checkpoint = torch.load(last, weights_only=True)
    name, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss = random.getstate()
    checkpoint["rng"]["numpy"] = [name, torch.from_numpy(keys.astype(np.int64)), pos,
                                  has_gauss, cached]
    checkpoint["rng"]["python"] = [version, list(internal), gauss]
    torch.save(checkpoint, last)
    train(resume=tmp_path, data=DATA)
    assert same_run(straight, torch.load(last, weights_only=True))


def test_the_resume_state_is_written_and_read_back_as_it_was(tmp_path) -> None:
    """One schema: what :meth:`ResumeState.payload` writes, :meth:`from_checkpoint` reads."""
    from epdo.zoo.training.resume_state import BestEpoch, RandomState

    state = ResumeState(best=BestEpoch(2, 0.5, 1.25), step=3, partial=(4.0, 2.0, 8.0),
                        interrupted=True, scaler={"scale": 1024.0, "_growth_tracker": 7},
                        wall_seconds=9.5, world_size=2, classes=("a", "b"),
                        rng=RandomState.capture())
    loaded = ResumeState.from_checkpoint({"path": "x.pt", "epoch": 2, **state.payload()})
    assert loaded.rng is not None and torch.equal(loaded.rng.cpu, state.rng.cpu)
    assert {**vars(loaded), "rng": None} == {**vars(state), "rng": None, "epoch": 2,
                                             "path": "x.pt"}
