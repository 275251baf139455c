"""Framework-free batch order: both frameworks see identical batches in identical order."""

from __future__ import annotations

import numpy as np

from .errors import UsageError


def epoch_permutation(seed: int, epoch: int, n: int) -> np.ndarray:
    """The shuffled order of ``n`` examples for one epoch: one permutation per (seed, epoch)."""
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([int(seed), int(epoch)])))
    return rng.permutation(n)


def epoch_batches(seed: int, epoch: int, n: int, batch_size: int, shuffle: bool = True) -> np.ndarray:
    """Indices of one epoch's batches, shape (steps, batch_size), int32.

    The last partial batch is dropped (``drop_last=True``), so every step has the same shape and a
    whole epoch compiles to one ``lax.scan``; with n=4,000 and batch 32 that drops nothing.
    """
    if batch_size <= 0:
        raise UsageError(f"batch_size must be positive, got {batch_size}")
    if batch_size > n:
        raise UsageError(f"batch_size {batch_size} is larger than the dataset ({n} examples)")
    order = epoch_permutation(seed, epoch, n) if shuffle else np.arange(n)
    steps = n // batch_size
    return order[: steps * batch_size].reshape(steps, batch_size).astype(np.int32)
