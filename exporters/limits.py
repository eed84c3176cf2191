"""The sanity limits of serving, in one place.

An artifact's metadata and an input file both declare sizes before anything is allocated:
``epdo.input_shape`` says how big one model input is, an image header how many pixels it
decodes to, a ``.npy`` header what shape it holds. Each declared size is checked here before
memory is spent on it, so a crafted 200-byte file costs an error line, not gigabytes. The
limits a real user could outgrow are read from an environment variable when they are
checked (``EPDO_MAX_IMAGE_PIXELS=400000000 epdo predict model.onnx scan.tif`` raises one for
one command); the error that reports a limit names its variable.

=========================  =================================  ===========================
limit                      default                            raise with
=========================  =================================  ===========================
model input H x W          :data:`MAX_MODEL_PIXELS`           ``EPDO_MAX_MODEL_PIXELS``
(``epdo.input_shape``)     (4096 x 4096)
pixels of one input image  :data:`MAX_IMAGE_PIXELS`           ``EPDO_MAX_IMAGE_PIXELS``
                           (100 million)                      (and Pillow's own guard,
                                                              ``PIL.Image.MAX_IMAGE_PIXELS``,
                                                              beyond ~179 million)
inputs held in memory at   :data:`MAX_BATCH_BYTES` (1 GiB)    fixed (``--batch-size`` is
once by ``predict_files``                                     lowered to fit; the results
                                                              do not change)
TorchScript code inflated  :data:`MAX_ARCHIVE_INFLATION`      fixed
on load                    (256 MiB)
=========================  =================================  ===========================
"""

from __future__ import annotations

from epdo.zoo.envlimits import IMAGE_PIXELS, MAX_IMAGE_PIXELS, Limit, LimitSettingError

__all__ = [
    "IMAGE_PIXELS",
    "MAX_ARCHIVE_INFLATION",
    "MAX_BATCH_BYTES",
    "MAX_IMAGE_PIXELS",
    "MAX_MODEL_PIXELS",
    "MODEL_PIXELS",
    "Limit",
    "LimitSettingError",
]

MAX_MODEL_PIXELS = 4096 * 4096
"""The largest model input (height x width) an artifact may declare in ``epdo.input_shape``:
16.8 million pixels, a 200 MB float32 RGB input (the shipped zoo's inputs are 28 x 28 and
32 x 32). A crafted shape of 100000 x 100000 would make every image cost 40 GB."""

MAX_ARCHIVE_INFLATION = 256 << 20
"""The most bytes the compressed entries of a TorchScript archive may inflate by (256 MiB;
torch deflates only the model's code, a few hundred KiB for the largest shipped spec): a
zip bomb is refused before it is read."""

MAX_BATCH_BYTES = 1 << 30
"""The most bytes of preprocessed inputs :func:`epdo.exporters.runtime.predict_files` holds at
once (1 GiB): a batch is made smaller when its inputs would need more."""


MODEL_PIXELS = Limit(MAX_MODEL_PIXELS, "EPDO_MAX_MODEL_PIXELS", "pixels")
"""The limit on the model input that ``epdo.input_shape`` declares."""
