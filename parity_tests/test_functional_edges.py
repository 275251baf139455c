"""Elementwise functions at the edges of their range, JAX against torch, values and gradients: a formula
whose unused branch overflows gives a NaN gradient through ``jnp.where`` although its value is right."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import jax
import jax.numpy as jnp

from ae_jax import functional as JF
from ae_jax.losses import _bce_with_logits

# far beyond exp's range in float32 (~88) and float64 (~709), both signs, and ordinary values
EDGES = np.array([-1000.0, -100.0, -30.0, -1.0, 0.0, 0.5, 19.9, 20.0, 20.1, 30.0, 100.0, 800.0])


def _torch_value_and_grad(fn, x: np.ndarray):
    t = torch.tensor(x, requires_grad=True)
    fn(t).sum().backward()
    return fn(t).detach().numpy(), t.grad.numpy()


def _jax_value_and_grad(fn, x: np.ndarray):
    value, grad = jax.value_and_grad(lambda v: jnp.sum(fn(v)))(jnp.asarray(x))
    return np.asarray(fn(jnp.asarray(x))), np.asarray(grad)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name, jfn, tfn", [
    ("softplus", JF.softplus, F.softplus),
    ("softplus beta 2 threshold 1", lambda v: JF.softplus(v, 2.0, 1.0), lambda v: F.softplus(v, 2.0, 1.0)),
    ("elu", lambda v: JF.elu(v, 0.7), lambda v: F.elu(v, 0.7)),
])
def test_activations_match_torch_with_finite_gradients_everywhere(dtype, name, jfn, tfn):
    x = EDGES.astype(dtype)
    tv, tg = _torch_value_and_grad(tfn, x)
    jv, jg = _jax_value_and_grad(jfn, x)
    assert np.isfinite(jg).all(), f"{name}: non-finite gradient at {x[~np.isfinite(jg)]}"
    info = np.finfo(dtype)
    # values within a few ulps (below the smallest normal number: XLA:CPU flushes subnormals to zero);
    # gradients, of order 1 here, within a few ulps of 1 (jax differentiates expm1 as expm1 + 1, torch as exp)
    np.testing.assert_allclose(jv, tv, rtol=4 * info.eps, atol=info.tiny, err_msg=name)
    np.testing.assert_allclose(jg, tg, rtol=4 * info.eps, atol=4 * info.eps, err_msg=name)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_bce_with_logits_is_torchs_form(dtype):
    """BCE from logits against ``F.binary_cross_entropy_with_logits`` elementwise, over extreme logits and
    targets in [0, 1], values and gradients, within a few ulps (the same formula as torch's)."""
    rng = np.random.default_rng(0)
    logits = np.concatenate([EDGES, rng.normal(0, 4, 200)]).astype(dtype)
    target = rng.random(logits.shape).astype(dtype)
    t_logits = torch.tensor(logits, requires_grad=True)
    tv = F.binary_cross_entropy_with_logits(t_logits, torch.tensor(target), reduction="none")
    tv.sum().backward()
    jv, jg = jax.value_and_grad(lambda l: jnp.sum(_bce_with_logits(l, jnp.asarray(target))))(jnp.asarray(logits))
    jv = np.asarray(_bce_with_logits(jnp.asarray(logits), jnp.asarray(target)))
    eps = np.finfo(dtype).eps
    assert np.isfinite(np.asarray(jg)).all()
    np.testing.assert_allclose(jv, tv.detach().numpy(), rtol=8 * eps, atol=8 * eps)
    np.testing.assert_allclose(np.asarray(jg), t_logits.grad.numpy(), rtol=8 * eps, atol=8 * eps)
