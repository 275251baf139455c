"""Reference PyTorch training pieces (mirrors ae_jax/train.py)."""

from __future__ import annotations

import torch

from .losses import LOSSES


def loss_and_grad(model: torch.nn.Module, x: torch.Tensor, target: torch.Tensor | None = None,
                  loss: str = "mse") -> tuple[float, dict[str, torch.Tensor]]:
    """The loss of one batch and ``{parameter name: gradient}``; the model's .grad fields are left clear."""
    model.zero_grad(set_to_none=True)
    value = LOSSES[loss](model(x), x if target is None else target)
    value.backward()
    grads = {name: p.grad.detach().clone() for name, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    return value.item(), grads
