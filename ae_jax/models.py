"""The Flax NNX autoencoders, built from an ``ae_core`` spec.

Mirrors ``ae_torch/models.py``: a spec is built as its model graph (``spec.to_graph()``), the
:class:`Autoencoder` is the NNX graph module (``ae_jax/graph.py``) of it. ``encoder`` / ``decoder`` are
``nnx.List`` of NNX layers (one per layer spec, from the builders in ``ae_jax/layers.py``) at the same
positions as the torch modules, so the NNX path ``encoder.0.kernel`` is the torch name
``encoder.0.weight`` (in NNX layout; see ``ae_jax/convert.py``).

Images: the models take and return torch's channels-first (N, C, H, W) so both sides see the same
arrays; inside, NNX convolutions run channels-last (N, H, W, C), XLA's native layout, and their
outputs stay so through the elementwise ops up to the next image layer (``ae_jax/graph.py``).

Train-mode randomness (dropout masks, denoising corruption, the VAE's eps) is supplied as ``noise``
(``{layer name: array}`` from ``ae_core.noise``, channels first), the same arrays the torch model
gets. ``model.train()`` / ``model.eval()`` switch modes as in torch (NNX sets ``deterministic`` /
``use_running_average`` on every layer that has them).
"""

from __future__ import annotations

import contextlib

import jax
import jax.numpy as jnp
from flax import nnx

from ae_core import ModelSpec, check_dtype, get_spec, init_state_dict

from ae_core.graph import Graph

from .convforms import check_form, conv_forms
from .graph import GraphModule
from .numerics import jnp_dtype
from .weights import load_state_dict


class Autoencoder(GraphModule):
    """``x_hat = decode(encode(x))``; x is (batch, *spec.input_shape).

    The NNX graph module (``ae_jax/graph.py``) of ``spec.to_graph()`` (``ae_core.lowering``), as the torch
    one is. ``noise``: ``{layer name: array}`` from ``ae_core.noise`` for the train-mode random layers.
    """

    def __init__(self, spec: ModelSpec, *, rngs: nnx.Rngs, dtype=jnp.float32):
        super().__init__(spec.to_graph(), rngs=rngs, dtype=dtype)
        self.spec = spec

    def decode_logits(self, z: jax.Array, noise=None) -> jax.Array:
        """The decoder without its final Sigmoid (for BCE from logits)."""
        if not self.spec.has_logits:
            raise ValueError(f"{self.spec.name}: the decoder does not end in a Sigmoid, it has no logits")
        return self.run("decode_logits", z, noise=noise)

    def outputs(self, x: jax.Array, noise=None) -> dict[str, jax.Array]:
        """Everything a loss needs, in one pass: ``code``, ``recon``, and where the model has them,
        ``logits`` (decoder ending in Sigmoid) and ``mu`` / ``logvar`` (VAE)."""
        return dict(self.run("outputs", x, noise=noise))

    def __call__(self, x: jax.Array, noise=None) -> jax.Array:
        return self.run("forward", x, noise=noise)


def build(name_or_spec: str | ModelSpec | Graph, *, rngs: nnx.Rngs | None = None, dtype="float32",
          seed: int | None = None, conv_form: str | None = None) -> Autoencoder | GraphModule:
    """A preset (by name), a spec or a model graph (``ae_core.graph``: a ported torch model) as an NNX
    module.

    ``seed=None``: drawn from ``rngs`` (default ``nnx.Rngs(0)``) with PyTorch's default distributions.
    ``seed=S``: the framework-free weights of ``ae_core.init_state_dict(spec, S)``, the very numbers
    ``ae_torch.build(seed=S)`` gets. ``dtype="float64"`` turns on ``jax_enable_x64``. ``conv_form``: how
    the convolutions are computed (``ae_jax.convforms``: "auto", "plain" or "gemm"; the same numbers;
    default: that of the enclosing ``conv_forms`` context, else "auto").
    """
    spec = name_or_spec if isinstance(name_or_spec, Graph) else get_spec(name_or_spec)
    dtype = check_dtype(dtype)
    forms = contextlib.nullcontext() if conv_form is None else conv_forms(check_form(conv_form))
    cls = GraphModule if isinstance(spec, Graph) else Autoencoder

    def make(spec, **kwargs):
        with forms:
            return cls(spec, **kwargs)

    if seed is None:
        return make(spec, rngs=rngs if rngs is not None else nnx.Rngs(0), dtype=jnp_dtype(dtype))
    # The weights come from numpy: build the module abstractly (shapes only) and load them, instead of
    # compiling every layer's random initialisation only to overwrite it (mlp9: 0.4 s instead of 6 s).
    model = nnx.eval_shape(lambda: make(spec, rngs=nnx.Rngs(0), dtype=jnp_dtype(dtype)))
    load_state_dict(model, init_state_dict(spec, seed, dtype))  # strict: every variable gets its value
    if any(isinstance(leaf, jax.ShapeDtypeStruct) for leaf in jax.tree.leaves(nnx.state(model))):
        raise RuntimeError(f"{spec.name}: a variable has no value in init_state_dict")  # an ae_core/ae_jax bug
    return model
