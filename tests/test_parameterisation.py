"""The papers' parameterisation of the kernels, pinned against numbers of their code.

- Linear ePDO (and 1x1) layers: every parameter multiplies a unit-norm kernel basis element
  and the weights start N(0, C_out / n_params), so each derivative order holds its share of
  basis elements of the initial kernel energy (the Neural ePDO code normalises each basis
  element of ``Group.base`` and draws ``kaiming_init``).
- Neural ePDO generator: its basis (coefficients times stencils) is orthonormal
  (``ortho_basis`` in that code).
- Old checkpoints (format 1, raw coefficients, wide fd) still rebuild the model they trained.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from epdo.zoo import build_model, stencils
from epdo.zoo.checkpoint import CheckpointError, load_model, save_checkpoint
from epdo.zoo.groups import parse_group
from epdo.zoo.layers.conv import PDOConv
from epdo.zoo.layers.expansion import KernelExpansion
from epdo.zoo.layers.neural_epdo import STENCIL_SCALE, NeuralEPDO
from epdo.zoo.layers.norms import FieldBatchNorm, SeededBatchNorm1d
from epdo.zoo.reps import FeatureType, parse_field_type
from epdo.zoo.spec import load_spec
from epdo.zoo.training.device import resolve_precision
from epdo.zoo.training.errors import TrainError

C16 = parse_group("C16")

# Per-order share (orders 0..4) of the expected initial kernel energy in the Neural ePDO
# code (Group.base per order, each element normalised, kaiming_init), computed by running
# that code for C16 with fd and gauss stencils (both give these shares).
REFERENCE_SHARE = {
    ("trivial", "regular"): [1 / 15, 2 / 15, 3 / 15, 4 / 15, 5 / 15],
    ("regular", "regular"): [1 / 15, 2 / 15, 3 / 15, 4 / 15, 5 / 15],
    ("regular", "quotient4"): [1 / 15, 2 / 15, 3 / 15, 4 / 15, 5 / 15],
    ("quotient4", "regular"): [1 / 15, 2 / 15, 3 / 15, 4 / 15, 5 / 15],
    ("quotient4", "quotient4"): [0.2, 0.0, 0.2, 0.0, 0.6],
    ("trivial", "quotient4"): [0.2, 0.0, 0.2, 0.0, 0.6],
}


def feature(name: str, count: int = 1) -> FeatureType:
    return FeatureType(parse_field_type(C16, name), count)


def expected_energy(expansion: KernelExpansion, std: float) -> float:
    """E sum(K^2) for i.i.d. N(0, std^2) weights: std^2 * |dK/dw|_F^2 (K is linear in w)."""
    weights = list(expansion.weights)

    def kernel(*ws: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            for p, w in zip(weights, ws, strict=True):
                p.copy_(w)
            return expansion()

    total = 0.0
    for j, w in enumerate(weights):
        for idx in range(w.numel()):
            probe = [torch.zeros_like(p) for p in weights]
            probe[j].view(-1)[idx] = 1.0
            total += float(kernel(*probe).pow(2).sum())
    return std**2 * total


def order_shares(pair: tuple[str, str], method: str, basis: str) -> np.ndarray:
    """Share of each derivative order in the expected initial energy of a 1-field layer."""
    full = stencils.stencils(method, 4).astype(np.float64)
    energies = []
    for k in range(5):
        masked = np.zeros_like(full)
        lo, hi = stencils.n_operators(k - 1) if k else 0, stencils.n_operators(k)
        masked[lo:hi] = full[lo:hi]
        exp = KernelExpansion(feature(pair[0]), feature(pair[1]), 4, masked, basis).double()
        n_params = sum(w.numel() for w in exp.weights)
        std = (exp.out_type.channels / n_params) ** 0.5
        energies.append(expected_energy(exp, std))
    e = np.array(energies)
    return e / e.sum()


@pytest.mark.parametrize("pair", sorted(REFERENCE_SHARE))
def test_initial_energy_per_order_matches_the_papers_code(pair: tuple[str, str]) -> None:
    np.testing.assert_allclose(
        order_shares(pair, "gauss", "normalized"), REFERENCE_SHARE[pair], atol=1e-9
    )


def test_raw_coefficients_put_the_energy_in_the_fourth_order() -> None:
    """The pre-paper parameterisation, kept as ``kernel_basis: raw``: ~90% in order 4."""
    raw = order_shares(("regular", "regular"), "gauss", "raw")
    assert raw[4] > 0.85
    normalized = order_shares(("regular", "regular"), "fd", "normalized")
    np.testing.assert_allclose(normalized, REFERENCE_SHARE[("regular", "regular")], atol=1e-9)


def test_basis_elements_have_unit_norm_and_init_has_unit_energy_per_output() -> None:
    layer = PDOConv(feature("trivial"), feature("regular", 24), 4, "gauss").double()
    exp = layer.expansion
    # one-hot weights give unit-norm kernels
    for w in exp.weights:
        w.data.zero_()
    first = exp.weights[0]
    for idx in (0, 7, first.numel() - 1):
        first.data.view(-1).zero_()
        first.data.view(-1)[idx] = 1.0
        assert float(exp().detach().pow(2).sum()) == pytest.approx(1.0, rel=1e-12)
    # He-style rule of the papers' code: E sum(K^2) per output channel = 1
    torch.manual_seed(0)
    big = PDOConv(feature("regular", 16), feature("regular", 16), 4, "fd")
    energy = big.kernel().detach().pow(2).flatten(1).sum(1).mean()
    assert float(energy) == pytest.approx(1.0, rel=0.05)


@pytest.mark.parametrize("field", ["regular", ["regular", "quotient4"]])
def test_generator_basis_is_orthonormal(field: str | list[str]) -> None:
    """The map theta -> generated stencil weights has orthonormal columns per (o, m) pair
    (times the 1/5 stencil scale), and spans the same space as the raw coefficients."""
    ft = FeatureType(parse_field_type(C16, field), 4)
    torch.manual_seed(0)
    maps = {}
    for basis in ("normalized", "raw"):
        layer = NeuralEPDO(ft, ft, order=4, g=2, s=1, reduction=1, basis=basis).double()
        theta = layer.theta
        cols = []
        for idx in range(theta[0, 0].numel()):  # the (o, m) = (0, 0) block
            with torch.no_grad():
                theta.zero_()
                theta[0, 0].view(-1)[idx] = 1.0
            cols.append(layer.generator_weight().detach().reshape(-1).clone())
        maps[basis] = torch.stack(cols, 1)
    gram = maps["normalized"].T @ maps["normalized"] / STENCIL_SCALE**2
    np.testing.assert_allclose(gram.numpy(), np.eye(gram.shape[0]), atol=1e-10)
    both = torch.cat([maps["normalized"], maps["raw"]], 1)
    assert torch.linalg.matrix_rank(both) == torch.linalg.matrix_rank(maps["raw"])


def test_generator_init_follows_the_papers_kaiming_rule() -> None:
    ft = FeatureType(parse_field_type(C16, "regular"), 16)
    layer = NeuralEPDO(ft, ft, order=4, g=4, s=4, reduction=1)
    expected = (25 / (15 * layer.num_mid / layer.s)) ** 0.5
    assert float(layer.theta.detach().std()) == pytest.approx(expected, rel=0.05)


def test_batchnorm_running_statistics_start_from_the_first_batch() -> None:
    bn = FieldBatchNorm(feature("regular", 3))
    x = (torch.randn(8, 48, 5, 5) * 0.01).contiguous(memory_format=torch.channels_last)
    bn.train()
    bn(x)
    fields = x.permute(1, 0, 2, 3).reshape(3, -1)
    np.testing.assert_allclose(bn.bn.running_var.numpy(), fields.var(1).numpy(), rtol=1e-4)
    assert bn.bn.momentum == 0.1
    bn(x * 10)  # later batches use the usual momentum
    expected = 0.9 * fields.var(1) + 0.1 * (fields * 10).var(1)
    np.testing.assert_allclose(bn.bn.running_var.numpy(), expected.numpy(), rtol=1e-4)
    one = SeededBatchNorm1d(4)
    v = torch.randn(32, 4) * 0.02
    one.eval()
    one(v)  # an evaluation before training does not use up the first update
    one.train()
    one(v)
    np.testing.assert_allclose(one.running_var.numpy(), v.var(0).numpy(), rtol=1e-4)
    assert set(one.state_dict()) == set(torch.nn.BatchNorm1d(4).state_dict())


def test_a_loaded_state_dict_says_whether_the_first_update_is_done() -> None:
    """A resumed model is past its first update (its next batch uses the usual momentum);
    a model loaded from an untrained state is not. The check is Python state, set when the
    state dict is loaded, not a device read in the forward."""
    x = (torch.randn(8, 48, 5, 5) * 0.01).contiguous(memory_format=torch.channels_last)
    trained = FieldBatchNorm(feature("regular", 3)).train()
    trained(x)
    built = FieldBatchNorm(feature("regular", 3))
    resumed = copy.deepcopy(built).train()  # a copy reads its own state, not the original's
    resumed.load_state_dict(trained.state_dict())
    before = resumed.bn.running_var.clone()
    resumed(x * 10)
    fields = (x * 10).permute(1, 0, 2, 3).reshape(3, -1)
    np.testing.assert_allclose(resumed.bn.running_var.numpy(),
                               (0.9 * before + 0.1 * fields.var(1)).numpy(), rtol=1e-4)
    fresh = SeededBatchNorm1d(4)
    fresh.load_state_dict(SeededBatchNorm1d(4).state_dict())
    v = torch.randn(32, 4) * 0.02
    fresh.train()(v)
    np.testing.assert_allclose(fresh.running_var.numpy(), v.var(0).numpy(), rtol=1e-4)


@pytest.mark.parametrize(
    "name", ["mnist_regular_gauss", "mnist_regular_fd", "mnist_pdoeconv_gauss",
             "mnist_quotient_gauss", "mnist_d16c16_gauss"],
)
def test_paper_specs_are_fp32_and_normalized(name: str) -> None:
    spec = load_spec(name)
    assert spec.train.precision == "fp32"
    assert spec.kernel_basis == "normalized"
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert resolve_precision(None, cpu, spec.train.precision).dtype is None
    on_gpu = resolve_precision(None, cuda, spec.train.precision)
    assert on_gpu.dtype is None and on_gpu.tf32  # float32 with TF32 matmuls, as the papers
    assert resolve_precision(False, cuda, "amp").dtype is None  # --no-amp opts out
    with pytest.raises(TrainError, match="CUDA"):
        resolve_precision(True, cpu, spec.train.precision)  # --amp needs a GPU


TINY = {
    "group": "C4",
    "input": {"channels": 1, "size": 12},
    "layers": [
        {"op": "pdo_conv", "fields": 2, "order": 2, "pool": 2},
        {"op": "neural_epdo", "fields": 2, "order": 2, "g": 1},
        {"op": "head", "classes": 3},
    ],
}


def test_format1_checkpoint_rebuilds_the_model_it_trained(tmp_path) -> None:
    """A checkpoint of epdo 0.1 (raw coefficients, wide fd under the name fd) loads as that
    model; its old rbffd stencils no longer exist and are refused in one message."""
    torch.manual_seed(0)
    old = build_model({**TINY, "discretization": "fd_wide", "kernel_basis": "raw"}).eval()
    path = tmp_path / "old.pt"
    save_checkpoint(path, model=old, spec=old.spec, epoch=1)
    data = torch.load(path, weights_only=True)
    spec = dict(data["spec"])
    spec["discretization"] = "fd"
    spec.pop("kernel_basis")
    data.update(format="epdo-checkpoint/1", spec=spec)
    torch.save(data, path)
    model, loaded = load_model(path)
    assert loaded.discretization == "fd_wide" and loaded.kernel_basis == "raw"
    x = torch.rand(2, 1, 12, 12)
    with torch.no_grad():
        torch.testing.assert_close(model(x), old(x))
    data["spec"] = {**spec, "discretization": "rbffd"}
    torch.save(data, path)
    with pytest.raises(CheckpointError, match="retrain"):
        load_model(path)


def test_cli_amp_on_a_cpu_is_one_clear_line(tmp_path) -> None:
    from typer.testing import CliRunner

    from epdo.cli.main import app

    result = CliRunner().invoke(
        app, ["train", "quickstart", "--amp", "--device", "cpu", "--out", str(tmp_path / "r")]
    )
    assert result.exit_code == 2
    assert "--amp needs a CUDA device" in result.output
    assert "Traceback" not in result.output
