"""Reconstruction losses (mirrors ae_torch/losses.py). Each takes the model, so BCE can use logits."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def mse(model, x: jax.Array, target: jax.Array) -> jax.Array:
    """torch's ``nn.MSELoss()``: the plain mean of squared errors. NOT ``optax.l2_loss`` (which is 0.5x)."""
    return jnp.mean(jnp.square(model(x) - target))


def bce(model, x: jax.Array, target: jax.Array) -> jax.Array:
    """torch's ``nn.BCEWithLogitsLoss()``, with torch's stable form max(l, 0) - l*t + log1p(exp(-|l|))."""
    logits = model.decode_logits(model.encode(x))
    return jnp.mean(jnp.maximum(logits, 0) - logits * target + jnp.log1p(jnp.exp(-jnp.abs(logits))))


LOSSES = {"mse": mse, "bce": bce}
