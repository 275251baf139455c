"""MNIST for the JAX side, read with numpy only (mirrors ae_torch/data.py)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ae_core import ModelSpec, check_dtype, get_spec, model_inputs
from ae_core import mnist as core_mnist

from .numerics import jnp_dtype


def mnist_inputs(spec: str | ModelSpec, split: str = "train", source: str = "auto", data_dir=None,
                 dtype="float32", device: jax.Device | None = None) -> tuple[jax.Array, jax.Array]:
    """The whole split as model inputs (N, *input_shape) and labels (N,), resident on ``device``."""
    spec = get_spec(spec)
    data = core_mnist.load(split, source, data_dir)
    x = model_inputs(spec, data.images, check_dtype(dtype))
    x = jax.device_put(jnp.asarray(x, dtype=jnp_dtype(dtype)), device)
    return x, jax.device_put(jnp.asarray(data.labels, dtype=jnp.int32), device)
