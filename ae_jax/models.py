"""The Flax NNX autoencoders, built from an ``ae_core`` spec.

Mirrors ``ae_torch/models.py``: ``encoder`` / ``decoder`` are ``nnx.Sequential`` of NNX layers at
the same positions as the torch modules, so the NNX path ``encoder.layers.0.kernel`` is the torch name
``encoder.0.weight`` (in NNX layout; see ``ae_jax/convert.py``).

Images: the models take and return torch's channels-first (N, C, H, W) so both sides see the same
arrays; inside, NNX convolutions run channels-last (N, H, W, C), XLA's native layout. ``encode``
converts on the way in, ``decode`` on the way out, and ``Flatten`` / ``Unflatten`` go through NCHW so
that the Linear after a flatten sees torch's element order.

Train-mode randomness (dropout masks, denoising corruption, the VAE's eps) is supplied as ``noise``
(``{layer name: array}`` from ``ae_core.noise``, channels first), the same arrays the torch model
gets. ``model.train()`` / ``model.eval()`` switch modes as in torch (NNX sets ``deterministic`` /
``use_running_average`` on every layer that has them).
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


class BatchNorm(nnx.Module):
    """torch's ``BatchNorm1d`` / ``BatchNorm2d`` (features on the last axis: (N, C) or NHWC).

    Not ``nnx.BatchNorm``, which differs from torch in three ways (PORTING-PITFALLS): its momentum is
    the decay of the running average (torch 0.1 = Flax 0.9), it stores the *biased* batch variance in
    the running average where torch stores the unbiased one (n / (n - 1)), and it has no
    ``num_batches_tracked``. Train mode normalises with the batch's mean and biased variance and updates
    the running statistics; eval mode (``use_running_average=True``) uses them.
    """

    def __init__(self, num_features: int, *, eps: float = 1e-5, momentum: float = 0.1, dtype=jnp.float32,
                 use_running_average: bool = False):
        self.num_features, self.eps, self.momentum = num_features, eps, momentum
        self.use_running_average = use_running_average
        self.scale = nnx.Param(jnp.ones(num_features, dtype))
        self.bias = nnx.Param(jnp.zeros(num_features, dtype))
        self.mean = nnx.BatchStat(jnp.zeros(num_features, dtype))
        self.var = nnx.BatchStat(jnp.ones(num_features, dtype))
        self.num_batches_tracked = nnx.BatchStat(jnp.zeros((), jax.dtypes.canonicalize_dtype(jnp.int64)))

    def __call__(self, x: jax.Array) -> jax.Array:
        if self.use_running_average:
            mean, var = self.mean.get_value(), self.var.get_value()
        else:
            axes = tuple(range(x.ndim - 1))
            n = x.size // x.shape[-1]
            mean = jnp.mean(x, axis=axes)
            var = jnp.mean(jnp.square(x - mean), axis=axes)  # biased: what normalises the batch
            m = self.momentum
            self.mean.set_value((1 - m) * self.mean.get_value() + m * mean)
            self.var.set_value((1 - m) * self.var.get_value() + m * var * (n / max(n - 1, 1)))  # unbiased
            self.num_batches_tracked.set_value(self.num_batches_tracked.get_value() + 1)
        return (x - mean) * jax.lax.rsqrt(var + self.eps) * self.scale.get_value() + self.bias.get_value()


class _Noisy(nnx.Module):
    """A train-mode layer fed with supplied noise (channels-first; turned NHWC for 4-d activations)."""

    deterministic: bool = False

    def noise(self, value) -> jax.Array:
        if value is None:
            raise ValueError(f"{type(self).__name__} in train mode needs its noise: call the model with "
                             f"noise=ae_core.noise.draw_noise(spec, ...) (or switch to eval mode: model.eval())")
        return to_nhwc(jnp.asarray(value))


class Dropout(_Noisy):
    """torch's ``nn.Dropout(p)`` with a supplied keep-mask: ``x * mask / (1 - p)``; identity in eval mode."""

    def __init__(self, p: float):
        self.p, self.deterministic = p, False

    def __call__(self, x: jax.Array, mask=None) -> jax.Array:
        if self.deterministic:
            return x
        return x * self.noise(mask).astype(x.dtype) * (1.0 / (1.0 - self.p))


class GaussianNoise(_Noisy):
    """Denoising corruption ``x + std * eps`` (clipped to [0, 1] if ``clip``); identity in eval mode."""

    def __init__(self, std: float, clip: bool = True):
        self.std, self.clip, self.deterministic = std, clip, False

    def __call__(self, x: jax.Array, eps=None) -> jax.Array:
        if self.deterministic:
            return x
        x = x + self.std * self.noise(eps).astype(x.dtype)
        return jnp.clip(x, 0.0, 1.0) if self.clip else x


class MaskingNoise(_Noisy):
    """Denoising corruption: inputs zeroed where the supplied mask is 0; identity in eval mode."""

    def __init__(self, p: float):
        self.p, self.deterministic = p, False

    def __call__(self, x: jax.Array, mask=None) -> jax.Array:
        return x if self.deterministic else x * self.noise(mask).astype(x.dtype)


class TiedLinear(nnx.Module):
    """``y = x @ kernel_src.T + b``: reuses an encoder ``nnx.Linear``'s kernel (passed in); owns only ``bias``."""

    def __init__(self, in_features: int, out_features: int, *, use_bias: bool = True, dtype, rngs: nnx.Rngs):
        self.in_features, self.out_features = in_features, out_features
        self.bias = nnx.Param(torch_uniform(in_features)(rngs.params(), (out_features,), dtype)) if use_bias else None

    def __call__(self, x: jax.Array, source_kernel: jax.Array) -> jax.Array:
        y = x @ source_kernel.T
        return y + self.bias.get_value() if self.bias is not None else y


class GaussianHead(_Noisy):
    """The VAE head: ``mu`` and ``logvar`` nnx.Linears; train mode samples ``mu + exp(logvar / 2) * eps``."""

    def __init__(self, in_features: int, latent: int, *, dtype, rngs: nnx.Rngs):
        init = torch_uniform(in_features)
        make = functools.partial(nnx.Linear, in_features, latent, dtype=dtype, param_dtype=dtype, kernel_init=init,
                                 bias_init=init, rngs=rngs)
        self.mu, self.logvar, self.deterministic = make(), make(), False

    def __call__(self, h: jax.Array, eps=None):
        """(z, mu, logvar); z = mu in eval mode."""
        mu, logvar = self.mu(h), self.logvar(h)
        if self.deterministic:
            return mu, mu, logvar
        return mu + jnp.exp(0.5 * logvar) * self.noise(eps).astype(mu.dtype), mu, logvar


class LSTM(nnx.Module):
    """torch's ``nn.LSTM(batch_first=True)``, one layer, zero initial state, in torch's gate order (i, f, g, o).

    Kernels are stored (in, 4H) like ``nnx.Linear``'s; BOTH torch biases are kept (``bias_ih``,
    ``bias_hh``), so conversion is exact both ways and each bias gets its own gradient -- Flax's
    ``LSTMCell`` keeps one bias per gate, which can take the sum but never give the two back.
    Each step computes ``(x W_ih^T + b_ih) + (h W_hh^T + b_hh)`` as torch's CPU cell does.
    """

    def __init__(self, input_size: int, hidden_size: int, *, dtype, rngs: nnx.Rngs):
        self.input_size, self.hidden_size = input_size, hidden_size
        init, h4 = torch_uniform(hidden_size), 4 * hidden_size
        self.kernel_ih = nnx.Param(init(rngs.params(), (input_size, h4), dtype))
        self.kernel_hh = nnx.Param(init(rngs.params(), (hidden_size, h4), dtype))
        self.bias_ih = nnx.Param(init(rngs.params(), (h4,), dtype))
        self.bias_hh = nnx.Param(init(rngs.params(), (h4,), dtype))

    def __call__(self, x: jax.Array) -> jax.Array:
        """(N, steps, input_size) -> (N, steps, hidden_size)."""
        k_hh, b_hh = self.kernel_hh.get_value(), self.bias_hh.get_value()
        x_proj = x @ self.kernel_ih.get_value() + self.bias_ih.get_value()  # every step's input part at once

        def step(carry, xp):
            h, c = carry
            i, f, g, o = jnp.split(xp + (h @ k_hh + b_hh), 4, axis=-1)
            c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
            h = jax.nn.sigmoid(o) * jnp.tanh(c)
            return (h, c), h

        zeros = jnp.zeros((x.shape[0], self.hidden_size), x_proj.dtype)
        _, hs = jax.lax.scan(step, (zeros, zeros), jnp.swapaxes(x_proj, 0, 1))
        return jnp.swapaxes(hs, 0, 1)


def last_step(x: jax.Array) -> jax.Array:
    return x[:, -1]


class RepeatSteps(nnx.Module):
    def __init__(self, steps: int):
        self.steps = steps

    def __call__(self, x: jax.Array) -> jax.Array:
        return jnp.broadcast_to(x[:, None, :], (x.shape[0], self.steps, x.shape[-1]))


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
    if isinstance(layer, (S.BatchNorm1d, S.BatchNorm2d)):
        return BatchNorm(layer.num_features, eps=layer.eps, momentum=layer.momentum, dtype=dtype)
    if isinstance(layer, S.Dropout):
        return Dropout(layer.p)
    if isinstance(layer, S.GaussianNoise):
        return GaussianNoise(layer.std, layer.clip)
    if isinstance(layer, S.MaskingNoise):
        return MaskingNoise(layer.p)
    if isinstance(layer, S.TiedLinear):
        return TiedLinear(layer.in_features, layer.out_features, use_bias=layer.bias, dtype=dtype, rngs=rngs)
    if isinstance(layer, S.GaussianHead):
        return GaussianHead(layer.in_features, layer.latent, dtype=dtype, rngs=rngs)
    if isinstance(layer, S.LSTM):
        return LSTM(layer.input_size, layer.hidden_size, dtype=dtype, rngs=rngs)
    if isinstance(layer, S.LastStep):
        return last_step
    if isinstance(layer, S.RepeatSteps):
        return RepeatSteps(layer.steps)
    raise TypeError(f"ae_jax has no module for layer spec {layer!r}")


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
        h = to_nhwc(h)
        for i, layer in enumerate(getattr(self, part).layers[:stop]):
            name = f"{part}.{i}"
            if isinstance(layer, TiedLinear):
                source = self.encoder.layers[int(self.spec.decoder[i].tied_to.split(".")[1])]
                h = layer(h, source.kernel.get_value())
            elif isinstance(layer, GaussianHead):
                h, mu, logvar = layer(h, _get(noise, name))
                if stats is not None:
                    stats.update(mu=mu, logvar=logvar)
            elif isinstance(layer, _Noisy):
                h = layer(h, _get(noise, name))
            else:
                h = layer(h)
        return to_nchw(h)

    def encode(self, x: jax.Array, noise=None) -> jax.Array:
        """The code (for a VAE in eval mode: the mean; in train mode: a sample)."""
        return self._run("encoder", x, noise)

    def decode(self, z: jax.Array, noise=None) -> jax.Array:
        return self._run("decoder", z, noise)

    def decode_logits(self, z: jax.Array, noise=None) -> jax.Array:
        """The decoder without its final Sigmoid (for BCE from logits)."""
        if self.spec.decoder[-1] != S.Activation("sigmoid"):
            raise ValueError(f"{self.spec.name}: the decoder does not end in a Sigmoid, it has no logits")
        return self._run("decoder", z, noise, stop=-1)

    def outputs(self, x: jax.Array, noise=None) -> dict[str, jax.Array]:
        """Everything a loss needs, in one pass: ``code``, ``recon``, and where the model has them,
        ``logits`` (decoder ending in Sigmoid) and ``mu`` / ``logvar`` (VAE)."""
        out: dict[str, jax.Array] = {}
        if self.spec.corrupt:
            x = self._run("corrupt", x, noise)
        out["code"] = z = self._run("encoder", x, noise, stats=out)
        if self.spec.decoder[-1] == S.Activation("sigmoid"):
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
    from .convert import load_state_dict

    spec = get_spec(name_or_spec)
    dtype = check_dtype(dtype)
    model = Autoencoder(spec, rngs=rngs if rngs is not None else nnx.Rngs(0), dtype=jnp_dtype(dtype))
    if seed is not None:
        load_state_dict(model, init_state_dict(spec, seed, dtype))
    return model
