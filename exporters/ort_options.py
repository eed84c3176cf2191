"""The onnxruntime session options epdo serves, verifies and benchmarks with, in one place.

A server would set the same: every graph optimisation onnxruntime has (its NCHWc layout
for convolutions included), one operator at a time (``ORT_SEQUENTIAL``; the graph is a
chain, so running branches in parallel gains nothing) with ``threads`` threads inside each
operator (None: onnxruntime's default, one per physical core), and warnings silenced (a
provider that is not there is reported by epdo itself).
"""

from __future__ import annotations

from typing import Any

__all__ = ["session_options"]


def session_options(threads: int | None = None) -> Any:
    """An ``onnxruntime.SessionOptions`` as the module docstring says."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.inter_op_num_threads = 1
    if threads is not None:
        options.intra_op_num_threads = threads
    return options
