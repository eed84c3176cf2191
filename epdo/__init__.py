"""epdo: rotation-equivariant networks from partial differential operators.

The library lives in :mod:`epdo.zoo`, the command line in :mod:`epdo.cli` and the
exporters in :mod:`epdo.exporters`.
"""

import os

# PyTorch's CPU allocator backs buffers of 2 MB and more with transparent huge pages when
# this is set before torch starts: a fresh feature map then costs ~4x fewer page faults
# (the zoo's eval forward is ~25% faster on a CPU). Set THP_MEM_ALLOC_ENABLE=0 to opt out;
# it has no effect when torch was imported before epdo.
os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")

__version__ = "0.1.0"
