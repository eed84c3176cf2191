"""Normalizations that act on whole fields (and so commute with the group action).

A field's channels are permuted by the group, so statistics and affine parameters must be
shared across them: one mean/variance and one (scale, shift) per field.

Running statistics start from the first training batch's statistics instead of from the
(0, 1) that ``nn.BatchNorm`` starts from (the first update uses momentum 1, later ones the
usual 0.1). The two agree after ~100 steps, but a Neural ePDO layer's output has a variance
of ~1e-4 (its stencils are L1-normalised), so over a short run the initial 1 would dominate
the running variance (0.9^76 = 3e-4 after two epochs of 2,400 images) and an eval-mode
model would be far off its training-mode self.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..reps import FeatureType
from .plain import bn_scale_shift
from .typed import TypedModule


class _FieldBatchNormFn(torch.autograd.Function):
    """Batch normalisation with given per-field batch statistics, and its full backward.

    Forward: ``y = a_c (x - mu_f) + beta_f`` with ``a_c = gamma_f / sqrt(var_f + eps)``, run
    by the per-channel (channels-last capable) batch-norm kernel with the field statistics
    repeated over each field's d channels. Backward, with n elements per field and
    ``xhat = (x - mu_f) / sqrt(var_f + eps)``:
    ``dx = a_c (gy - sum_f(gy) / n - xhat sum_f(gy xhat) / n)``,
    ``dgamma_f = sum_f(gy xhat)``, ``dbeta_f = sum_f(gy)``; the per-channel sums come from
    the kernel's own backward and are added over each field's channels.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, mean, var, eps, d):  # type: ignore[override]
        rep = [t.repeat_interleave(d) for t in (weight, bias, mean, var)]
        ctx.save_for_backward(x, *rep)
        ctx.eps, ctx.d = eps, d
        w, b, m, v = rep
        return F.batch_norm(x, m, v, w, b, False, 0.0, eps)

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        x, w, _, m, v = ctx.saved_tensors
        eps, d = ctx.eps, ctx.d
        C = x.shape[1]
        gx, gw_c, gb_c = torch.ops.aten.native_batch_norm_backward(
            grad, x, w, m, v, None, None, False, eps, [True, True, True]
        )
        gw = gw_c.view(-1, d).sum(1)
        gb = gb_c.view(-1, d).sum(1)
        n = x.numel() // C * d
        inv = torch.rsqrt(v + eps)
        scale = w * inv / n  # a_c / n
        coef_x = -scale * inv * gw.repeat_interleave(d)
        const = -scale * gb.repeat_interleave(d) - coef_x * m
        gx = gx.addcmul_(x, coef_x.view(1, C, 1, 1)).add_(const.view(1, C, 1, 1))
        return gx, gw, gb, None, None, None, None


@contextlib.contextmanager
def first_batch_seeds(owner: nn.Module, bn: nn.modules.batchnorm._BatchNorm) -> Iterator[None]:
    """Within this block ``bn`` updates its running statistics with momentum 1 if this is its
    first training-mode update; otherwise nothing changes.

    Whether it is the first is Python state of ``owner`` (``_seeded``: false when built,
    set by the first update and by loading a state dict, see :func:`track_seeding`), never
    a read of ``num_batches_tracked`` here: that read would be a device sync, and a graph
    break in a compiled training step."""
    first = bn.training and bn.track_running_stats and not getattr(owner, "_seeded", False)
    if not first:
        yield
        return
    owner._seeded = True
    momentum, bn.momentum = bn.momentum, 1.0
    try:
        yield
    finally:
        bn.momentum = momentum


def _seeded_from_state(owner: nn.Module, incompatible: object) -> None:
    """After a state dict is loaded: past the first update when its BatchNorm (the owner
    itself or its ``bn``) had counted a batch."""
    bn = owner if isinstance(owner, nn.modules.batchnorm._BatchNorm) else owner.bn
    owner._seeded = bool(bn.num_batches_tracked.item() > 0)


def track_seeding(owner: nn.Module) -> None:
    """Give ``owner`` (a BatchNorm, or a module holding one as ``bn``) its ``_seeded``
    state: false when built, and after a state dict is loaded whether the BatchNorm had
    counted a batch (a resumed or trained model is past its first update)."""
    owner._seeded = False
    owner.register_load_state_dict_post_hook(_seeded_from_state)


class SeededBatchNorm1d(nn.BatchNorm1d):
    """``nn.BatchNorm1d`` whose running statistics start from the first batch's (see the
    module docstring); otherwise identical, state dict included."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        track_seeding(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with first_batch_seeds(self, self):
            return super().forward(x)


class FieldBatchNorm(TypedModule):
    """BatchNorm with one statistic and one affine pair per field.

    The mean and variance of field f run over the batch, its d channels and space; the
    parameters and running statistics live in a ``BatchNorm3d(F)`` (what a (B, F, d, H, W)
    view would be normalized by). A channels-last input on a CPU (the zoo's layout) takes a
    faster path: per-channel statistics from the batch-norm kernel, combined per field, and
    :class:`_FieldBatchNormFn`; the output stays channels-last.
    """

    def __init__(self, feature: FeatureType, eps: float = 1e-5, momentum: float = 0.1) -> None:
        super().__init__()
        self.in_type = self.out_type = feature
        self.bn = nn.BatchNorm3d(feature.count, eps=eps, momentum=momentum)
        track_seeding(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        with first_batch_seeds(self, self.bn):
            return self._normalize(x)

    def _normalize(self, x: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        d = self.in_type.field.dim
        fast = x.device.type == "cpu" and x.is_contiguous(memory_format=torch.channels_last)
        if not fast or x.is_contiguous():
            return self.bn(x.reshape(B, C // d, d, H, W)).reshape(B, C, H, W)
        bn = self.bn
        if not bn.training:
            w, b, m, v = (t.repeat_interleave(d) for t in (bn.weight, bn.bias, bn.running_mean,
                                                           bn.running_var))
            return F.batch_norm(x, m, v, w, b, False, 0.0, bn.eps)
        with torch.no_grad():
            mean_c, var_c = torch.batch_norm_update_stats(x, None, None, 0.0)
            mean = mean_c.view(-1, d).mean(1)
            # law of total variance over the field's channels (no E[x^2] - E[x]^2 cancellation)
            spread = (mean_c.view(-1, d) - mean.unsqueeze(1)).square_().mean(1)
            var = var_c.view(-1, d).mean(1) + spread
            self._update_running(mean, var, x.numel() // C * d)
        return _FieldBatchNormFn.apply(x, bn.weight, bn.bias, mean, var, bn.eps, d)

    def channel_affine(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Eval-mode (scale, shift) per channel, float64: the field's values repeated over
        its d channels (what :func:`~.plain.export_sequence` folds into the conv before)."""
        return bn_scale_shift(self.bn, self.in_type.field.dim)

    @torch.no_grad()
    def _update_running(self, mean: torch.Tensor, var: torch.Tensor, n: int) -> None:
        """nn.BatchNorm's running-statistics update (unbiased variance)."""
        bn = self.bn
        bn.num_batches_tracked.add_(1)
        m = bn.momentum if bn.momentum is not None else 1.0 / float(bn.num_batches_tracked)
        bn.running_mean.lerp_(mean, m)
        bn.running_var.lerp_(var * (n / max(n - 1, 1)), m)


class FieldNorm(TypedModule):
    """Per-sample normalization of each field over its channels and space (GroupNorm with
    one group per field), with a per-field affine: the Neural ePDO generator's norm."""

    def __init__(self, feature: FeatureType, eps: float = 1e-5) -> None:
        super().__init__()
        self.in_type = self.out_type = feature
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(feature.count))
        self.bias = nn.Parameter(torch.zeros(feature.count))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        d = self.in_type.field.dim
        return F.group_norm(
            x,
            self.in_type.count,
            self.weight.repeat_interleave(d),
            self.bias.repeat_interleave(d),
            self.eps,
        )
