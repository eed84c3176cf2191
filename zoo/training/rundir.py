"""The run directory, its files, and who may write them.

``runs/<spec name>/<YYYYmmdd-HHMMSS>/`` (relative to the working directory; ``-2``, ``-3``,
... appended when it exists), or the directory given with ``--out``::

    spec.yaml            the resolved spec with the command-line overrides (yaml.safe_dump,
                         under a first line, SPEC_HEADER, that marks it as a run's)
    metrics.jsonl        one JSON object per completed epoch (see EPOCH_KEYS)
    checkpoint-last.pt   written after every epoch (and on Ctrl-C)
    checkpoint-best.pt   the epoch with the highest test accuracy
    summary.json         the run at a glance, rewritten after every epoch
    data.json            a folder dataset's classes, split file lists and skipped files
                         (:mod:`epdo.zoo.data.folder_dataset`), read back on resume and by
                         ``epdo eval`` / ``epdo export``
    .epdo-train.lock     present while a trainer holds the folder (see below)

Every file is written atomically (:func:`epdo.zoo.fileio.atomic_write`: a temporary file
``.<name>.<random>.tmp`` beside it, renamed over it); ``metrics.jsonl`` is appended one whole
line per ``write`` and flushed, and on resume it is cut back to the epochs the checkpoint
holds, so it never keeps a partial or stale line.

**One writer.** A trainer holds an OS-level lock (``fcntl.flock``) on ``.epdo-train.lock``
for its whole life (:meth:`RunDir.fresh`, :meth:`RunDir.reopen`; :meth:`RunDir.release`
removes the file). A second trainer is refused in one line naming the folder and the
holder's pid. The kernel drops the lock when its process dies, however it dies, so a killed
run leaves no stale lock (at most a lock file that the next trainer takes over).

**Whose folder.** A new run (``--out``) goes only into a new or empty folder, or into a run
folder that never saved a checkpoint (a run killed during its first epoch: it restarts, its
unsaved metrics dropped). A folder with a checkpoint is continued with ``--resume``; a folder
holding anything that is not a run's file (a user's own ``spec.yaml``, notes, data) is
refused, and nothing in it is changed.

**After a kill.** Whatever instant a run was killed at, the folder can be continued:
``--resume`` takes ``checkpoint-last.pt``, else ``checkpoint-best.pt`` (a kill between the
two writes of the first epoch; the best one was written first and holds the same state),
else restarts from the run's ``spec.yaml`` at epoch 0. The temporary files of a killed writer
are removed when the next trainer takes the folder.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import stat
import time
from pathlib import Path
from typing import Any

import yaml

from ..checkpoint import BEST, LAST
from ..fileio import atomic_write, full_disk_reported
from .errors import TrainError

try:  # POSIX; where it is missing (Windows) the folder lock is not enforced
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

__all__ = ["DATA", "EPOCH_KEYS", "LOCK", "METRICS", "RUN_FILES", "SPEC", "SPEC_HEADER", "SUMMARY",
           "RunDir"]

SPEC, METRICS, SUMMARY, DATA = "spec.yaml", "metrics.jsonl", "summary.json", "data.json"
LOCK = ".epdo-train.lock"
"""The lock file of a run folder (see the module docstring)."""
RUN_FILES = (SPEC, METRICS, SUMMARY, DATA, BEST, LAST)
"""The files a run writes (their temporary files are ``.<name>.<random>.tmp``)."""
SPEC_HEADER = "# epdo run: the resolved spec of the run in this folder (written by epdo train)\n"
"""The first line of a run's ``spec.yaml``: what tells it from a user's spec file."""
EPOCH_KEYS = (
    "epoch", "lr", "train_loss", "train_acc", "test_loss", "test_acc", "images_per_s", "seconds",
)
"""The keys of one ``metrics.jsonl`` line, in order: ``epoch`` (1-based, = epochs completed),
``lr`` (of that epoch), ``train_loss``/``train_acc`` (mean over the epoch's augmented training
images, as the weights changed), ``test_loss``/``test_acc`` (after the epoch, eval mode),
``images_per_s`` (training throughput, all processes) and ``seconds`` (training + test)."""

_SHOWN = 3
"""How many offending file names an error message lists."""
_LOCK_TRIES = 100
"""How often taking the lock is retried when its file was replaced in between."""


class RunDir:
    """A run directory: paths of its files, the few ways they are written, and its lock."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._lock_fd: int | None = None
        self._created = False

    # ------------------------------------------------------------------ taking a folder

    @classmethod
    def create(cls, out: str | os.PathLike[str] | None, spec_name: str) -> RunDir:
        """``out`` (created if needed), else a new ``runs/<spec_name>/<timestamp>``
        (unlocked and unchecked: see :meth:`fresh`)."""
        if out is not None:
            path = Path(out)
            existed = path.is_dir()
            try:
                path.mkdir(parents=True, exist_ok=True)
            except (FileExistsError, NotADirectoryError):
                raise TrainError(
                    f"{path}: not a folder (a file is in the way); choose another --out"
                ) from None
            except OSError as exc:
                raise TrainError(
                    f"{path}: cannot create the run folder: {exc.strerror or exc}; choose "
                    "another --out"
                ) from None
            run = cls(path)
            run._created = not existed
            return run
        base = Path("runs") / spec_name / time.strftime("%Y%m%d-%H%M%S")
        path, n = base, 1
        while True:
            try:
                path.mkdir(parents=True, exist_ok=False)
                run = cls(path)
                run._created = True
                return run
            except FileExistsError:
                n += 1
                path = base.with_name(f"{base.name}-{n}")
            except OSError as exc:
                raise TrainError(
                    f"{path}: cannot create the run folder: {exc.strerror or exc}; run from a "
                    "writable folder or give --out"
                ) from None

    @classmethod
    def fresh(cls, out: str | os.PathLike[str] | None, spec_name: str) -> RunDir:
        """The folder of a new run, locked: ``out`` or a new ``runs/<spec>/<timestamp>``.

        Refused (:class:`TrainError`, nothing in the folder changed) when another trainer
        holds it, when it holds a checkpoint (continue it with ``--resume``) or files that
        are not a run's. A run folder without a checkpoint (killed in its first epoch) is
        taken over: the killed writer's temporary files, metrics and summary are removed.
        """
        run = cls.create(out, spec_name)
        try:
            run.lock()
            run._check_fresh()
            run.remove_temporary()
            for name in (METRICS, SUMMARY, DATA):
                with contextlib.suppress(FileNotFoundError):
                    (run.path / name).unlink()
        except BaseException:
            run.release()
            raise
        return run

    @classmethod
    def reopen(cls, path: str | os.PathLike[str], *, lock: bool = True) -> RunDir:
        """The folder of a run to resume; with ``lock`` (the process that writes), locked and
        rid of a killed writer's temporary files. ``CheckpointError`` when it is no folder."""
        from ..checkpoint import CheckpointError

        run = cls(path)
        if not run.path.is_dir():
            raise CheckpointError(
                f"{run.path}: no such run directory (--resume takes a directory written by "
                "`epdo train`)"
            )
        if lock:
            run.lock()
            try:
                run.remove_temporary()
            except BaseException:
                run.release()
                raise
        return run

    def _check_fresh(self) -> None:
        names = sorted(p.name for p in self.path.iterdir() if not self._is_ours_temporary(p))
        names = [n for n in names if n != LOCK]
        saved = [n for n in (LAST, BEST) if n in names]
        if saved:
            raise TrainError(
                f"{self.path} already holds a run ({saved[0]}); continue it with --resume "
                f"{self.path} or choose another --out"
            )
        allowed = {SPEC, METRICS, SUMMARY, DATA} if self.holds_run_spec() else set()
        foreign = [n for n in names if n not in allowed]
        if foreign:
            raise TrainError(
                f"{self.path} holds files that are not an epdo run's ({_some(foreign)}); "
                "nothing was changed: choose a new or empty folder for --out"
            )

    def _is_ours_temporary(self, path: Path) -> bool:
        name = path.name
        return name.endswith(".tmp") and any(name.startswith(f".{f}.") for f in RUN_FILES)

    def remove_temporary(self) -> list[str]:
        """Remove the temporary files a killed writer left (``.<run file>.<random>.tmp``);
        their names."""
        removed = []
        for entry in self.path.iterdir():
            if self._is_ours_temporary(entry) and not entry.is_dir():
                with contextlib.suppress(FileNotFoundError):
                    entry.unlink()
                removed.append(entry.name)
        return sorted(removed)

    def holds_run_spec(self) -> bool:
        """Whether ``spec.yaml`` is a run's (a regular file starting with SPEC_HEADER)."""
        try:
            info = os.lstat(self.spec)
            if not stat.S_ISREG(info.st_mode):
                return False
            with open(self.spec, "rb") as fh:
                head = fh.read(len(SPEC_HEADER.encode()))
        except OSError:
            return False
        return head == SPEC_HEADER.encode()

    # ------------------------------------------------------------------ the lock

    @property
    def lock_file(self) -> Path:
        return self.path / LOCK

    @property
    def locked(self) -> bool:
        return self._lock_fd is not None

    def lock(self) -> None:
        """Hold the folder's lock until :meth:`release` (or the process ends); a
        :class:`TrainError` naming the holder's pid when another process holds it."""
        if self._lock_fd is not None or fcntl is None:
            return
        flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
        for _ in range(_LOCK_TRIES):
            try:
                fd = os.open(self.lock_file, flags, 0o644)
            except OSError as exc:
                raise TrainError(
                    f"{self.path}: cannot lock the run folder ({LOCK}: "
                    f"{exc.strerror or exc}); choose another --out"
                ) from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                holder = _read_pid(fd)
                os.close(fd)
                if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                    raise TrainError(
                        f"{self.path}: cannot lock the run folder ({exc.strerror or exc})"
                    ) from None
                who = f"pid {holder}" if holder is not None else "pid unknown"
                raise TrainError(
                    f"{self.path} is in use by another epdo train ({who}); wait for it to "
                    "finish, or use another folder"
                ) from None
            # the holder may have released (and removed) the file between open and flock:
            # then this lock is on a file nobody else sees; take the current one instead
            try:
                current = os.stat(self.lock_file, follow_symlinks=False).st_ino
            except OSError:
                current = None
            if current == os.fstat(fd).st_ino:
                break
            os.close(fd)
        else:
            raise TrainError(
                f"{self.path}: cannot lock the run folder ({LOCK} keeps being replaced); is "
                "another program removing it?"
            )
        self._lock_fd = fd
        with full_disk_reported(self.lock_file):  # the pid is a note: the lock is held
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())

    def release(self) -> None:
        """Give the folder up: the lock file is removed, then unlocked; a folder created for
        this run that stayed empty is removed too."""
        fd, self._lock_fd = self._lock_fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.unlink(self.lock_file)  # still locked: a late opener sees a new file
            with contextlib.suppress(OSError):
                fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
        if self._created:
            self._created = False
            with contextlib.suppress(OSError):
                self.path.rmdir()  # only if empty (a run that failed before writing)

    # ------------------------------------------------------------------ files

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

    def resume_checkpoint(self) -> Path | None:
        """The checkpoint to resume from: ``checkpoint-last.pt``, else ``checkpoint-best.pt``
        (a run killed between the two writes of its first epoch), else None."""
        for name in (LAST, BEST):
            if self.checkpoint(name).is_file():
                return self.checkpoint(name)
        return None

    def write_spec(self, resolved: dict[str, Any]) -> None:
        self._created = False  # the folder holds a run now
        atomic_write(self.spec, SPEC_HEADER + yaml.safe_dump(resolved, sort_keys=False))

    @property
    def data(self) -> Path:
        return self.path / DATA

    def write_data(self, record: dict[str, Any]) -> None:
        """The folder dataset's record (``data.json``)."""
        atomic_write(self.data, json.dumps(record) + "\n")

    def write_summary(self, summary: dict[str, Any]) -> None:
        atomic_write(self.summary, json.dumps(summary, indent=2) + "\n")

    def append_metrics(self, record: dict[str, Any]) -> None:
        """Append one line (a single write of a whole line, then flush and fsync)."""
        with full_disk_reported(self.metrics), open(self.metrics, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def read_metrics(self) -> list[dict[str, Any]]:
        """The complete epoch lines of ``metrics.jsonl`` (a torn or foreign line is
        skipped)."""
        if not self.metrics.is_file():
            return []
        records = []
        for line in self.metrics.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            epoch = record.get("epoch") if isinstance(record, dict) else None
            if isinstance(epoch, int) and not isinstance(epoch, bool) and epoch >= 1:
                records.append(record)
        return records

    def truncate_metrics(self, epochs: int) -> list[dict[str, Any]]:
        """Keep the lines of epochs ``1..epochs`` (atomically); return them."""
        kept = [r for r in self.read_metrics() if r["epoch"] <= epochs]
        atomic_write(self.metrics, "".join(json.dumps(r) + "\n" for r in kept))
        return kept


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _some(names: list[str]) -> str:
    shown = ", ".join(names[:_SHOWN])
    more = len(names) - _SHOWN
    return shown + (f" and {more} more" if more > 0 else "")
