"""MNIST for the PyTorch side, through ``torchvision.datasets.MNIST`` (mirrors ae_jax/data.py)."""

from __future__ import annotations

import torch
import torchvision

from ae_core import ModelSpec, check_dtype, get_spec, model_inputs
from ae_core import mnist as core_mnist

from .numerics import torch_dtype


def mnist_dataset(split: str = "train", source: str = "auto", data_dir=None,
                  transform=None) -> torchvision.datasets.MNIST:
    """The torchvision dataset over the project's MNIST files (full, downloaded, or the offline sample).

    Files are fetched/written by ``ae_core.mnist.ensure`` (same mirrors and checksums as torchvision),
    so torchvision and the JAX side read the very same bytes.
    """
    if split not in core_mnist.SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {core_mnist.SPLITS}")
    _, root = core_mnist.ensure(data_dir, source)
    return torchvision.datasets.MNIST(str(root), train=(split == "train"), download=False,
                                      transform=transform)


def mnist_inputs(spec: str | ModelSpec, split: str = "train", source: str = "auto", data_dir=None,
                  dtype="float32", device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """The whole split as model inputs (N, *input_shape) and labels (N,), read through torchvision."""
    spec = get_spec(spec)
    ds = mnist_dataset(split, source, data_dir)
    x = model_inputs(spec, ds.data.numpy(), check_dtype(dtype))
    return (torch.from_numpy(x).to(device=device, dtype=torch_dtype(dtype)),
            ds.targets.to(device=device))

