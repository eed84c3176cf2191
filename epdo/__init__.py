"""epdo: rotation-equivariant networks from partial differential operators.

The library lives in :mod:`epdo.zoo`, the command line in :mod:`epdo.cli` and the
exporters in :mod:`epdo.exporters`.
"""

__version__ = "0.1.0"
