"""Losses (mirrors ae_jax/losses.py). Each takes the model and the supplied noise; every loss is a mean
over the batch, so the gradient scale does not depend on the batch size."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def mse(model, x: torch.Tensor, target: torch.Tensor, noise=None) -> torch.Tensor:
    """``nn.MSELoss()``: the plain mean of squared errors (``optax.l2_loss`` would be half of it)."""
    return F.mse_loss(model.outputs(x, noise)["recon"], target)


def bce(model, x: torch.Tensor, target: torch.Tensor, noise=None) -> torch.Tensor:
    """``nn.BCEWithLogitsLoss()`` on the decoder's logits (no clamping at log(0) = -100 needed)."""
    return F.binary_cross_entropy_with_logits(model.outputs(x, noise)["logits"], target)


def vae_terms(model, x: torch.Tensor, target: torch.Tensor, noise=None) -> dict[str, torch.Tensor]:
    """The VAE's two terms, each summed per example and averaged over the batch:
    ``recon`` = BCE from logits summed over pixels, ``kl`` = KL(N(mu, sigma^2) || N(0, 1)) summed over
    the latent dimensions = -0.5 * sum(1 + logvar - mu^2 - exp(logvar))."""
    out = model.outputs(x, noise)
    n = x.shape[0]
    recon = F.binary_cross_entropy_with_logits(out["logits"], target, reduction="sum") / n
    mu, logvar = out["mu"], out["logvar"]
    kl = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp()) / n
    return {"recon": recon, "kl": kl}


def vae(model, x: torch.Tensor, target: torch.Tensor, noise=None) -> torch.Tensor:
    """The negative ELBO per example, batch mean: ``recon + kl`` of :func:`vae_terms`."""
    terms = vae_terms(model, x, target, noise)
    return terms["recon"] + terms["kl"]


def graph_mse(model, x: torch.Tensor, target: torch.Tensor, noise=None) -> torch.Tensor:
    """A model graph's "mse" (``ae_core.graph_training``): ``nn.MSELoss()`` on the output of its loss graph
    (``loss_graph(graph, "mse")``: its first output)."""
    return F.mse_loss(model(x, noise=noise), target)


def graph_bce(model, x: torch.Tensor, target: torch.Tensor, noise=None) -> torch.Tensor:
    """A model graph's "bce": ``nn.BCEWithLogitsLoss()`` on the output of ``loss_graph(graph, "bce")``, the
    logits going into the sigmoid of its first output."""
    return F.binary_cross_entropy_with_logits(model(x, noise=noise), target)


LOSSES = {"mse": mse, "bce": bce, "vae": vae}
GRAPH_LOSSES = {"mse": graph_mse, "bce": graph_bce}  # a model graph's losses, by the same names
