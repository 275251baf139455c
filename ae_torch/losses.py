"""Reconstruction losses (mirrors ae_jax/losses.py). Each takes the model, so BCE can use logits."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def mse(model, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``nn.MSELoss()``: the plain mean of squared errors (``optax.l2_loss`` would be half of it)."""
    return F.mse_loss(model(x), target)


def bce(model, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``nn.BCEWithLogitsLoss()`` on the decoder's logits (no clamping at log(0) = -100 needed)."""
    return F.binary_cross_entropy_with_logits(model.decode_logits(model.encode(x)), target)


LOSSES = {"mse": mse, "bce": bce}
