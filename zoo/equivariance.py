"""Equivariance report of a model: how its logits change when the input is rotated.

For an invariant classifier f and a group element g, the relative error is
``||f(g.x) - f(x)|| / ||f(x) - mean f||`` over a batch (the change relative to how much the
logits vary between inputs). For a segmentation model, whose output is a map of per-pixel
logits that must turn with the input, it is ``||f(g.x) - g.f(x)|| / ||f(x) - mean f||``,
inside the inscribed disk (where a resampled rotation loses nothing). It is ~0 (float
round-off) for the elements that map the pixel grid onto itself, and small but non-zero
for rotations that need interpolation. The same figures for a plain CNN of the same input
size put them in scale.

For rotations that need resampling, the report also gives the *resampling floor*: the same
figure for ``f(R_-t R_t x)``, an input rotated there and back, which differs from x only by
interpolation error. A model that is invariant up to discretization deviates about as much
under the rotation as under the round trip; a plain CNN deviates far more. (Freshly
initialised PDO networks are very sensitive to the high-frequency interpolation error,
because their order-4 stencils amplify it, so both figures are large before training.)

To be meaningful the model must not be constant: BatchNorm statistics are calibrated on the
inputs first (a freshly initialized network in eval mode often outputs nearly the same
logits for every input), and the report states how much the logits vary across inputs.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from .builder import ZooModel, build_model
from .groups import Group
from .spec import Spec, SpecError, load_spec
from .transforms import disk_mask, rotate_image

DEFAULT_ANGLES = (15.0, 45.0)


@dataclass
class CheckRow:
    """One transformation of the input and the relative change of the logits."""

    transform: str
    degrees: float
    flip: bool
    grid_exact: bool
    in_group: bool
    model_error: float
    cnn_error: float | None
    model_floor: float | None = None  # resampling alone: f(R_-t R_t x) vs f(x)
    cnn_floor: float | None = None


@dataclass
class EquivarianceReport:
    group: str
    dtype: str
    batch: int
    output_variation: float  # std of logits across inputs / mean |logit|
    rows: list[CheckRow] = field(default_factory=list)
    maps: bool = False  # per-pixel logits, compared with the moved map

    @property
    def max_exact_error(self) -> float:
        errs = [r.model_error for r in self.rows if r.grid_exact and r.in_group]
        return max(errs) if errs else 0.0

    def to_dict(self) -> dict:
        out = asdict(self)
        out["max_exact_error"] = self.max_exact_error
        return out


def smooth_images(
    n: int, channels: int, height: int, width: int, seed: int = 0, dtype=torch.float64
) -> torch.Tensor:
    """Random smooth images inside the inscribed disk: noise blurred by a Gaussian of
    standard deviation 2 pixels (about the stroke width of a digit), (n, C, H, W)."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, channels, height, width, generator=gen, dtype=dtype)
    t = torch.arange(-6, 7, dtype=dtype)
    k1 = torch.exp(-(t**2) / 8.0)
    k2 = (k1[:, None] * k1[None, :]) / (k1.sum() ** 2)
    weight = k2.expand(channels, 1, 13, 13).contiguous()
    x = F.conv2d(x, weight, padding=6, groups=channels)
    x = x / x.std()
    return x * disk_mask(height, width, dtype)


@torch.no_grad()
def calibrate_batchnorm(model: nn.Module, inputs: torch.Tensor, batch_size: int = 16) -> None:
    """Recompute every BatchNorm's running statistics as exact averages over ``inputs``."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [(m.momentum, m.training) for m in norms]
    model.train()
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average
    for start in range(0, inputs.shape[0], batch_size):
        model(inputs[start : start + batch_size])
    for m, (momentum, _) in zip(norms, saved, strict=True):
        m.momentum = momentum
    model.eval()


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    """||a - b|| / ||b - mean_batch(b)||: the change of the logits under the transform,
    relative to how much they vary between inputs (so a shared offset cannot hide it)."""
    spread = (b - b.mean(dim=0, keepdim=True)).norm().clamp_min(1e-300)
    return float((a - b).norm() / spread)


def _flip_rows(x: torch.Tensor) -> torch.Tensor:
    return torch.flip(x, dims=(-2,))


def plain_cnn_spec(channels: int, size: tuple[int, int], classes: int,
                   dense: bool = False) -> dict:
    """A small plain CNN (group C1) for the same input, used as the reference column: a
    classifier, or for a segmentation (``dense``) two convolutions and a dense head."""
    if dense:
        return {
            "name": "reference_cnn",
            "group": "C1",
            "input": {"channels": channels, "size": list(size)},
            "layers": [
                {"op": "conv", "channels": 16, "kernel": 5},
                {"op": "conv", "channels": 16, "kernel": 5},
                {"op": "dense_head", "classes": classes},
            ],
        }
    return {
        "name": "reference_cnn",
        "group": "C1",
        "input": {"channels": channels, "size": list(size)},
        "layers": [
            {"op": "conv", "channels": 32, "kernel": 5},
            {"op": "conv", "channels": 64, "kernel": 5, "pool": 2},
            {"op": "conv", "channels": 64, "kernel": 5, "pool": 2},
            {"op": "head", "classes": classes, "hidden": [64]},
        ],
    }


def moved(x: torch.Tensor, degrees: float, flip: bool) -> torch.Tensor:
    """``x`` (B, C, H, W) flipped (rows, y -> -y) when ``flip``, then rotated by ``degrees``
    counter-clockwise (exactly for multiples of 90, else bilinearly): the spatial action of
    the element ``rot(degrees) flip^flip`` on images and maps."""
    return rotate_image(_flip_rows(x) if flip else x, degrees)


@torch.no_grad()
def equivariance_report(
    model: nn.Module,
    group: Group,
    inputs: torch.Tensor,
    angles: tuple[float, ...] = DEFAULT_ANGLES,
    reference: nn.Module | None = None,
    dense: bool = False,
) -> EquivarianceReport:
    """Relative change of ``model``'s logits under rotations (and reflections for D_N).

    Rows: every multiple of 90 degrees (and each composed with the reflection y -> -y when
    the group has reflections), then ``angles`` (resampled bilinearly). ``inputs`` should be
    masked to the inscribed disk so that interpolated rotations lose nothing at the corners.
    Both models are expected in eval mode with calibrated statistics. ``dense``: the models
    output maps (B, K, H, W), compared with the map of the untransformed input moved the
    same way, inside the inscribed disk.
    """
    h, w = inputs.shape[-2:]
    disk = disk_mask(h, w, inputs.dtype) if dense else None

    def seen(y: torch.Tensor) -> torch.Tensor:
        return y * disk if disk is not None else y

    y = model(inputs)
    spread = float(y.std(dim=0).mean() / y.abs().mean().clamp_min(1e-300))
    y_ref = reference(inputs) if reference is not None else None
    report = EquivarianceReport(group.name, str(inputs.dtype).replace("torch.", ""),
                                inputs.shape[0], spread, maps=dense)
    flips = (False, True) if group.reflections else (False,)
    cases = [(90.0 * q, f) for f in flips for q in range(4) if q or f]
    cases += [(a, False) for a in angles]
    for degrees, flip in cases:
        x = moved(inputs, degrees, flip)
        quarter = abs(degrees / 90.0 - round(degrees / 90.0)) < 1e-12
        steps = degrees * group.N / 360.0
        in_group = abs(steps - round(steps)) < 1e-9 and (not flip or group.reflections)
        name = f"rot {degrees:g}°" + (" ∘ flip" if flip else "")

        def error(f: nn.Module, base: torch.Tensor, x: torch.Tensor = x,
                  degrees: float = degrees, flip: bool = flip) -> float:
            target = moved(base, degrees, flip) if dense else base
            return _rel(seen(f(x)), seen(target))

        cnn_err = error(reference, y_ref) if reference is not None else None
        row = CheckRow(name, degrees, flip, quarter, in_group, error(model, y), cnn_err)
        if not quarter:  # the round trip: f(R_-t R_t x) against f(x)
            back = rotate_image(x, -degrees)
            row.model_floor = _rel(seen(model(back)), seen(y))
            if reference is not None:
                row.cnn_floor = _rel(seen(reference(back)), seen(y_ref))
        report.rows.append(row)
    return report


def require_classes(spec: Spec) -> int:
    """The number of class scores ``spec``'s network ends with; a SpecError at its last
    layer when it ends in fields (nothing to be invariant)."""
    classes = spec.plan.num_classes
    if classes is None:
        last = spec.plan.layers[-1]
        raise SpecError(
            f"epdo check needs class scores: the last layer of {spec.name} is "
            f"{last.op!r}, not a head or dense_head",
            file=spec.source_file,
            path=last.path,
        )
    return classes


def calibrated_model(
    spec, seed: int = 0, dtype: torch.dtype = torch.float64, calibration: int = 32
) -> tuple[ZooModel, torch.Tensor]:
    """``spec``'s model with random weights (seeded) in ``dtype``, its BatchNorm statistics
    calibrated on ``calibration`` smooth random images (returned too: a reference model is
    calibrated on the same ones), in eval mode."""
    torch.manual_seed(seed)
    model = build_model(spec).to(dtype)
    c, h, w = model.input_shape
    calib = smooth_images(calibration, c, h, w, seed=seed + 1, dtype=dtype)
    calibrate_batchnorm(model, calib)
    return model, calib


def check_model(
    model: ZooModel,
    inputs: torch.Tensor,
    calib: torch.Tensor,
    seed: int = 0,
    angles: tuple[float, ...] = DEFAULT_ANGLES,
) -> EquivarianceReport:
    """The :func:`equivariance_report` of ``model`` (eval mode, in ``inputs``' dtype) on
    ``inputs``, beside a plain CNN of the same input and classes (seeded weights, BatchNorm
    calibrated on ``calib``). The logits are invariant (a map equivariant) under the group
    of the head's input, after any restriction."""
    classes = require_classes(model.spec)
    last = model.plan.layers[-1]
    c, h, w = model.input_shape
    dense = model.plan.task == "segment"
    torch.manual_seed(seed)
    reference = build_model(plain_cnn_spec(c, (h, w), classes, dense)).to(inputs.dtype)
    calibrate_batchnorm(reference, calib)
    return equivariance_report(model, last.inp.group, inputs, angles, reference, dense)


def check_spec(
    spec,
    batch: int = 8,
    seed: int = 0,
    angles: tuple[float, ...] = DEFAULT_ANGLES,
    float64: bool = True,
    calibration: int = 32,
) -> EquivarianceReport:
    """Build ``spec`` with random weights (seeded), calibrate its BatchNorm statistics on
    ``calibration`` smooth random images, and report its equivariance on ``batch`` others,
    beside a plain CNN treated the same way."""
    dtype = torch.float64 if float64 else torch.float32
    spec = spec if isinstance(spec, Spec) else load_spec(spec)
    require_classes(spec)  # refused before anything is built
    model, calib = calibrated_model(spec, seed, dtype, calibration)
    c, h, w = model.input_shape
    inputs = smooth_images(batch, c, h, w, seed=seed + 2, dtype=dtype)
    return check_model(model, inputs, calib, seed, angles)
