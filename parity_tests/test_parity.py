"""Forward / loss / gradient parity for every preset, float32 (highest precision) and float64."""

import numpy as np
import pytest

from ae_core import PRESETS, epoch_batches, get_spec, model_inputs
from ae_core.training import default_loss
from ae_parity.parity import TOLERANCES, diff, forward_parity

pytestmark = pytest.mark.usefixtures("strict_promotion")


@pytest.fixture(scope="module")
def batches(train):
    idx = epoch_batches(seed=0, epoch=0, n=len(train), batch_size=64)[0]
    return {name: model_inputs(spec, train.images[idx], "float64") for name, spec in PRESETS.items()}


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_encodings_reconstructions_loss_and_every_gradient_agree(preset, dtype, batches):
    spec = get_spec(preset)
    rows = forward_parity(spec, dtype, batches[preset], seed=0)
    names = {r.quantity for r in rows}
    modes = [" (eval)", " (train)"] if spec.noise_shapes() or spec.has("batchnorm1d", "batchnorm2d") else [""]
    assert {f"{q}{m}" for q in ("encodings", "reconstructions") for m in modes} <= names
    assert f"loss ({default_loss(spec)})" in names
    if spec.is_vae:
        assert {"loss vae recon", "loss vae kl"} <= names  # the two terms, each compared on its own
    assert {f"grad {k}" for k in spec.param_shapes()} <= names  # every parameter
    failures = [f"{r.quantity}: {r.kind} {r.value:.3e} > {r.tol:.0e}" for r in rows if not r.ok]
    assert not failures, failures
    assert all(r.tol == TOLERANCES[dtype][r.group][1] for r in rows)


def test_the_harness_catches_a_wrong_mapping(train):
    """A model whose weights are NOT transposed on transfer must fail: the tolerance is not vacuous."""
    import jax.numpy as jnp
    import torch

    import ae_jax
    import ae_torch
    from ae_core import init_state_dict

    spec = get_spec("mlp16")
    sd = init_state_dict(spec, 0, "float32")
    jm = ae_jax.build(spec)
    for b in ae_jax.bindings(jm):  # the pitfall: copy torch weights without transposing
        value = sd[b.name]
        b.variable.set_value(jnp.asarray(value.reshape(b.variable.shape)))
    tm = ae_torch.build(spec, seed=0)
    x = model_inputs(spec, train.images[:32], "float32")
    max_abs, _ = diff(jm(jnp.asarray(x)), tm(torch.from_numpy(x)).detach().numpy())
    assert max_abs > 1e-2


def test_diff_is_relative_to_the_reference_scale():
    assert diff(np.array([1.0, 2.001]), np.array([1.0, 2.0])) == pytest.approx((1e-3, 5e-4))
    with pytest.raises(ValueError, match="shapes differ"):
        diff(np.zeros(2), np.zeros(3))
