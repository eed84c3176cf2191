"""Opening the files a user names (artifacts, inputs) without being stalled by them: the
exporters' name for :mod:`epdo.zoo.files`, where :func:`open_regular` is defined (the image
reader of training uses it too, and ``zoo`` never imports ``exporters``)."""

from __future__ import annotations

from epdo.zoo.files import NotRegularFileError, open_regular

__all__ = ["NotRegularFileError", "open_regular"]
