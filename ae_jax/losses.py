"""Reconstruction losses (mirrors ae_torch/losses.py)."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def mse(x_hat: jax.Array, x: jax.Array) -> jax.Array:
    """torch's ``nn.MSELoss()``: the plain mean of squared errors. NOT ``optax.l2_loss`` (which is 0.5x)."""
    return jnp.mean(jnp.square(x_hat - x))


LOSSES = {"mse": mse}
