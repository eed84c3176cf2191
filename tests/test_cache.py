"""Tests for epdo.zoo.cache: hits, misses, key changes, corruption, location, failures."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import platformdirs
import pytest

from epdo.zoo import cache


class Counter:
    """A compute() callable that counts its calls and returns fixed arrays."""

    def __init__(self, scale: float = 1.0) -> None:
        self.calls = 0
        self.scale = scale

    def __call__(self) -> dict[str, np.ndarray]:
        self.calls += 1
        return {
            "a": self.scale * np.arange(6, dtype=np.float64).reshape(2, 3),
            "b": np.array([1, 2, 3], dtype=np.int32),
        }


def assert_same(got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> None:
    assert set(got) == set(want)
    for name in want:
        assert got[name].dtype == want[name].dtype
        np.testing.assert_array_equal(got[name], want[name])


@pytest.fixture
def cdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "cache"
    monkeypatch.setenv("EPDO_CACHE_DIR", str(path))
    return path


def test_env_override_and_created_on_demand(cdir: Path) -> None:
    assert not cdir.exists()
    assert cache.cache_dir() == cdir
    assert cdir.is_dir()


def test_default_location_is_platformdirs(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    target = tmp_path / "platform-cache"
    monkeypatch.delenv("EPDO_CACHE_DIR", raising=False)
    monkeypatch.setattr(platformdirs, "user_cache_dir", lambda name: str(target / name))
    assert cache.cache_dir() == target / "epdo"
    assert (target / "epdo").is_dir()


def test_hit_after_miss(cdir: Path) -> None:
    compute = Counter()
    first = cache.cached_arrays("unit", {"n": 3, "name": "x"}, compute)
    second = cache.cached_arrays("unit", {"name": "x", "n": 3}, compute)  # key order irrelevant
    assert compute.calls == 1
    assert_same(first, Counter()())
    assert_same(second, Counter()())
    files = list(cdir.glob("unit-*.npz"))
    assert len(files) == 1
    assert len(files[0].name) == len("unit-") + 16 + len(".npz")
    assert files[0] == cache.cache_path("unit", {"n": 3, "name": "x"})
    assert not list(cdir.glob(".*tmp"))  # no temp files left behind


def test_key_stored_in_file(cdir: Path) -> None:
    key = {"n": 3, "f": 0.5}
    cache.cached_arrays("unit", key, Counter())
    with np.load(cache.cache_path("unit", key), allow_pickle=False) as npz:
        stored = npz[cache.KEY_FIELD]
        assert stored.ndim == 0 and stored.dtype.kind == "U"
        assert str(stored[()]) == '{"f":0.5,"n":3}'


def test_key_change_recomputes(cdir: Path) -> None:
    c1, c2 = Counter(1.0), Counter(2.0)
    r1 = cache.cached_arrays("unit", {"n": 1}, c1)
    r2 = cache.cached_arrays("unit", {"n": 2}, c2)
    assert (c1.calls, c2.calls) == (1, 1)
    assert_same(r1, Counter(1.0)())
    assert_same(r2, Counter(2.0)())
    # a different kind with the same key is a different entry
    c3 = Counter(3.0)
    cache.cached_arrays("other", {"n": 1}, c3)
    assert c3.calls == 1
    assert len(list(cdir.glob("*.npz"))) == 3


def test_format_version_changes_file_name(cdir: Path, monkeypatch: pytest.MonkeyPatch):
    before = cache.cache_path("unit", {"n": 1})
    monkeypatch.setattr(cache, "CACHE_FORMAT", cache.CACHE_FORMAT + 1)
    assert cache.cache_path("unit", {"n": 1}) != before


@pytest.mark.parametrize("damage", ["garbage", "truncate", "empty"])
def test_corrupt_file_recomputed_and_repaired(cdir: Path, damage: str) -> None:
    key = {"n": 5}
    compute = Counter()
    cache.cached_arrays("unit", key, compute)
    path = cache.cache_path("unit", key)
    data = path.read_bytes()
    if damage == "garbage":
        path.write_bytes(b"this is not an npz file")
    elif damage == "truncate":
        path.write_bytes(data[: len(data) // 2])
    else:
        path.write_bytes(b"")
    result = cache.cached_arrays("unit", key, compute)
    assert compute.calls == 2
    assert_same(result, Counter()())
    # repaired: the next call is a hit
    again = cache.cached_arrays("unit", key, compute)
    assert compute.calls == 2
    assert_same(again, Counter()())


def test_key_mismatch_is_a_miss(cdir: Path) -> None:
    key = {"n": 7}
    path = cache.cache_path("unit", key)
    np.savez(path, a=np.zeros(2), **{cache.KEY_FIELD: np.array('{"n":8}')})
    compute = Counter()
    result = cache.cached_arrays("unit", key, compute)
    assert compute.calls == 1
    assert_same(result, Counter()())
    cache.cached_arrays("unit", key, compute)
    assert compute.calls == 1


def test_unwritable_dir_still_returns_and_warns_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    monkeypatch.setenv("EPDO_CACHE_DIR", str(blocker / "sub"))  # cannot be created
    compute = Counter()
    with pytest.warns(RuntimeWarning, match="not usable"):
        result = cache.cached_arrays("unit", {"n": 1}, compute)
    assert_same(result, Counter()())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = cache.cached_arrays("unit", {"n": 1}, compute)
    assert compute.calls == 2
    assert_same(result, Counter()())


def test_write_failure_still_returns(cdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def failing_save(*args: object, **kwargs: object) -> None:
        raise PermissionError("read-only")

    monkeypatch.setattr(cache, "_save", failing_save)
    compute = Counter()
    with pytest.warns(RuntimeWarning):
        result = cache.cached_arrays("unit", {"n": 1}, compute)
    assert_same(result, Counter()())
    assert not list(cdir.glob("*.npz"))


@pytest.mark.parametrize("kind", ["", "a/b", "../x", "a b"])
def test_bad_kind_rejected(cdir: Path, kind: str) -> None:
    with pytest.raises(ValueError):
        cache.cached_arrays(kind, {"n": 1}, Counter())


def test_bad_compute_output_rejected(cdir: Path) -> None:
    with pytest.raises(ValueError):
        cache.cached_arrays("unit", {"n": 1}, lambda: {cache.KEY_FIELD: np.zeros(1)})
    with pytest.raises(TypeError):
        cache.cached_arrays("unit", {"n": 2}, lambda: {"o": np.array([object()])})
