"""Explicit numerics on the JAX side: dtypes, float64, matmul precision.

- float64 needs ``jax_enable_x64``, a process-wide JAX flag that cannot be scoped (arrays made while it
  is on keep their dtype after it is off). :func:`enable_x64` is the ONE place the library switches it
  on: when a float64 model or trainer is built (:func:`jnp_dtype`) or a float64 comparison starts. It is
  never switched off again (float32 code is unaffected: float32 arrays stay float32).
- Matmul precision is never set process-wide by the library: every compiled function is traced inside
  ``jax.default_matmul_precision(...)`` (:func:`matmul_precision`), which restores the previous value.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ae_core import check_dtype

PRECISIONS = ("highest", "default")


def enable_x64() -> None:
    """Switch on ``jax_enable_x64`` (idempotent); see the module docstring for why it is global."""
    if not jax.config.jax_enable_x64:
        jax.config.update("jax_enable_x64", True)


def jnp_dtype(dtype) -> jnp.dtype:
    """The JAX dtype for "float32"/"float64"; float64 calls :func:`enable_x64`."""
    name = check_dtype(dtype)
    if name == "float64":
        enable_x64()
    return jnp.dtype(name)


def matmul_precision(precision: str):
    """A context: JAX matmuls traced inside it use ``precision`` ("highest": full float32, no TF32/bf16
    passes; "default": the backend's default); the previous setting comes back on exit."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; expected one of {PRECISIONS}")
    return jax.default_matmul_precision(precision)
