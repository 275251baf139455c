"""Explicit numerics: dtypes and matmul precision."""

from __future__ import annotations

import contextlib

import jax
import jax.numpy as jnp

from ae_core import check_dtype


def jnp_dtype(dtype) -> jnp.dtype:
    """The JAX dtype for "float32"/"float64"; float64 switches on ``jax_enable_x64`` (a global flag)."""
    name = check_dtype(dtype)
    if name == "float64" and not jax.config.jax_enable_x64:
        jax.config.update("jax_enable_x64", True)
    return jnp.dtype(name)


@contextlib.contextmanager
def matmul_precision(precision: str = "highest"):
    """``jax.default_matmul_precision`` as a context: "highest" for parity (full float32 passes)."""
    with jax.default_matmul_precision(precision):
        yield
