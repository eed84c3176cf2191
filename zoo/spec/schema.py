"""The spec's own schema: the input, the ``defaults``, the ``train`` section and the
:class:`Spec` that holds them and the layers (each layer's schema is its op's, from
:mod:`epdo.zoo.ops`). Validation here checks each value on its own; the network as a whole
is checked by planning it (:attr:`Spec.plan`). This module knows nothing about tensors.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationInfo,
    field_validator,
    model_validator,
)

from ..groups import Group, parse_group
from ..ops import Layer
from ..ops.base import FieldTypeName, Order, PoolKind
from ..plan import plan_model
from ..stages import ModelPlan
from .limits import MAX_INPUT_CHANNELS

FITS = ("resize", "center_crop")
"""How an image of another size is fitted to the model's input (:class:`InputSpec`)."""
PATH_DATASETS = ("folder", "seg")
"""The datasets that are a folder: ``dataset: KIND:PATH`` reads as ``KIND`` with
``data_dir: PATH``."""

__all__ = ["AugmentSpec", "Defaults", "InputSpec", "Spec", "TrainSpec"]


class _Section(BaseModel):
    """A mapping of the spec: unknown keys are errors, values are frozen, types are strict
    (``true`` is not 1, ``1e9`` and ``"8"`` are not integers) and numbers finite."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


_NAME_CHARACTERS = re.compile(r"^[^/\\\x00-\x1f\x7f-\x9f]+$")


def _check_name(value: str) -> str:
    """A spec's name names folders (``runs/<name>/...``): one plain path component."""
    if not _NAME_CHARACTERS.match(value) or value.strip(". ") == "" or len(value) > 128:
        raise ValueError(
            f"a spec's name must be one file name of at most 128 characters, without / or "
            f"\\ and not . or .. (it names the run folder), got {value[:60]!r}"
        )
    return value


def _check_path_text(value: str | None) -> str | None:
    if value is not None and _CONTROL_CHARACTERS.search(value):
        raise ValueError(f"a path cannot hold control characters, got {value[:60]!r}")
    return value


_CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f-\x9f]")


class InputSpec(_Section):
    """``channels`` trivial fields of size ``size``, normalized by ``(x - mean) / std``.

    ``mean`` / ``std`` are one value for all channels, one per channel, or ``auto``: computed
    per channel on the training split when a run starts (:mod:`epdo.zoo.data.statistics`),
    then written into the run's spec, so the checkpoint and the artifacts hold the numbers.
    A model built from a spec that still says ``auto`` normalises with mean 0 and std 1.

    ``fit`` is how an image of another size becomes ``size`` (the same in training,
    evaluation, export verification and ``epdo predict``, see :mod:`epdo.zoo.data.images`):
    ``resize`` scales the whole image to H×W (the aspect ratio may change); ``center_crop``
    scales it so that it covers H×W and keeps the centre (nothing is stretched, the borders
    of the longer side are cut).
    """

    channels: Annotated[int, Field(ge=1, le=MAX_INPUT_CHANNELS)]
    size: list[int]
    mean: list[float] | Literal["auto"] = Field(default_factory=lambda: [0.0],
                                                validate_default=True)
    std: list[float] | Literal["auto"] = Field(default_factory=lambda: [1.0],
                                               validate_default=True)
    fit: Literal[FITS] = "resize"  # type: ignore[valid-type]

    @field_validator("size", mode="before")
    @classmethod
    def _size_pair(cls, value: Any) -> Any:
        if isinstance(value, int) and not isinstance(value, bool):
            value = [value, value]
        if not (isinstance(value, list | tuple) and len(value) == 2):
            raise ValueError(f"size must be an int or [H, W], got {value!r}")
        return list(value)

    @field_validator("size")
    @classmethod
    def _size_positive(cls, value: list[int]) -> list[int]:
        if min(value) < 1:
            raise ValueError(f"size must be positive, got {value}")
        return value

    @field_validator("mean", "std", mode="before")
    @classmethod
    def _as_list(cls, value: Any, info: ValidationInfo) -> Any:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return [value]
        if value != "auto" and not isinstance(value, list):
            raise ValueError(f"{info.field_name} must be a number, a list of numbers (one per "
                             f"channel) or auto, got {value!r}")
        return value

    @field_validator("mean", "std")
    @classmethod
    def _per_channel(cls, value: list[float] | str,
                     info: ValidationInfo) -> list[float] | str:
        channels = info.data.get("channels")
        if channels is None or value == "auto":
            return value
        if len(value) == 1:
            value = value * channels
        if len(value) != channels:
            raise ValueError(
                f"{info.field_name} needs one value or one per channel ({channels}), "
                f"got {len(value)}"
            )
        if info.field_name == "std" and min(value) <= 0:
            raise ValueError(f"std must be positive, got {value}")
        return value

    @property
    def height(self) -> int:
        return self.size[0]

    @property
    def width(self) -> int:
        return self.size[1]

    @property
    def statistics_known(self) -> bool:
        """Whether ``mean`` and ``std`` are numbers (neither is ``auto``)."""
        return self.mean != "auto" and self.std != "auto"

    def normalization(self) -> tuple[list[float], list[float]]:
        """``(mean, std)``, one per channel; ``auto`` reads as mean 0, std 1."""
        c = self.channels
        mean = [0.0] * c if self.mean == "auto" else list(self.mean)
        std = [1.0] * c if self.std == "auto" else list(self.std)
        return mean, std


class Defaults(_Section):
    """Values copied into every layer that accepts the key and does not set it."""

    type: FieldTypeName | None = None
    order: Order | None = None
    g: Annotated[int, Field(ge=1)] | None = None
    s: Annotated[int, Field(ge=1)] | None = None
    reduction: Annotated[int, Field(ge=1)] | None = None
    bn: bool | None = None
    relu: bool | None = None
    bias: bool | None = None
    pool_kind: PoolKind | None = None
    coefficients: Literal["full", "h9"] | None = None


class ResizedCropSpec(_Section):
    """A random box of the image, resampled to the full H×W (bilinear): its area is a
    fraction ``s`` ~ U[``scale``] of the image's and its aspect ratio (width / height, in
    pixels) is ``r`` with log r ~ U[log ``ratio``] (torchvision's RandomResizedCrop's
    defaults); see :mod:`epdo.zoo.training.augment`."""

    scale: list[float] = Field(default_factory=lambda: [0.08, 1.0])
    """[min, max] fractions of the image's area, 0 < min <= max <= 1."""
    ratio: list[float] = Field(default_factory=lambda: [3 / 4, 4 / 3])
    """[min, max] aspect ratios width / height, 0 < min <= max."""

    @field_validator("scale", "ratio")
    @classmethod
    def _range(cls, value: list[float], info: ValidationInfo) -> list[float]:
        name = info.field_name
        what = "fractions of the image's area" if name == "scale" else "aspect ratios w/h"
        if len(value) != 2:
            raise ValueError(f"{name} must be two numbers [min, max] ({what}), got {value}")
        low, high = value
        if low <= 0 or low > high:
            raise ValueError(f"{name} must be [min, max] with 0 < min <= max ({what}), "
                             f"got {value}")
        if name == "scale" and high > 1:
            raise ValueError(f"scale's max must be at most 1 (the whole image), got {value}")
        return value


class AugmentSpec(_Section):
    """Training-time augmentation (applied in the order: resized crop, rotate, flip, vflip,
    padding crop; :mod:`epdo.zoo.training.augment`)."""

    rotate: bool = False
    """Random rotation, angle uniform in [0°, 360°)."""
    flip: bool = False
    """Horizontal flip with probability 1/2."""
    vflip: bool = False
    """Vertical flip with probability 1/2."""
    crop_padding: Annotated[int, Field(ge=0)] = 0
    """Zero padding by this many pixels, then a random crop back to H×W."""
    resized_crop: ResizedCropSpec | None = None
    """A random box resampled to H×W; null: off, ``true`` or ``{}``: the default ranges."""

    @field_validator("resized_crop", mode="before")
    @classmethod
    def _on_off(cls, value: Any) -> Any:
        """``resized_crop: true`` is the default ranges, ``false`` is off."""
        if value is True:
            return {}
        if value is False:
            return None
        return value


class TrainSpec(_Section):
    """Training settings; ``lr_milestones`` maps an epoch to the learning rate from then on."""

    dataset: Literal[
        "mnist-rot", "rotated-idx", "idx", "sample", "sample-upright", "cifar10", "cifar100",
        "folder", "seg-sample", "seg-sample-upright", "seg",
    ] = "sample"
    """``folder``: the user's images, one subfolder per class, in ``data_dir``
    (:mod:`epdo.zoo.data.folder`); ``folder:PATH`` is read as ``folder`` with ``data_dir:
    PATH``. ``seg``: a segmentation folder (``images/`` and ``masks/``) in ``data_dir``
    (:mod:`epdo.zoo.data.seg_folder`), ``seg:PATH`` likewise; ``seg-sample``: the embedded
    segmentation sample (``seg-sample-upright``: its garments unrotated)."""
    data_dir: Annotated[str | None, AfterValidator(_check_path_text)] = None
    test_fraction: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.2
    """The share of each class held out for testing when a ``folder`` dataset has no
    ``test/`` (or ``val/``) subfolder (a seeded, stratified split); for a ``seg`` folder,
    the share of its image/mask pairs."""
    batch_size: Annotated[int, Field(ge=1)] = 64
    epochs: Annotated[int, Field(ge=1)] = 10
    optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    lr: Annotated[float, Field(gt=0.0)] = 1e-3
    momentum: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.9
    nesterov: bool = False
    weight_decay: Annotated[float, Field(ge=0.0)] = 0.0
    weight_decay_on: Literal["all", "weights"] = "all"
    """all: every parameter (the Neural ePDO code); weights: conv and linear weights only,
    not BatchNorm's scale and shift nor biases (the PDO-eConvs CIFAR code)."""

    lr_milestones: dict[Annotated[int, Field(ge=0)], Annotated[float, Field(gt=0.0)]] = Field(
        default_factory=dict
    )
    augment: AugmentSpec = Field(default_factory=AugmentSpec)
    class_weights: list[Annotated[float, Field(gt=0.0)]] | None = None
    """One positive weight per class for the cross-entropy (``Σ w_t ℓ / Σ w_t`` over the
    images, or the pixels not ignored); none: every class weighs 1."""
    seed: int = 0
    precision: Literal["fp32", "amp"] = "fp32"
    """fp32: float32 (TF32 matmuls on CUDA), the papers' setting; amp: mixed precision on
    CUDA (bf16, or fp16 with a gradient scaler). The CPU always computes in float32."""

    @model_validator(mode="before")
    @classmethod
    def _folder_path(cls, value: Any) -> Any:
        """``dataset: folder:PATH`` -> ``dataset: folder``, ``data_dir: PATH``; likewise
        ``seg:PATH`` -> ``seg``."""
        if isinstance(value, dict) and isinstance(value.get("dataset"), str):
            name = value["dataset"]
            kind = next((k for k in PATH_DATASETS if name.startswith(f"{k}:")), None)
            if kind is not None:
                path = name[len(kind) + 1:]
                if not path:
                    raise ValueError(f"dataset {kind}:PATH needs a path after '{kind}:'")
                given = value.get("data_dir")
                if given is not None and given != path:
                    raise ValueError(f"dataset {name!r} and data_dir {given!r} name two "
                                     "folders; give one")
                value = {**value, "dataset": kind, "data_dir": path}
        return value

    @field_validator("lr_milestones", mode="before")
    @classmethod
    def _epochs_from_json(cls, value: Any) -> Any:
        """JSON writes the epochs as text (``"150"``); they are read back as integers."""
        if isinstance(value, dict):
            return {
                int(k) if isinstance(k, str) and k.isascii() and k.isdigit() and len(k) < 19
                else k: v
                for k, v in value.items()
            }
        return value

    @model_validator(mode="after")
    def _nesterov_needs_sgd(self) -> TrainSpec:
        if self.nesterov and self.optimizer != "sgd":
            raise ValueError(
                f"nesterov: true is a setting of optimizer: sgd, not of {self.optimizer}"
            )
        return self


class Spec(_Section):
    """A validated model spec with ``extends`` resolved and ``defaults`` applied.

    ``source_file`` is the YAML file it came from (None for a dict); it takes no part in
    equality.
    """

    name: Annotated[str, Field(min_length=1), AfterValidator(_check_name)]
    description: str = ""
    group: str
    discretization: Literal["fd", "fd_wide", "gauss", "rbffd"] = "gauss"
    kernel_basis: Literal["normalized", "raw"] = "normalized"
    """normalized: every kernel basis element has unit norm and the Neural ePDO generator's
    basis is orthonormal (the papers' code); raw: the derivative coefficients themselves."""
    input: InputSpec
    defaults: Defaults = Field(default_factory=Defaults)
    layers: Annotated[list[Layer], Field(min_length=1)]
    train: TrainSpec = Field(default_factory=TrainSpec)

    _source_file: str | None = PrivateAttr(default=None)
    _plan: ModelPlan | None = PrivateAttr(default=None)

    @field_validator("group", mode="before")
    @classmethod
    def _known_group(cls, value: Any) -> Any:
        if isinstance(value, str):
            return parse_group(value).name
        return value

    @field_validator("train")
    @classmethod
    def _crop_inside_the_image(cls, value: TrainSpec, info: ValidationInfo) -> TrainSpec:
        given = info.data.get("input")
        padding = value.augment.crop_padding
        if given is not None and padding > max(given.size):
            raise ValueError(
                f"augment.crop_padding={padding} is more than the {max(given.size)}-pixel "
                "input; a random crop pads by a few pixels"
            )
        return value

    @property
    def source_file(self) -> str | None:
        return self._source_file

    @property
    def plan(self) -> ModelPlan:
        """The network's plan (stages and layer plans), computed once per spec."""
        if self._plan is None:
            self._plan = plan_model(self)
        return self._plan

    @property
    def group_obj(self) -> Group:
        """The parsed symmetry group."""
        return parse_group(self.group)

    def resolved(self) -> dict[str, Any]:
        """A plain dict (no ``extends``) that :func:`load_spec` turns back into this spec."""
        data = self.model_dump(mode="python")
        data["defaults"] = {k: v for k, v in data["defaults"].items() if v is not None}
        return data

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Spec):
            return NotImplemented
        return self.resolved() == other.resolved()

    __hash__ = None  # type: ignore[assignment]
