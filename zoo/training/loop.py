"""One training epoch and one evaluation pass.

:class:`Engine` holds what a step needs (model, optimizer, objective, precision, gradient
scaler, device) and runs batches through it. The :class:`~.objective.Objective` says what
is minimised and counted: images for a classifier, the pixels not ignored for a
segmentation (whose masks are augmented with their images). Per step it keeps the sums of
loss, correct predictions and counted targets on the device and reads them back only every
``sync_every`` steps (every step on the CPU), so a GPU is not stalled by a host sync each
step. At those points — the same steps on every process — it also checks for a non-finite
loss (whose exact step is tracked on the device) and for a pending Ctrl-C.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from torch import nn

from ..scoring import batch_logits, eval_mode
from ..segmentation_metrics import SegScores
from ..transforms import to_unit_range
from .augment import AugmentDraws
from .device import Precision
from .distributed import DistEnv
from .interrupts import StopRequest
from .objective import Objective
from .progress import NullProgress, Progress
from .sampling import IndexedBatches, eval_batches

__all__ = ["Engine", "EpochStats", "NonFiniteStep", "TestScores", "evaluate_model"]

_NO_STEP = 2**62


class NonFiniteStep(Exception):
    """Raised by :meth:`Engine.train_epoch`: the loss of step ``step`` (1-based) was not
    finite. The trainer turns it into :class:`~epdo.zoo.training.NonFiniteLossError`."""

    def __init__(self, step: int) -> None:
        super().__init__(step)
        self.step = step


@dataclass
class EpochStats:
    """Sums over the training targets of an epoch (all processes: images, or pixels not
    ignored; the loss weighted by them), and this session's time and images."""

    loss_sum: float = 0.0
    correct: float = 0.0
    count: float = 0.0
    seconds: float = 0.0
    images: float = 0.0

    @property
    def loss(self) -> float:
        return self.loss_sum / max(self.count, 1.0)

    @property
    def accuracy(self) -> float:
        return self.correct / max(self.count, 1.0)

    @property
    def images_per_s(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else 0.0


class Engine:
    """Steps, epochs and evaluation for one model on one device."""

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        *,
        device: torch.device,
        precision: Precision,
        dist: DistEnv,
        workers: int = 0,
        sync_every: int | None = None,
        objective: Objective | None = None,
    ) -> None:
        self.model, self.optimizer = model, optimizer
        self.objective = objective or Objective("classify", 0)
        self.device, self.precision, self.dist = device, precision, dist
        self.workers = workers
        self.cuda = device.type == "cuda"
        self.sync_every = sync_every or (16 if self.cuda else 1)
        self.scaler = torch.amp.GradScaler(device.type, enabled=precision.scaler)
        # progress of the current epoch, read by the trainer when it is interrupted
        self.steps_done = 0
        self.sums = torch.zeros(3, dtype=torch.float64, device=device)
        self.bad = torch.full((), _NO_STEP, dtype=torch.int64, device=device)

    # ------------------------------------------------------------------ one step

    def prepare(
        self, images: torch.Tensor, index: torch.Tensor | None = None,
        draws: AugmentDraws | None = None,
    ) -> torch.Tensor:
        """Copy a batch of raw images (float in [0, 1], or uint8 pixels) to the device, as
        float in [0, 1] there, and augment it (training)."""
        x = to_unit_range(images.to(self.device, non_blocking=True))
        if draws is not None and draws.active and index is not None:
            x = draws.apply(x, index.to(self.device, non_blocking=True))
        if self.cuda:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def targets(self, labels: torch.Tensor, index: torch.Tensor | None = None,
                draws: AugmentDraws | None = None) -> torch.Tensor:
        """A batch's labels (B,) or masks (B, H, W) as int64 on the device; masks get the
        geometric augmentation their images got (same draws, nearest, IGNORE outside)."""
        y = labels.to(self.device, non_blocking=True).long()
        if y.ndim == 3 and draws is not None and draws.active and index is not None:
            y = draws.apply_masks(y, index.to(self.device, non_blocking=True))
        return y

    def step(self, x: torch.Tensor, y: torch.Tensor
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One optimizer step on a prepared batch; the (detached) mean loss, the number of
        correct predictions and of counted targets, all still on the device."""
        with self.precision.autocast(self.device):
            logits = self.model(x)
        loss = self.objective.loss(logits.float(), y)
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler.is_enabled():
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            loss.backward()
            self.optimizer.step()
        correct, counted = self.objective.counts(logits.detach(), y)
        return loss.detach(), correct, counted

    # ------------------------------------------------------------------ epochs

    def train_epoch(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        batches: list[torch.Tensor],
        draws: AugmentDraws,
        *,
        start_step: int = 0,
        start_sums: tuple[float, float, float] = (0.0, 0.0, 0.0),
        progress: Progress | None = None,
        stop: StopRequest | None = None,
    ) -> EpochStats:
        """Train on ``batches[start_step:]`` (the first ``start_step`` were done before a
        resume and contributed ``start_sums``); raise :class:`NonFiniteStep` or
        ``KeyboardInterrupt`` (on a pending Ctrl-C) at a sync point."""
        progress = progress or NullProgress()
        self.model.train()
        steps = len(batches)
        draws = draws.to(self.device)
        self.steps_done = start_step
        self.sums = torch.tensor(start_sums, dtype=torch.float64, device=self.device)
        bad = self.bad = torch.full((), _NO_STEP, dtype=torch.int64, device=self.device)
        loader = IndexedBatches(
            images, labels, batches[start_step:], workers=self.workers, pin=self.cuda
        )
        stats = EpochStats()
        fresh = torch.zeros((), dtype=torch.float64, device=self.device)
        start = time.perf_counter()
        iterator = iter(loader)
        for step in range(start_step + 1, steps + 1):
            try:
                batch_images, batch_labels, index = next(iterator)
            except Exception as exc:  # a DataLoader worker killed by the same Ctrl-C
                if stop is not None and stop.requested:
                    raise KeyboardInterrupt from exc
                raise
            x = self.prepare(batch_images, index, draws)
            y = self.targets(batch_labels, index, draws)
            loss, correct, counted = self.step(x, y)
            count = counted.double()
            self.sums += torch.stack([loss.double() * count, correct.double(), count])
            fresh += y.shape[0]
            bad = self.bad = torch.where(torch.isfinite(loss), bad, torch.clamp(bad, max=step))
            self.steps_done = step
            if step % self.sync_every == 0 or step == steps:
                self._sync_point(bad, stop)
                loss_sum, right, total, seen = self._totals(fresh)
                elapsed = time.perf_counter() - start
                progress.step(step, loss_sum / max(total, 1), right / max(total, 1),
                              seen / elapsed if elapsed > 0 else 0.0)
        stats.loss_sum, stats.correct, stats.count, stats.images = self._totals(fresh)
        stats.seconds = time.perf_counter() - start
        return stats

    def _totals(self, fresh: torch.Tensor) -> list[float]:
        """Loss sum, correct, images of the epoch and images of this session, all processes."""
        return self.dist.sum_(torch.cat([self.sums, fresh.view(1)])).tolist()

    def first_bad_step(self) -> int | None:
        """The first step of this epoch with a non-finite loss on this process, if any."""
        step = int(self.bad.item())
        return None if step >= _NO_STEP else step

    def _sync_point(self, bad: torch.Tensor, stop: StopRequest | None) -> None:
        """Agree across processes on a non-finite step and on a pending Ctrl-C."""
        stopping = 1 if stop is not None and stop.requested else 0
        flags = torch.stack([bad, bad.new_tensor(-stopping)])
        bad_step, neg_stop = self.dist.min_(flags).tolist()
        if bad_step < _NO_STEP:
            raise NonFiniteStep(int(bad_step))
        if neg_stop < 0:
            raise KeyboardInterrupt

    def evaluate(
        self, images: torch.Tensor, labels: torch.Tensor, batch_size: int
    ) -> TestScores:
        """Test loss and accuracy over all images (split across processes)."""
        module = self.model.module if hasattr(self.model, "module") else self.model
        return evaluate_model(
            module, images, labels, device=self.device, batch_size=batch_size,
            precision=self.precision, dist=self.dist, workers=self.workers,
            objective=self.objective,
        )


@dataclass(frozen=True)
class TestScores:
    """A test pass: the mean loss and the accuracy (of images, or of the pixels not
    ignored), and for a segmentation its per-pixel scores (mean IoU, ...)."""

    loss: float
    accuracy: float
    segmentation: SegScores | None = None

    @property
    def score(self) -> float:
        """What picks the best epoch: the mean IoU of a segmentation, else the accuracy."""
        return self.accuracy if self.segmentation is None else self.segmentation.mean_iou

    def record(self) -> dict[str, float]:
        """The per-epoch record's test entries."""
        out = {"test_loss": self.loss, "test_acc": self.accuracy}
        if self.segmentation is not None:
            out["test_miou"] = self.segmentation.mean_iou
        return out


def evaluate_model(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    device: torch.device | str = "cpu",
    batch_size: int = 256,
    precision: Precision | None = None,
    dist: DistEnv | None = None,
    workers: int = 0,
    objective: Objective | None = None,
) -> TestScores:
    """Mean cross-entropy and accuracy of ``model`` (put in eval mode, then restored) on raw
    images in [0, 1] (and, for a segmentation ``objective``, its confusion matrix); each
    process scores its share and the sums are combined."""
    device = torch.device(device)
    dist = dist or DistEnv()
    objective = objective or Objective("classify", 0)
    sums = torch.zeros(4, dtype=torch.float64, device=device)
    confusion = torch.zeros(objective.classes ** 2 if objective.dense else 0,
                            dtype=torch.float64, device=device)
    batches = eval_batches(len(images), batch_size, dist.rank, dist.world_size)
    loader = IndexedBatches(images, labels, batches, workers=workers, pin=device.type == "cuda")
    with eval_mode(model):
        for logits, y in batch_logits(model, loader, device=device, precision=precision):
            y = y.long()
            loss = objective.loss(logits, y, reduction="sum")
            correct, counted = objective.counts(logits, y)
            sums += torch.stack([loss.double(), objective.weight_sum(y).double(),
                                 correct.double(), counted.double()])
            if objective.dense:
                confusion += objective.confusion(logits, y).view(-1).double()
    totals = dist.sum_(torch.cat([sums, confusion])).tolist()
    loss_sum, weight, correct, count = totals[:4]
    seg = None
    if objective.dense:
        k = objective.classes
        seg = SegScores.of(torch.tensor(totals[4:], dtype=torch.float64).view(k, k).round())
    return TestScores(loss_sum / max(weight, 1e-12), correct / max(count, 1.0), seg)
