"""Layering: ae_jax imports without torch, ae_torch without jax, ae_core without either."""

import subprocess
import sys

import pytest


@pytest.mark.parametrize("module, forbidden", [
    ("ae_jax", ("torch", "torchvision")),
    ("ae_jax.data", ("torch", "torchvision")),
    ("ae_torch", ("jax", "flax", "optax")),
    ("ae_torch.data", ("jax", "flax", "optax")),
    ("ae_core", ("torch", "jax", "flax", "optax")),
])
def test_import_isolation(module, forbidden):
    code = f"import {module}, sys; bad = [m for m in {forbidden!r} if m in sys.modules]; assert not bad, bad"
    subprocess.run([sys.executable, "-c", code], check=True)
