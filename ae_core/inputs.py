"""From MNIST pixels to what a model eats, with numpy only (both frameworks get the same arrays)."""

from __future__ import annotations

import math

import numpy as np

from .errors import UsageError
from .graph import Graph
from .spec import ModelSpec


def pixels(images: np.ndarray, dtype="float32") -> np.ndarray:
    """uint8 (N, 28, 28) -> (N, 784) in [0, 1], like ``ToTensor()`` followed by a flatten."""
    images = np.asarray(images)
    return (images.reshape(len(images), -1).astype(np.float64) / 255.0).astype(dtype)


def features128(images: np.ndarray, dtype="float32") -> np.ndarray:
    """128-d non-negative feature vectors from digits, for the ``vec64`` preset.

    Random features: ``relu(pixels @ P)`` with ``P`` a fixed (seeded) 784x128 Gaussian projection
    scaled by ``sqrt(2 / 784)`` -- like an untrained ReLU layer. Each image's features depend on that
    image alone, so any batch, split or framework gets the same numbers.
    """
    rng = np.random.Generator(np.random.PCG64(128))
    projection = rng.standard_normal((784, 128)) * np.sqrt(2.0 / 784)
    return np.maximum(pixels(images, "float64") @ projection, 0.0).astype(dtype)


def graph_inputs(graph: Graph, images: np.ndarray, dtype="float32") -> np.ndarray:
    """MNIST digits in a model graph's per-example ``input_shape`` (784 values: (784,), (1, 28, 28),
    (28, 28)...): the pixels in [0, 1], reshaped in C order (as ``x.view(n, *shape)``)."""
    shape = tuple(graph.input_shape)
    if math.prod(shape) != 784:
        raise UsageError(f"{graph.name} takes inputs of shape {shape} per example; MNIST digits are 784 values "
                         f"(28x28): trace the model on a batch of shape (N, 784), (N, 1, 28, 28) or (N, 28, 28)")
    return pixels(images, dtype).reshape(len(images), *shape)


def model_inputs(spec: ModelSpec | Graph, images: np.ndarray, dtype="float32") -> np.ndarray:
    """The input array for ``spec`` (its ``input`` kind; a model graph: its ``input_shape``) made from MNIST
    digits."""
    if isinstance(spec, Graph):
        return graph_inputs(spec, images, dtype)
    if spec.input == "mnist":
        return pixels(images, dtype)
    if spec.input == "mnist_image":
        return pixels(images, dtype).reshape(len(images), 1, 28, 28)
    if spec.input == "mnist_rows":
        return pixels(images, dtype).reshape(len(images), 28, 28)
    if spec.input == "features128":
        return features128(images, dtype)
    raise ValueError(f"no input pipeline for kind {spec.input!r}")
