"""``python -m epdo.cli``: the same as the ``epdo`` command (used with torchrun)."""

from epdo.cli.main import run

run()
