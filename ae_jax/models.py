"""The Flax NNX autoencoders, built from an ``ae_core`` spec.

Mirrors ``ae_torch/models.py``: ``encoder`` / ``decoder`` are ``nnx.Sequential`` of NNX layers (one per
layer spec, from the builders in ``ae_jax/layers.py``) at the same positions as the torch modules, so
the NNX path ``encoder.layers.0.kernel`` is the torch name ``encoder.0.weight`` (in NNX layout; see
``ae_jax/convert.py``).

Images: the models take and return torch's channels-first (N, C, H, W) so both sides see the same
arrays; inside, NNX convolutions run channels-last (N, H, W, C), XLA's native layout. ``encode``
converts on the way in, ``decode`` on the way out.

Train-mode randomness (dropout masks, denoising corruption, the VAE's eps) is supplied as ``noise``
(``{layer name: array}`` from ``ae_core.noise``, channels first), the same arrays the torch model
gets. ``model.train()`` / ``model.eval()`` switch modes as in torch (NNX sets ``deterministic`` /
``use_running_average`` on every layer that has them).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from ae_core import ModelSpec, check_dtype, get_spec, init_state_dict

from .layers import make_layer, to_nchw, to_nhwc
from .numerics import jnp_dtype
from .weights import load_state_dict


class Autoencoder(nnx.Module):
    """``x_hat = decode(encode(x))``; x is (batch, *spec.input_shape).

    ``noise``: ``{layer name: array}`` from ``ae_core.noise`` for the train-mode random layers.
    """

    def __init__(self, spec: ModelSpec, *, rngs: nnx.Rngs, dtype=jnp.float32):
        self.spec = spec
        if spec.corrupt:  # parameter-free
            self.corrupt = nnx.Sequential(*(make_layer(l, rngs=rngs, dtype=dtype) for l in spec.corrupt))
        self.encoder = nnx.Sequential(*(make_layer(l, rngs=rngs, dtype=dtype) for l in spec.encoder))
        self.decoder = nnx.Sequential(*(make_layer(l, rngs=rngs, dtype=dtype) for l in spec.decoder))

    def _run(self, part: str, h: jax.Array, noise, stop: int | None = None, stats: dict | None = None):
        """Run ``part``'s layers (up to ``stop``) channels-last; each gets the extra inputs its spec asks for
        and hands its extra outputs (the VAE head's mu, logvar) to ``stats``."""
        h = to_nhwc(h)
        for i, (spec, layer) in enumerate(list(zip(getattr(self.spec, part), getattr(self, part).layers))[:stop]):
            extra = [self._input(what, spec, f"{part}.{i}", noise) for what in spec.inputs]
            h = layer(h, *extra)
            if spec.outputs:
                h, *values = h
                if stats is not None:
                    stats.update(zip(spec.outputs, values))
        return to_nchw(h)

    def _input(self, what: str, spec, name: str, noise):
        if what == "noise":
            return _get(noise, name)
        if what == "tied_weight":
            return self.encoder.layers[spec.source_index].kernel.get_value()
        raise TypeError(f"ae_jax does not know how to supply {what!r} to {spec}")

    def encode(self, x: jax.Array, noise=None) -> jax.Array:
        """The code (for a VAE in eval mode: the mean; in train mode: a sample)."""
        return self._run("encoder", x, noise)

    def decode(self, z: jax.Array, noise=None) -> jax.Array:
        return self._run("decoder", z, noise)

    def decode_logits(self, z: jax.Array, noise=None) -> jax.Array:
        """The decoder without its final Sigmoid (for BCE from logits)."""
        if not self.spec.has_logits:
            raise ValueError(f"{self.spec.name}: the decoder does not end in a Sigmoid, it has no logits")
        return self._run("decoder", z, noise, stop=-1)

    def outputs(self, x: jax.Array, noise=None) -> dict[str, jax.Array]:
        """Everything a loss needs, in one pass: ``code``, ``recon``, and where the model has them,
        ``logits`` (decoder ending in Sigmoid) and ``mu`` / ``logvar`` (VAE)."""
        out: dict[str, jax.Array] = {}
        if self.spec.corrupt:
            x = self._run("corrupt", x, noise)
        out["code"] = z = self._run("encoder", x, noise, stats=out)
        if self.spec.has_logits:
            out["logits"] = self._run("decoder", z, noise, stop=-1)
            out["recon"] = jax.nn.sigmoid(out["logits"])
        else:
            out["recon"] = self._run("decoder", z, noise)
        return out

    def __call__(self, x: jax.Array, noise=None) -> jax.Array:
        if self.spec.corrupt:
            x = self._run("corrupt", x, noise)
        return self.decode(self.encode(x, noise), noise)


def _get(noise, name: str):
    return None if noise is None else noise.get(name)


def build(name_or_spec: str | ModelSpec, *, rngs: nnx.Rngs | None = None, dtype="float32",
          seed: int | None = None) -> Autoencoder:
    """A preset (by name) or a spec as an NNX module.

    ``seed=None``: drawn from ``rngs`` (default ``nnx.Rngs(0)``) with PyTorch's default distributions.
    ``seed=S``: the framework-free weights of ``ae_core.init_state_dict(spec, S)``, the very numbers
    ``ae_torch.build(seed=S)`` gets. ``dtype="float64"`` turns on ``jax_enable_x64``.
    """
    spec = get_spec(name_or_spec)
    dtype = check_dtype(dtype)
    if seed is None:
        return Autoencoder(spec, rngs=rngs if rngs is not None else nnx.Rngs(0), dtype=jnp_dtype(dtype))
    # The weights come from numpy: build the module abstractly (shapes only) and load them, instead of
    # compiling every layer's random initialisation only to overwrite it (mlp9: 0.4 s instead of 6 s).
    model = nnx.eval_shape(lambda: Autoencoder(spec, rngs=nnx.Rngs(0), dtype=jnp_dtype(dtype)))
    load_state_dict(model, init_state_dict(spec, seed, dtype))  # strict: every variable gets its value
    if any(isinstance(leaf, jax.ShapeDtypeStruct) for leaf in jax.tree.leaves(nnx.state(model))):
        raise RuntimeError(f"{spec.name}: a variable has no value in init_state_dict")  # an ae_core/ae_jax bug
    return model
