"""The run directory and its files.

``runs/<spec name>/<YYYYmmdd-HHMMSS>/`` (relative to the working directory; ``-2``, ``-3``,
... appended when it exists), or the directory given with ``--out``::

    spec.yaml            the resolved spec with the command-line overrides (yaml.safe_dump)
    metrics.jsonl        one JSON object per completed epoch (see EPOCH_KEYS)
    checkpoint-last.pt   written after every epoch (and on Ctrl-C)
    checkpoint-best.pt   the epoch with the highest test accuracy
    summary.json         the run at a glance, rewritten after every epoch

Every file is written atomically (:func:`epdo.zoo.fileio.atomic_write`: a temporary file
beside it, renamed over it); ``metrics.jsonl`` is appended one whole line per ``write``
and flushed, and on resume it is cut back to the epochs the checkpoint holds, so it never
keeps a partial or stale line.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import yaml

from ..fileio import atomic_write

__all__ = ["EPOCH_KEYS", "METRICS", "SPEC", "SUMMARY", "RunDir"]

SPEC, METRICS, SUMMARY = "spec.yaml", "metrics.jsonl", "summary.json"
EPOCH_KEYS = (
    "epoch", "lr", "train_loss", "train_acc", "test_loss", "test_acc", "images_per_s", "seconds",
)
"""The keys of one ``metrics.jsonl`` line, in order: ``epoch`` (1-based, = epochs completed),
``lr`` (of that epoch), ``train_loss``/``train_acc`` (mean over the epoch's augmented training
images, as the weights changed), ``test_loss``/``test_acc`` (after the epoch, eval mode),
``images_per_s`` (training throughput, all processes) and ``seconds`` (training + test)."""


class RunDir:
    """A run directory: paths of its files and the few ways they are written."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    @classmethod
    def create(cls, out: str | os.PathLike[str] | None, spec_name: str) -> RunDir:
        """``out`` (created if needed), else a new ``runs/<spec_name>/<timestamp>``."""
        if out is not None:
            path = Path(out)
            path.mkdir(parents=True, exist_ok=True)
            return cls(path)
        base = Path("runs") / spec_name / time.strftime("%Y%m%d-%H%M%S")
        path, n = base, 1
        while True:
            try:
                path.mkdir(parents=True, exist_ok=False)
                return cls(path)
            except FileExistsError:
                n += 1
                path = base.with_name(f"{base.name}-{n}")

    def __str__(self) -> str:
        return str(self.path)

    @property
    def spec(self) -> Path:
        return self.path / SPEC

    @property
    def metrics(self) -> Path:
        return self.path / METRICS

    @property
    def summary(self) -> Path:
        return self.path / SUMMARY

    def checkpoint(self, name: str) -> Path:
        return self.path / name

    def write_spec(self, resolved: dict[str, Any]) -> None:
        atomic_write(self.spec, yaml.safe_dump(resolved, sort_keys=False))

    def write_summary(self, summary: dict[str, Any]) -> None:
        atomic_write(self.summary, json.dumps(summary, indent=2) + "\n")

    def append_metrics(self, record: dict[str, Any]) -> None:
        """Append one line (a single write of a whole line, then flush and fsync)."""
        with open(self.metrics, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def read_metrics(self) -> list[dict[str, Any]]:
        """The complete lines of ``metrics.jsonl`` (a torn last line is skipped)."""
        if not self.metrics.is_file():
            return []
        records = []
        for line in self.metrics.read_text(encoding="utf-8").splitlines():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return records

    def truncate_metrics(self, epochs: int) -> list[dict[str, Any]]:
        """Keep the lines of epochs ``1..epochs`` (atomically); return them."""
        kept = [r for r in self.read_metrics() if int(r.get("epoch", 0)) <= epochs]
        atomic_write(self.metrics, "".join(json.dumps(r) + "\n" for r in kept))
        return kept
