"""Training building blocks: batched augmentation, milestones, sharding, seeding, files."""

from __future__ import annotations

import json

import pytest
import torch

from epdo.zoo.layers.normalize import Normalize
from epdo.zoo.spec import AugmentSpec
from epdo.zoo.training.augment import AugmentDraws, crop_batch, flip_batch
from epdo.zoo.training.config import with_overrides
from epdo.zoo.training.rundir import RunDir
from epdo.zoo.training.sampling import eval_batches, train_batches
from epdo.zoo.training.schedule import lr_at
from epdo.zoo.training.seeding import derive_seed, epoch_generator
from epdo.zoo.transforms import rotate_image, rotate_images


def images(b: int = 4, c: int = 2, h: int = 12, w: int = 12) -> torch.Tensor:
    return torch.rand(b, c, h, w, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("shape", [(12, 12), (10, 14)])
def test_rotate_images_matches_rotate_image(shape: tuple[int, int]) -> None:
    x = images(3, 2, *shape)
    same = rotate_images(x, torch.full((3,), 30.0))
    assert torch.allclose(same, rotate_image(x, 30.0), atol=1e-5)


def test_rotate_images_uses_one_angle_per_image() -> None:
    x = images(4)
    angles = torch.tensor([30.0, 90.0, 200.0, 0.0])
    out = rotate_images(x, angles)
    for i, a in enumerate(angles.tolist()):
        assert torch.allclose(out[i : i + 1], rotate_image(x[i : i + 1], a), atol=1e-5), a


def test_flip_and_crop() -> None:
    x = images(2)
    flipped = flip_batch(x, torch.tensor([True, False]))
    assert torch.equal(flipped[0], x[0].flip(-1)) and torch.equal(flipped[1], x[1])
    p = 3
    same = crop_batch(x, p, torch.tensor([[p, p], [p, p]]))
    assert torch.equal(same, x)
    shifted = crop_batch(x, p, torch.tensor([[0, 0], [2 * p, p]]))
    assert torch.equal(shifted[0, :, p:, p:], x[0, :, :-p, :-p])  # moved down and right
    assert shifted[0, :, :p].abs().sum() == 0 and shifted[0, :, :, :p].abs().sum() == 0
    assert torch.equal(shifted[1, :, :-p], x[1, :, p:])  # moved up


def test_augment_draws_are_seeded_and_per_image() -> None:
    spec = AugmentSpec(rotate=True, flip=True, crop_padding=2)
    a = AugmentDraws.draw(spec, 50, epoch_generator(7, 3, "augment"))
    b = AugmentDraws.draw(spec, 50, epoch_generator(7, 3, "augment"))
    c = AugmentDraws.draw(spec, 50, epoch_generator(7, 4, "augment"))
    assert torch.equal(a.angles, b.angles) and not torch.equal(a.angles, c.angles)
    assert 0.0 <= a.angles.min() and a.angles.max() < 360.0
    assert a.offsets.min() >= 0 and a.offsets.max() <= 4 and a.flips.dtype == torch.bool
    # looked up by image index: the same image gets the same transform in any batch
    x = images(50, 1)
    index = torch.tensor([5, 17])
    assert torch.equal(a.apply(x[index], index)[1], a.apply(x[[17]], torch.tensor([17]))[0])
    assert not AugmentDraws.draw(AugmentSpec(), 5, epoch_generator(0, 0, "augment")).active


def test_normalize_is_per_channel() -> None:
    x = images(2, 3)
    norm = Normalize([0.5, 0.0, 1.0], [0.5, 2.0, 1.0])
    out = norm(x)
    assert torch.allclose(out[:, 0], (x[:, 0] - 0.5) / 0.5)
    assert torch.allclose(out[:, 1], x[:, 1] / 2.0)
    assert torch.equal(Normalize([0.0], [1.0])(x), x)
    assert norm.state_dict() == {}  # the spec holds the statistics, not the checkpoint


def test_lr_milestones_take_effect_at_their_epoch() -> None:
    milestones = {60: 2e-4, 120: 1e-4, 150: 5e-5}
    lrs = {e: lr_at(e, 2e-3, milestones) for e in (0, 59, 60, 119, 120, 149, 150, 199)}
    assert lrs == {0: 2e-3, 59: 2e-3, 60: 2e-4, 119: 2e-4, 120: 1e-4, 149: 1e-4, 150: 5e-5,
                   199: 5e-5}
    assert lr_at(0, 1.0, {0: 0.5}) == 0.5 and lr_at(3, 1.0, {}) == 1.0


def test_train_batches_shard_one_permutation() -> None:
    n, world = 23, 2
    shards = [train_batches(n, 5, epoch_generator(1, 0, "shuffle"), r, world) for r in range(2)]
    assert len(shards[0]) == len(shards[1])  # same number of steps on every rank
    seen = torch.cat([torch.cat(s) for s in shards])
    assert set(seen.tolist()) == set(range(n)) and len(seen) == 24  # padded by one
    single = torch.cat(train_batches(n, 5, epoch_generator(1, 0, "shuffle")))
    assert torch.equal(single, torch.randperm(n, generator=epoch_generator(1, 0, "shuffle")))
    assert [len(b) for b in train_batches(11, 5, epoch_generator(0, 0, "shuffle"))] == [5, 5]
    evals = [torch.cat(eval_batches(7, 2, r, 2)) for r in range(2)]
    assert sorted(torch.cat(evals).tolist()) == list(range(7))


def test_derived_seeds_differ_by_epoch_and_stream() -> None:
    seeds = {derive_seed(0, e, s) for e in range(3) for s in ("shuffle", "augment", "dropout")}
    assert len(seeds) == 9 and all(0 <= s < 2**63 for s in seeds)
    assert derive_seed(0, 1, "x") == derive_seed(0, 1, "x") != derive_seed(1, 1, "x")


def test_overrides_make_a_new_validated_spec() -> None:
    from epdo.zoo import SpecError, load_spec

    spec = load_spec("quickstart")
    new = with_overrides(spec, epochs=2, lr=0.5, batch_size=None)
    assert (new.train.epochs, new.train.lr, new.train.batch_size) == (2, 0.5, 64)
    assert new.train.augment.rotate and new.name == "quickstart"
    assert with_overrides(spec) is spec
    with pytest.raises(SpecError, match="train.epochs"):
        with_overrides(spec, epochs=0)


def test_metrics_file_is_cut_back_to_the_checkpoint(tmp_path) -> None:
    rd = RunDir(tmp_path)
    for e in (1, 2, 3):
        rd.append_metrics({"epoch": e})
    with open(rd.metrics, "a") as f:
        f.write('{"epoch": 4, "lr')  # a torn line
    assert [r["epoch"] for r in rd.read_metrics()] == [1, 2, 3]
    assert [r["epoch"] for r in rd.truncate_metrics(2)] == [1, 2]
    assert [json.loads(line)["epoch"] for line in rd.metrics.read_text().splitlines()] == [1, 2]


def test_default_run_dirs_are_unique(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    a, b = RunDir.create(None, "tiny"), RunDir.create(None, "tiny")
    assert a.path != b.path and a.path.parent == b.path.parent == tmp_path.joinpath(
        "runs", "tiny").relative_to(tmp_path)
