"""Identical starts: PyTorch's default initial distribution, drawn framework-free."""

import math

import numpy as np
import pytest
import torch

import ae_jax
import ae_torch
from ae_core import get_spec, init_state_dict

from helpers import assert_trees_all_close


def test_same_seed_gives_identical_weights_in_both_frameworks():
    for dtype in ("float32", "float64"):
        t, j = ae_torch.build("mlp9", seed=11, dtype=dtype), ae_jax.build("mlp9", seed=11, dtype=dtype)
        assert_trees_all_close(ae_jax.state_dict(j), ae_torch.state_dict(t), exact=True)
    assert not np.array_equal(init_state_dict(get_spec("mlp9"), 1)["encoder.0.weight"],
                              init_state_dict(get_spec("mlp9"), 2)["encoder.0.weight"])


@pytest.mark.parametrize("fan_in, fan_out", [(784, 128), (18, 9)])
def test_distribution_matches_torch_default_linear_init(fan_in, fan_out):
    """torch's own nn.Linear init is the reference: same bound, same uniform spread."""
    torch.manual_seed(0)
    ref = np.concatenate([torch.nn.Linear(fan_in, fan_out).weight.detach().numpy().ravel() for _ in range(40)])
    from ae_core import Linear, ModelSpec

    spec = ModelSpec("probe", encoder=(Linear(784, fan_out),) if fan_in == 784 else (Linear(784, 18), Linear(18, 9)),
                     decoder=(Linear(fan_out, 784),))
    name = "encoder.0.weight" if fan_in == 784 else "encoder.1.weight"
    ours = np.concatenate([init_state_dict(spec, s)[name].ravel() for s in range(40)])
    bound = 1 / math.sqrt(fan_in)
    for sample in (ref, ours):
        assert np.abs(sample).max() <= bound
        assert np.abs(sample).max() > 0.99 * bound
        assert sample.std() == pytest.approx(bound / math.sqrt(3), rel=0.03)  # std of U(-b, b)
    # the JAX-RNG path (build without seed) draws the same distribution
    jm = ae_jax.build(spec)
    w = ae_jax.state_dict(jm)[name]
    assert np.abs(w).max() <= bound and w.std() == pytest.approx(bound / math.sqrt(3), rel=0.15)


@pytest.mark.parametrize("module, name", [
    (lambda: torch.nn.Conv2d(16, 32, 3, stride=2, padding=1), "encoder.2.weight"),
    (lambda: torch.nn.ConvTranspose2d(32, 16, 3, stride=2, padding=1, output_padding=1), "decoder.3.weight"),
])
def test_conv_init_bound_matches_torch(module, name):
    """torch's fan_in for ConvTranspose2d comes from weight.size(1) (out_channels): both bounds must agree."""
    torch.manual_seed(0)
    ref = np.concatenate([module().weight.detach().numpy().ravel() for _ in range(20)])
    ours = np.concatenate([init_state_dict(get_spec("conv"), s)[name].ravel() for s in range(20)])
    assert np.abs(ours).max() <= np.abs(ref).max() * 1.001 + 1e-9
    assert np.abs(ours).max() == pytest.approx(np.abs(ref).max(), rel=0.01)
    assert ours.std() == pytest.approx(ref.std(), rel=0.03)
