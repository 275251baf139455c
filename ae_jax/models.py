"""The Flax NNX autoencoders, built from an ``ae_core`` spec.

Mirrors ``ae_torch/models.py``: ``encoder`` / ``decoder`` are ``nnx.Sequential`` of ``nnx.Linear``
and activation functions at the same positions, so the NNX path ``encoder.layers.0.kernel`` is the
torch name ``encoder.0.weight`` (transposed; see ``ae_jax/convert.py``).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from flax import nnx

from ae_core import ModelSpec, check_dtype, get_spec, init_state_dict
from ae_core.spec import Activation, Linear, LayerSpec

from .numerics import jnp_dtype

_ACTIVATIONS = {
    "relu": jax.nn.relu,
    "tanh": jnp.tanh,
    "sigmoid": jax.nn.sigmoid,
    # torch's nn.GELU() is the exact erf form; jax.nn.gelu defaults to the tanh approximation.
    "gelu": functools.partial(jax.nn.gelu, approximate=False),
    "identity": lambda x: x,
}


def torch_uniform(fan_in: int):
    """PyTorch's default Linear init, U(-1/sqrt(fan_in), 1/sqrt(fan_in)), as a JAX initializer."""
    bound = 1.0 / fan_in ** 0.5

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


def make_layer(layer: LayerSpec, *, rngs: nnx.Rngs, dtype) -> nnx.Module | object:
    """One NNX module (or parameter-free function) for one layer spec."""
    if isinstance(layer, Linear):
        init = torch_uniform(layer.in_features)
        return nnx.Linear(layer.in_features, layer.out_features, use_bias=layer.bias, dtype=dtype,
                          param_dtype=dtype, kernel_init=init, bias_init=init, rngs=rngs)
    if isinstance(layer, Activation):
        return _ACTIVATIONS[layer.name]
    raise TypeError(f"ae_jax has no module for layer spec {layer!r}")


class Autoencoder(nnx.Module):
    """``x_hat = decode(encode(x))``; x is (batch, *spec.input_shape)."""

    def __init__(self, spec: ModelSpec, *, rngs: nnx.Rngs, dtype=jnp.float32):
        self.spec = spec
        self.encoder = nnx.Sequential(*(make_layer(l, rngs=rngs, dtype=dtype) for l in spec.encoder))
        self.decoder = nnx.Sequential(*(make_layer(l, rngs=rngs, dtype=dtype) for l in spec.decoder))

    def encode(self, x: jax.Array) -> jax.Array:
        return self.encoder(x)

    def decode(self, z: jax.Array) -> jax.Array:
        return self.decoder(z)

    def decode_logits(self, z: jax.Array) -> jax.Array:
        """The decoder without its final Sigmoid (for BCE from logits)."""
        if self.spec.decoder[-1] != Activation("sigmoid"):
            raise ValueError(f"{self.spec.name}: the decoder does not end in a Sigmoid, it has no logits")
        for layer in self.decoder.layers[:-1]:
            z = layer(z)
        return z

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.decode(self.encode(x))


def build(name_or_spec: str | ModelSpec, *, rngs: nnx.Rngs | None = None, dtype="float32",
          seed: int | None = None) -> Autoencoder:
    """A preset (by name) or a spec as an NNX module.

    ``seed=None``: drawn from ``rngs`` (default ``nnx.Rngs(0)``) with PyTorch's default distributions.
    ``seed=S``: the framework-free weights of ``ae_core.init_state_dict(spec, S)``, the very numbers
    ``ae_torch.build(seed=S)`` gets. ``dtype="float64"`` turns on ``jax_enable_x64``.
    """
    from .convert import load_state_dict

    spec = get_spec(name_or_spec)
    dtype = check_dtype(dtype)
    model = Autoencoder(spec, rngs=rngs if rngs is not None else nnx.Rngs(0), dtype=jnp_dtype(dtype))
    if seed is not None:
        load_state_dict(model, init_state_dict(spec, seed, dtype))
    return model
