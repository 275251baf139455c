"""Reconstruction losses (mirrors ae_jax/losses.py)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def mse(x_hat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``nn.MSELoss()``: the plain mean of squared errors (optax.l2_loss would be half of it)."""
    return F.mse_loss(x_hat, x)


LOSSES = {"mse": mse}
