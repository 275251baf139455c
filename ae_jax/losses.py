"""Losses (mirrors ae_torch/losses.py). Each takes the model and the supplied noise; every loss is a mean
over the batch, so the gradient scale does not depend on the batch size."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def _bce_with_logits(logits: jax.Array, target: jax.Array) -> jax.Array:
    """Elementwise, torch's form (``binary_cross_entropy_with_logits`` in torch 2.x): (1 - t) l - log_sigmoid(l).
    Not ``optax.sigmoid_binary_cross_entropy``, whose two log_sigmoid terms round differently from torch."""
    return (1 - target) * logits - jax.nn.log_sigmoid(logits)


def mse(model, x: jax.Array, target: jax.Array, noise=None) -> jax.Array:
    """torch's ``nn.MSELoss()``: the plain mean of squared errors. NOT ``optax.l2_loss`` (which is 0.5x)."""
    return jnp.mean(jnp.square(model.outputs(x, noise)["recon"] - target))


def bce(model, x: jax.Array, target: jax.Array, noise=None) -> jax.Array:
    """torch's ``nn.BCEWithLogitsLoss()`` (mean over elements)."""
    return jnp.mean(_bce_with_logits(model.outputs(x, noise)["logits"], target))


def vae_terms(model, x: jax.Array, target: jax.Array, noise=None) -> dict[str, jax.Array]:
    """The VAE's two terms, each summed per example and averaged over the batch (see ae_torch)."""
    out = model.outputs(x, noise)
    n = x.shape[0]
    recon = jnp.sum(_bce_with_logits(out["logits"], target)) / n
    mu, logvar = out["mu"], out["logvar"]
    kl = -0.5 * jnp.sum(1 + logvar - jnp.square(mu) - jnp.exp(logvar)) / n
    return {"recon": recon, "kl": kl}


def vae(model, x: jax.Array, target: jax.Array, noise=None) -> jax.Array:
    """The negative ELBO per example, batch mean: ``recon + kl`` of :func:`vae_terms`."""
    terms = vae_terms(model, x, target, noise)
    return terms["recon"] + terms["kl"]


def graph_mse(model, x: jax.Array, target: jax.Array, noise=None) -> jax.Array:
    """A model graph's "mse" (``ae_core.graph_training``): torch's ``nn.MSELoss()`` on the output of its
    loss graph (``loss_graph(graph, "mse")``: its first output)."""
    return jnp.mean(jnp.square(model(x, noise=noise) - target))


def graph_bce(model, x: jax.Array, target: jax.Array, noise=None) -> jax.Array:
    """A model graph's "bce": torch's ``nn.BCEWithLogitsLoss()`` on the output of ``loss_graph(graph,
    "bce")``, the logits going into the sigmoid of its first output."""
    return jnp.mean(_bce_with_logits(model(x, noise=noise), target))


LOSSES = {"mse": mse, "bce": bce, "vae": vae}
GRAPH_LOSSES = {"mse": graph_mse, "bce": graph_bce}  # a model graph's losses, by the same names
