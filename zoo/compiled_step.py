"""A ``torch.compile``'d training step timed against the eager one (``epdo bench --compile``).

The step is the one :func:`epdo.zoo.benchmark.train_throughput` times (forward, cross-entropy,
backward, Adam step) with the model's forward and the loss compiled by ``torch.compile``
(TorchDynamo captures the graph, AOTAutograd derives the backward, Inductor generates the
code); the optimizer step stays eager. A Neural ePDO layer enters the graph as the registered
operators ``epdo::stencil_product`` and its backward (:mod:`epdo.zoo.layers.product_op`), so
the compiled code calls epdo's fused kernels rather than spelling the product in plain ops.

Figures (:func:`compiled_step_figures`):

- ``train_compiled_images_per_s``: images/s of the compiled step (median of ``iters`` after
  two warm-up steps: the first compiles, the second recompiles once when the field
  BatchNorms leave their first-update momentum, see :mod:`epdo.zoo.layers.norms`);
- ``train_compiled_vs_eager``: the eager step's median time over the compiled one's, the
  two (on two copies of the model, each with its own Adam) timed in alternating rounds
  (:func:`~epdo.zoo.benchmark.alternate_medians`), so that a machine whose speed drifts
  moves both sides alike;
- ``train_compile_s``: seconds of those two warm-up steps (tracing and code generation);
- ``train_compiled_graphs`` and ``train_compiled_graph_breaks``: what TorchDynamo captured
  of the forward and loss (one graph and no break: nothing of the step runs outside the
  compiled code).
"""

from __future__ import annotations

import copy
import time
from typing import Any

import torch
import torch.nn.functional as F

from .benchmark import alternate_medians, random_batch, time_calls
from .builder import ZooModel

__all__ = ["compiled_step_figures", "graph_breaks"]

_WARMUP = 2


def _loss_fn(model: ZooModel) -> Any:
    def loss(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(model(x), y)

    return loss


def graph_breaks(model: ZooModel, x: torch.Tensor, y: torch.Tensor) -> tuple[int, int]:
    """(graphs, graph breaks) TorchDynamo captures of a training-mode forward and loss of a
    copy of ``model`` on ``(x, y)`` (the model itself is left as it was)."""
    twin = copy.deepcopy(model).train()
    torch._dynamo.reset()
    explained = torch._dynamo.explain(_loss_fn(twin))(x, y)
    torch._dynamo.reset()
    return explained.graph_count, explained.graph_break_count


def compiled_step_figures(model: ZooModel, batch_size: int, iters: int,
                          device: torch.device, backend: str = "inductor") -> dict[str, Any]:
    """The figures of the module docstring for a copy of ``model`` (left as it was) at
    ``batch_size`` images per step on ``device``; ``backend`` is ``torch.compile``'s (tests
    use ``"aot_eager"``: the same graphs without code generation)."""
    twin = copy.deepcopy(model).to(device).train()
    eager_twin = copy.deepcopy(twin)
    x, y = random_batch(twin, batch_size, device)
    graphs, breaks = graph_breaks(twin, x, y)
    compiled = torch.compile(_loss_fn(twin), backend=backend)
    compiled_step = _adam_step(twin, compiled, x, y)
    eager_step = _adam_step(eager_twin, _loss_fn(eager_twin), x, y)
    start = time.perf_counter()
    for _ in range(_WARMUP):
        compiled_step()
    compile_s = time.perf_counter() - start
    seconds = time_calls(compiled_step, iters, device, warmup=0)
    eager_s, compiled_s = alternate_medians(eager_step, compiled_step, iters, device)
    torch._dynamo.reset()
    return {"train_compiled_images_per_s": batch_size / seconds,
            "train_compiled_vs_eager": eager_s / compiled_s, "train_compile_s": compile_s,
            "train_compiled_graphs": graphs, "train_compiled_graph_breaks": breaks}


def _adam_step(model: ZooModel, loss_fn: Any, x: torch.Tensor, y: torch.Tensor) -> Any:
    """One training step of ``model`` through ``loss_fn`` with its own Adam."""
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        loss_fn(x, y).backward()
        opt.step()

    return step
