"""Dynamic batching: requests that arrive together run as one batch.

A :class:`Batcher` owns one worker thread per model. :meth:`Batcher.submit` queues a
request's images ``(n, C, H, W)`` and returns a future at once, or raises
:class:`QueueFull` when ``queue_size`` requests already wait (the server answers 503 without
waiting). The worker takes the first waiting request, then joins the ones behind it until
the batch holds ``max_batch`` images or ``max_delay`` seconds have passed since the first
arrived, runs the model once and hands every request its own rows. The model computes each
image independently (inference mode), so a request's logits do not depend on what it was
batched with. When a joined run fails, every request of it is run alone, so only the
requests that fail by themselves get the error.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass

import numpy as np

from .artifact import ServingError

__all__ = ["Batcher", "QueueFull"]


_STOP = object()
"""Queued by :meth:`Batcher.close`: the worker stops once what came before it has run."""


class QueueFull(ServingError):
    """Too many requests wait already (HTTP 503)."""


@dataclass
class _Job:
    images: np.ndarray
    future: Future
    arrived: float


class Batcher:
    """Joins concurrent requests into batches of at most ``max_batch`` images.

    Args:
        run: the model: ``(N, C, H, W)`` float32 -> ``(N, ...)`` logits (``(N, K)``, or a
            segmentation's ``(N, K, H, W)``).
        max_batch: most images in one run (a single larger request runs alone).
        max_delay: seconds the first request of a batch may wait for others (0: run at once
            with whatever is waiting).
        queue_size: most requests waiting; more are refused at once.
    """

    def __init__(self, run: Callable[[np.ndarray], np.ndarray], max_batch: int = 32,
                 max_delay: float = 0.005, queue_size: int = 256) -> None:
        self.run = run
        self.max_batch = max(1, int(max_batch))
        self.max_delay = max(0.0, float(max_delay))
        self._queue: queue.Queue[_Job | object] = queue.Queue(maxsize=max(1, int(queue_size)))
        self._held: _Job | None = None
        self._thread = threading.Thread(target=self._work, name="epdo-batcher", daemon=True)
        self._thread.start()

    def submit(self, images: np.ndarray) -> Future:
        """Queue ``images`` ``(n, C, H, W)``; the future's result is their logits (``n``
        rows), or the exception the model raised for them. QueueFull when full."""
        future: Future = Future()
        try:
            self._queue.put_nowait(_Job(images, future, time.monotonic()))
        except queue.Full:
            raise QueueFull("the server is busy: too many requests wait; retry later") from None
        return future

    def close(self) -> None:
        """Finish the requests already queued, then stop the worker."""
        self._queue.put(_STOP)
        self._thread.join()

    def _next(self, timeout: float | None) -> _Job | object | None:
        """The next waiting job (a held one first), :data:`_STOP`, or None when none came
        within ``timeout`` seconds (None: wait for one)."""
        if self._held is not None:
            job, self._held = self._held, None
            return job
        try:
            if timeout is None:
                return self._queue.get()
            return self._queue.get(timeout=timeout) if timeout > 0 else self._queue.get_nowait()
        except queue.Empty:
            return None

    def _work(self) -> None:
        while True:
            first = self._next(None)
            if first is _STOP or not isinstance(first, _Job):
                return
            jobs, count = [first], len(first.images)
            deadline = first.arrived + self.max_delay
            stop = False
            while count < self.max_batch:
                job = self._next(deadline - time.monotonic())
                if job is None:
                    break
                if job is _STOP or not isinstance(job, _Job):
                    stop = True
                    break
                if count + len(job.images) > self.max_batch:
                    self._held = job  # it starts the next batch
                    break
                jobs.append(job)
                count += len(job.images)
            self._execute(jobs)
            if stop:
                while (job := self._next(0)) is not None:  # what was queued before close()
                    if isinstance(job, _Job):
                        self._execute([job])
                return

    def _execute(self, jobs: list[_Job]) -> None:
        try:
            logits = self.run(np.concatenate([j.images for j in jobs]))
        except Exception as exc:  # the model failed: find which requests fail alone
            if len(jobs) == 1:
                jobs[0].future.set_exception(exc)
                return
            for job in jobs:
                self._execute([job])
            return
        start = 0
        for job in jobs:
            job.future.set_result(logits[start:start + len(job.images)])
            start += len(job.images)
