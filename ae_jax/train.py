"""JAX training pieces: pure, jit-compiled functions of (graphdef, state) (mirrors ae_torch/train.py)."""

from __future__ import annotations

import functools

import jax
from flax import nnx

from .losses import LOSSES


@functools.partial(jax.jit, static_argnames=("graphdef", "loss"))
def _loss_and_grad(graphdef, params, rest, x, target, *, loss):
    def loss_fn(p):
        return LOSSES[loss](nnx.merge(graphdef, p, rest)(x), target)

    return jax.value_and_grad(loss_fn)(params)


def loss_and_grad(model: nnx.Module, x: jax.Array, target: jax.Array | None = None,
                  loss: str = "mse") -> tuple[jax.Array, nnx.State]:
    """The loss of one batch and the gradient w.r.t. every ``nnx.Param`` (jit-compiled)."""
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    return _loss_and_grad(graphdef, params, rest, x, x if target is None else target, loss=loss)


@functools.partial(jax.jit, static_argnames=("graphdef",))
def _encode_decode(graphdef, state, x):
    model = nnx.merge(graphdef, state)
    z = model.encode(x)
    return z, model.decode(z)


def encode_decode(model: nnx.Module, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Codes and reconstructions of one batch (jit-compiled)."""
    graphdef, state = nnx.split(model)
    return _encode_decode(graphdef, state, x)
