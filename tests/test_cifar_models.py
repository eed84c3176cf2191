"""The PDO-eConvs CIFAR family as published: parameter counts, forward, recipe, export."""

from __future__ import annotations

import pytest
import torch

from epdo.exporters.inference import inference_model
from epdo.zoo import build_model, list_specs, load_spec
from epdo.zoo.layers.residual import Residual
from epdo.zoo.training.schedule import make_optimizer

# The PDO-eConvs paper's parameter counts (its CIFAR tables; same model for both datasets).
PAPER_PARAMS = {
    "p6_resnet26": 0.36e6,
    "p6m_resnet26": 0.37e6,
    "p8_resnet44": 2.62e6,
    "p8_wrn26": 4.6e6,
}
PAPER_SPECS = [f"{d}_pdoeconv_{m}" for d in ("cifar10", "cifar100") for m in PAPER_PARAMS]


def test_the_family_is_shipped() -> None:
    assert set(PAPER_SPECS) <= set(list_specs())
    assert "cifar10_pdoeconv_p8_resnet44_rot90" in list_specs()


@pytest.mark.parametrize("name", PAPER_SPECS)
def test_parameter_count_within_two_percent_and_forward(name: str) -> None:
    model = build_model(name)
    target = PAPER_PARAMS[name.split("_pdoeconv_")[1]]
    count = sum(p.numel() for p in model.parameters())
    assert abs(count - target) / target < 0.02, f"{name}: {count:,} vs {target:,.0f}"
    model.eval()
    with torch.no_grad():
        y = model(torch.rand(2, 3, 32, 32))
    classes = 100 if name.startswith("cifar100") else 10
    assert y.shape == (2, classes) and torch.isfinite(y).all()


def test_p8_resnet44_is_the_codes_network() -> None:
    """2,621,693 parameters: the count of the code's TensorFlow variables for p = 8, n = 7
    (3x3 arrays, 1x1 shortcuts, BN scale and shift, the dense layer and its bias)."""
    model = build_model("cifar10_pdoeconv_p8_resnet44")
    assert sum(p.numel() for p in model.parameters()) == 2_621_693
    spec = model.spec
    assert spec.group == "C8" and spec.discretization == "fd"
    blocks = [b for b in model.blocks if isinstance(b, Residual)]
    assert len(blocks) == 21 and all(b.pre is not None and not b.relu for b in blocks)
    widths = [b.body[0][0].out_type.count for b in blocks]
    assert widths == [11] * 7 + [23] * 7 + [45] * 7
    strides = [b.body[0][0].stride for b in blocks]
    assert strides == [1] * 7 + [2] + [1] * 6 + [2] + [1] * 6


def test_recipe_is_the_codes() -> None:
    spec = load_spec("cifar10_pdoeconv_p8_resnet44")
    t = spec.train
    assert (t.optimizer, t.nesterov, t.momentum, t.lr, t.batch_size, t.epochs) == (
        "sgd", True, 0.9, 0.1, 128, 300)
    assert t.lr_milestones == {150: 0.01, 225: 0.001}
    assert (t.weight_decay, t.weight_decay_on, t.precision) == (1e-3, "weights", "fp32")
    assert t.augment.crop_padding == 4 and t.augment.flip
    model = build_model(spec)
    opt = make_optimizer(model, t)
    decayed, free = opt.param_groups
    assert opt.defaults["nesterov"]
    assert decayed["weight_decay"] == 1e-3 and free["weight_decay"] == 0.0
    norm_params = {id(p) for m in model.modules() if "BatchNorm" in type(m).__name__
                   for p in m.parameters(recurse=False)}
    assert norm_params and norm_params <= {id(p) for p in free["params"]}
    assert not norm_params & {id(p) for p in decayed["params"]}
    head_bias = model.blocks[-1].mlp[-1].bias
    assert any(p is head_bias for p in free["params"])


def test_preact_blocks_and_headless_pooling_export_exactly() -> None:
    """The inference graph (BatchNorm folded, pre-activation as a channel affine) equals
    the eval-mode model on a small network of the same kinds of layers."""
    spec = {
        "group": "C4", "discretization": "fd", "kernel_basis": "raw",
        "input": {"channels": 3, "size": 12, "mean": [0.5, 0.4, 0.3], "std": [0.2, 0.25, 0.3]},
        "defaults": {"coefficients": "h9"},
        "layers": [
            {"op": "pdo_conv", "fields": 2, "bn": False, "relu": False},
            {"op": "residual", "preact": True, "body": [
                {"op": "pdo_conv", "fields": 2},
                {"op": "pdo_conv", "fields": 2, "bn": False, "relu": False}]},
            {"op": "residual", "preact": True, "body": [
                {"op": "pdo_conv", "fields": 3, "stride": 2},
                {"op": "pdo_conv", "fields": 3, "bn": False, "relu": False}]},
            {"op": "head", "classes": 5, "preact": True, "group_pool": "none",
             "spatial_pool": "avg"},
        ],
    }
    torch.manual_seed(0)
    model = build_model(spec)
    x = torch.rand(6, 3, 12, 12)
    model.train()
    with torch.no_grad():
        model(x)  # move the running statistics off their start
    model.eval()
    inf = inference_model(model, model.spec)
    with torch.no_grad():  # both take raw images and normalise them by the spec's mean, std
        torch.testing.assert_close(inf(x), model(x), rtol=1e-4, atol=1e-5)
    assert model.blocks[-1].mlp[0].in_features == 3 * 4  # every channel, no group pooling


def test_h9_spec_errors_name_the_layer() -> None:
    from epdo.zoo.spec import SpecError

    base = {"group": "C8", "input": {"channels": 1, "size": 16}}
    bad_order = {**base, "layers": [{"op": "pdo_conv", "fields": 2, "order": 2,
                                     "coefficients": "h9"}, {"op": "head", "classes": 2}]}
    with pytest.raises(SpecError, match=r"layers\[0\]\.order.*order: 4"):
        load_spec(bad_order)
    quotient = {**base, "layers": [{"op": "pdo_conv", "fields": 2, "type": "quotient2",
                                    "coefficients": "h9"}, {"op": "head", "classes": 2}]}
    with pytest.raises(SpecError, match=r"layers\[0\]\.type.*regular"):
        load_spec(quotient)
    adam = {**base, "layers": [{"op": "pdo_conv", "fields": 2}, {"op": "head", "classes": 2}],
            "train": {"optimizer": "adam", "nesterov": True}}
    with pytest.raises(SpecError, match="nesterov"):
        load_spec(adam)
