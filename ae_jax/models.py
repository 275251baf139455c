"""The Flax NNX autoencoders, built from an ``ae_core`` spec.

Mirrors ``ae_torch/models.py``: ``encoder`` / ``decoder`` are ``nnx.Sequential`` of NNX layers at
the same positions as the torch modules, so the NNX path ``encoder.layers.0.kernel`` is the torch name
``encoder.0.weight`` (in NNX layout; see ``ae_jax/convert.py``).

Images: the models take and return torch's channels-first (N, C, H, W) so both sides see the same
arrays; inside, NNX convolutions run channels-last (N, H, W, C), XLA's native layout. ``encode``
converts on the way in, ``decode`` on the way out, and ``Flatten`` / ``Unflatten`` go through NCHW so
that the Linear after a flatten sees torch's element order.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from flax import nnx

from ae_core import ModelSpec, check_dtype, get_spec, init_state_dict
from ae_core import spec as S
from ae_core.spec import LayerSpec

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


class Flatten(nnx.Module):
    """torch's ``nn.Flatten()`` on NHWC activations: back to NCHW first, so elements are in torch's order."""

    def __call__(self, x: jax.Array) -> jax.Array:
        return jnp.transpose(x, (0, 3, 1, 2)).reshape(x.shape[0], -1)


class Unflatten(nnx.Module):
    """torch's ``nn.Unflatten(1, (C, H, W))``, producing NHWC activations."""

    def __init__(self, shape: tuple[int, int, int]):
        self.shape = tuple(shape)

    def __call__(self, x: jax.Array) -> jax.Array:
        return jnp.transpose(x.reshape(x.shape[0], *self.shape), (0, 2, 3, 1))


def to_nhwc(x: jax.Array) -> jax.Array:
    return jnp.transpose(x, (0, 2, 3, 1)) if x.ndim == 4 else x


def to_nchw(x: jax.Array) -> jax.Array:
    return jnp.transpose(x, (0, 3, 1, 2)) if x.ndim == 4 else x


def make_layer(layer: LayerSpec, *, rngs: nnx.Rngs, dtype) -> nnx.Module | object:
    """One NNX module (or parameter-free function) for one layer spec."""
    if isinstance(layer, S.Linear):
        init = torch_uniform(layer.in_features)
        return nnx.Linear(layer.in_features, layer.out_features, use_bias=layer.bias, dtype=dtype,
                          param_dtype=dtype, kernel_init=init, bias_init=init, rngs=rngs)
    if isinstance(layer, S.Activation):
        return _ACTIVATIONS[layer.name]
    if isinstance(layer, S.Conv2d):
        init = torch_uniform(layer.fan_in)
        k, s, p = layer.kernel_size, layer.stride, layer.padding
        return nnx.Conv(layer.in_channels, layer.out_channels, (k, k), strides=(s, s), padding=((p, p), (p, p)),
                        use_bias=layer.bias, dtype=dtype, param_dtype=dtype, kernel_init=init, bias_init=init,
                        rngs=rngs)
    if isinstance(layer, S.ConvTranspose2d):
        init = torch_uniform(layer.fan_in)
        k, s = layer.kernel_size, layer.stride
        lo = k - 1 - layer.padding
        return nnx.ConvTranspose(layer.in_channels, layer.out_channels, (k, k), strides=(s, s),
                                 padding=((lo, lo + layer.output_padding),) * 2, transpose_kernel=True,
                                 use_bias=layer.bias, dtype=dtype, param_dtype=dtype, kernel_init=init,
                                 bias_init=init, rngs=rngs)
    if isinstance(layer, S.Flatten):
        return Flatten()
    if isinstance(layer, S.Unflatten):
        return Unflatten(layer.shape)
    raise TypeError(f"ae_jax has no module for layer spec {layer!r}")


class Autoencoder(nnx.Module):
    """``x_hat = decode(encode(x))``; x is (batch, *spec.input_shape)."""

    def __init__(self, spec: ModelSpec, *, rngs: nnx.Rngs, dtype=jnp.float32):
        self.spec = spec
        self.encoder = nnx.Sequential(*(make_layer(l, rngs=rngs, dtype=dtype) for l in spec.encoder))
        self.decoder = nnx.Sequential(*(make_layer(l, rngs=rngs, dtype=dtype) for l in spec.decoder))

    def encode(self, x: jax.Array) -> jax.Array:
        return to_nchw(self.encoder(to_nhwc(x)))

    def decode(self, z: jax.Array) -> jax.Array:
        return to_nchw(self.decoder(to_nhwc(z)))

    def decode_logits(self, z: jax.Array) -> jax.Array:
        """The decoder without its final Sigmoid (for BCE from logits)."""
        if self.spec.decoder[-1] != S.Activation("sigmoid"):
            raise ValueError(f"{self.spec.name}: the decoder does not end in a Sigmoid, it has no logits")
        z = to_nhwc(z)
        for layer in self.decoder.layers[:-1]:
            z = layer(z)
        return to_nchw(z)

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
