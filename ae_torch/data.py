"""MNIST for the PyTorch side, through ``torchvision.datasets.MNIST`` (mirrors ae_jax/data.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torchvision

from ae_core import ModelSpec, check_dtype, get_spec, model_inputs
from ae_core import mnist as core_mnist

from .numerics import torch_dtype


def mnist_dataset(split: str = "train", source: str = "auto", data_dir=None,
                  transform=None) -> torchvision.datasets.MNIST:
    """The torchvision dataset over the project's MNIST files (full, downloaded, or the offline sample).

    Files are fetched/written by ``ae_core.mnist.ensure`` (same mirrors and checksums as torchvision),
    so torchvision and the JAX side read the very same bytes -- which is checked: the raw files are
    validated first (``ae_core.mnist.read_split``: magic numbers, sizes, counts, labels 0..9, which
    torchvision does not check), and what torchvision then reads must be those digits (torchvision prefers
    a legacy ``processed/training.pt`` cache to the raw files: a stale one is refused, named).
    """
    if split not in core_mnist.SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {core_mnist.SPLITS}")
    _, root = core_mnist.ensure(data_dir, source)
    images, labels = core_mnist.read_split(Path(root) / "MNIST" / "raw", split)
    ds = torchvision.datasets.MNIST(str(root), train=(split == "train"), download=False, transform=transform)
    if not (np.array_equal(ds.data.numpy(), images) and np.array_equal(ds.targets.numpy(), labels)):
        legacy = Path(ds.processed_folder) / (ds.training_file if split == "train" else ds.test_file)
        where = legacy if legacy.exists() else Path(root) / "MNIST"
        raise core_mnist.MnistFileError(where, f"torchvision reads other {split} digits than the raw IDX files "
                                               f"(a stale cache from an older torchvision?): remove it")
    return ds


def mnist_inputs(spec: str | ModelSpec, split: str = "train", source: str = "auto", data_dir=None,
                  dtype="float32", device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """The whole split as model inputs (N, *input_shape) and labels (N,), read through torchvision."""
    spec = get_spec(spec)
    ds = mnist_dataset(split, source, data_dir)
    x = model_inputs(spec, ds.data.numpy(), check_dtype(dtype))
    return (torch.from_numpy(x).to(device=device, dtype=torch_dtype(dtype)),
            ds.targets.to(device=device))

