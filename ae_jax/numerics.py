"""Explicit numerics: dtypes (matmul precision is jax.default_matmul_precision, set by the callers)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ae_core import check_dtype


def jnp_dtype(dtype) -> jnp.dtype:
    """The JAX dtype for "float32"/"float64"; float64 switches on ``jax_enable_x64`` (a global flag)."""
    name = check_dtype(dtype)
    if name == "float64" and not jax.config.jax_enable_x64:
        jax.config.update("jax_enable_x64", True)
    return jnp.dtype(name)

