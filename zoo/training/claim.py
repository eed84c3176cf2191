"""Claiming a run folder: rank 0 takes it (locked, see :mod:`.rundir`) and every rank
learns it, or learns why rank 0 could not take it.

Under torchrun only rank 0 opens the folder. The error that stopped it is kept and raised
on every rank once they can hear of it (:meth:`RunClaim.share`, after the process group is
up), so no process waits for one that has failed; in a single process it is raised at once.
"""

from __future__ import annotations

from collections.abc import Callable

from .distributed import DistEnv
from .errors import TrainError
from .rundir import RunDir

__all__ = ["RunClaim"]


class RunClaim:
    """The run folder as rank 0 holds it, or the error that stopped rank 0 from taking it."""

    def __init__(self, env: DistEnv) -> None:
        self.env = env
        self.run_dir: RunDir | None = None
        self.error: str | None = None

    def take(self, open_run_dir: Callable[[], RunDir]) -> None:
        """On rank 0, open (and lock) the folder with ``open_run_dir``; its
        :class:`TrainError` is raised at once in a single process and kept under torchrun."""
        if not self.env.is_main:
            return
        try:
            self.run_dir = open_run_dir()
        except TrainError as exc:
            if not self.env.enabled:
                raise
            self.error = str(exc)

    def share(self) -> RunDir:
        """The folder rank 0 holds, on every rank (a collective call under torchrun), or
        rank 0's error raised on every rank."""
        path = str(self.run_dir.path) if self.run_dir is not None else None
        path, error = self.env.broadcast((path, self.error))
        if error is not None:
            raise TrainError(error)
        return self.run_dir if self.run_dir is not None else RunDir(path)

    def release(self) -> None:
        """Unlock the folder (rank 0; nothing elsewhere)."""
        if self.run_dir is not None:
            self.run_dir.release()
