"""NNX modules for the ae_core layer kinds: one registered builder and one layout rule per kind (mirrors
ae_torch/layers.py).

``@builds(SpecClass, rules={NNX class: (ParamRule, ...)})`` registers the function that turns a layer
spec into its NNX module (or a parameter-free function), and, beside it, how that module's variables
map to torch's parameters (``ae_jax.convert``). Flax's own layers where they match torch
(``nnx.Linear``, ``nnx.Conv``, ``nnx.ConvTranspose`` with explicit padding); below, torch-faithful
ones where Flax's differ (BatchNorm, LSTM) or do not exist.

Images: the layers run channels-last (N, H, W, C), XLA's native layout; ``Flatten`` / ``Unflatten`` go
through NCHW so that the Linear after a flatten sees torch's element order.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
from typing import Callable, Mapping

import jax
import jax.numpy as jnp
from flax import nnx

from ae_core import layers as L
from ae_core.layers import LayerSpec

from .convert import HWIO, LINEAR, TRANSPOSE, ParamRule, register_rules

# The list receiving ReLU inputs while :func:`relu_inputs` is active (None otherwise).
_RELU_INPUTS: contextvars.ContextVar = contextvars.ContextVar("ae_jax_relu_inputs", default=None)


def relu(x: jax.Array) -> jax.Array:
    """``jax.nn.relu``; inside :func:`relu_inputs` its input is also appended to the recording list."""
    seen = _RELU_INPUTS.get()
    if seen is not None:
        seen.append(x)
    return jax.nn.relu(x)


@contextlib.contextmanager
def relu_inputs():
    """Record the input of every ReLU the models call, in call order: yields the list.

    Use it INSIDE a traced function and return the list from it (``ae_jax.train.loss_grad_and_relu_inputs``):
    the recording is a side effect of tracing, so it costs nothing at run time, and what is returned
    comes from the very compiled computation the caller measures. Parity tools need it to know on which
    side of the kink each float32 pre-activation fell (``ae_parity.reference``)."""
    seen: list = []
    token = _RELU_INPUTS.set(seen)
    try:
        yield seen
    finally:
        _RELU_INPUTS.reset(token)


_ACTIVATIONS = {
    "relu": relu,
    "tanh": jnp.tanh,
    "sigmoid": jax.nn.sigmoid,
    # torch's nn.GELU() is the exact erf form; jax.nn.gelu defaults to the tanh approximation.
    "gelu": functools.partial(jax.nn.gelu, approximate=False),
    "identity": lambda x: x,
}


BUILDERS: dict[type, Callable] = {}
# The builder's call as Python source (``ae_parity.codegen`` writes it into a port's ``__init__``), with
# the names ``nnx``, ``dtype``, ``rngs``, ``torch_uniform``, ``BatchNorm`` in scope; a test checks that it
# builds exactly what the builder builds.
SOURCES: dict[type, Callable[[LayerSpec], str]] = {}


def builds(spec_class: type, rules: Mapping[type, tuple[ParamRule, ...]] | None = None,
           source: Callable[[LayerSpec], str] | None = None):
    """Register the decorated function as the NNX builder of ``spec_class``'s layer kind, the layout
    rules of the NNX classes it builds (``ae_jax.convert.RULES``) and, for layers a model graph may hold,
    ``source``: the same construction as Python source."""

    def register(fn):
        if spec_class in BUILDERS:
            raise TypeError(f"ae_jax builds {spec_class.__name__} twice")
        BUILDERS[spec_class] = fn
        if source is not None:
            SOURCES[spec_class] = source
        for cls, cls_rules in (rules or {}).items():
            register_rules(cls, cls_rules)
        return fn

    return register


def make_layer(layer: LayerSpec, *, rngs: nnx.Rngs, dtype) -> nnx.Module | Callable:
    """One NNX module (or parameter-free function) for one layer spec."""
    builder = BUILDERS.get(type(layer))
    if builder is None:
        raise TypeError(f"ae_jax has no module for layer spec {layer!r}")
    return builder(layer, rngs=rngs, dtype=dtype)


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
                 use_running_average: bool = False, affine: bool = True):
        self.num_features, self.eps, self.momentum = num_features, eps, momentum
        self.use_running_average = use_running_average
        # affine=False (torch): normalisation only, no scale and no bias (the rule table skips them)
        self.scale = nnx.Param(jnp.ones(num_features, dtype)) if affine else None
        self.bias = nnx.Param(jnp.zeros(num_features, dtype)) if affine else None
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
        y = (x - mean) * jax.lax.rsqrt(var + self.eps)
        return y if self.scale is None else y * self.scale.get_value() + self.bias.get_value()


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



# ---------------------------------------------------------------------------------- builders ----
# Layout rules (PORTING-PITFALLS numbers in brackets):
# - Linear: flax kernel (in, out) = torch weight.T (out, in)  [1]
# - Conv2d: flax kernel (kH, kW, in, out) = torch weight (out, in, kH, kW).transpose(2, 3, 1, 0)  [2]
# - ConvTranspose2d: torch weight (in, out, kH, kW).transpose(2, 3, 1, 0) = (kH, kW, out, in), used by
#   nnx.ConvTranspose with transpose_kernel=True (the spatial flip torch does)  [4]
# - BatchNorm (the torch-faithful one below): scale = weight, bias, mean/var = running_mean/running_var,
#   num_batches_tracked (an int64 counter)  [5]
# - LSTM (torch gate order): kernel_ih/kernel_hh (in, 4H) = weight_ih_l0/weight_hh_l0 .T, both biases kept  [9]
# - TiedLinear: only the bias is its own; the weight is the encoder Linear's (one parameter)
_BIAS = ParamRule("bias", "bias")


@builds(L.Linear, rules={nnx.Linear: (LINEAR, _BIAS)},
        source=lambda l: f"nnx.Linear({l.in_features}, {l.out_features}, use_bias={l.bias}, dtype=dtype, "
                         f"param_dtype=dtype, kernel_init=torch_uniform({l.fan_in}), "
                         f"bias_init=torch_uniform({l.fan_in}), rngs=rngs)")
def _linear(l: L.Linear, *, rngs, dtype):
    init = torch_uniform(l.in_features)
    return nnx.Linear(l.in_features, l.out_features, use_bias=l.bias, dtype=dtype, param_dtype=dtype,
                      kernel_init=init, bias_init=init, rngs=rngs)


@builds(L.Activation)
def _activation(l: L.Activation, *, rngs, dtype):
    return _ACTIVATIONS[l.name]


@builds(L.Conv2d, rules={nnx.Conv: (
        ParamRule("kernel", "weight", *HWIO, "kernel (kH, kW, in, out) = weight (out, in, kH, kW).transpose(2, 3, 1, 0)"),
        _BIAS)},
        source=lambda l: f"nnx.Conv({l.in_channels}, {l.out_channels}, ({l.kernel_size}, {l.kernel_size}), "
                         f"strides=({l.stride}, {l.stride}), padding=(({l.padding}, {l.padding}),) * 2, "
                         f"use_bias={l.bias}, dtype=dtype, param_dtype=dtype, kernel_init=torch_uniform({l.fan_in}), "
                         f"bias_init=torch_uniform({l.fan_in}), rngs=rngs)")
def _conv2d(l: L.Conv2d, *, rngs, dtype):
    init = torch_uniform(l.fan_in)
    k, s, p = l.kernel_size, l.stride, l.padding
    return nnx.Conv(l.in_channels, l.out_channels, (k, k), strides=(s, s), padding=((p, p), (p, p)),
                    use_bias=l.bias, dtype=dtype, param_dtype=dtype, kernel_init=init, bias_init=init, rngs=rngs)


@builds(L.ConvTranspose2d, rules={nnx.ConvTranspose: (
        ParamRule("kernel", "weight", *HWIO,
                  "kernel (kH, kW, out, in) = weight (in, out, kH, kW).transpose(2, 3, 1, 0), transpose_kernel=True"),
        _BIAS)},
        source=lambda l: f"nnx.ConvTranspose({l.in_channels}, {l.out_channels}, ({l.kernel_size}, {l.kernel_size}), "
                         f"strides=({l.stride}, {l.stride}), padding=(({l.kernel_size - 1 - l.padding}, "
                         f"{l.kernel_size - 1 - l.padding + l.output_padding}),) * 2, transpose_kernel=True, "
                         f"use_bias={l.bias}, dtype=dtype, param_dtype=dtype, kernel_init=torch_uniform({l.fan_in}), "
                         f"bias_init=torch_uniform({l.fan_in}), rngs=rngs)")
def _conv_transpose2d(l: L.ConvTranspose2d, *, rngs, dtype):
    init = torch_uniform(l.fan_in)
    k, s = l.kernel_size, l.stride
    lo = k - 1 - l.padding
    return nnx.ConvTranspose(l.in_channels, l.out_channels, (k, k), strides=(s, s),
                             padding=((lo, lo + l.output_padding),) * 2, transpose_kernel=True, use_bias=l.bias,
                             dtype=dtype, param_dtype=dtype, kernel_init=init, bias_init=init, rngs=rngs)


@builds(L.Flatten)
def _flatten(l: L.Flatten, *, rngs, dtype):
    return Flatten()


@builds(L.Unflatten)
def _unflatten(l: L.Unflatten, *, rngs, dtype):
    return Unflatten(l.shape)


_BN_RULES = {BatchNorm: (
    ParamRule("scale", "weight"),
    _BIAS,
    ParamRule("mean", "running_mean"),
    ParamRule("var", "running_var", layout="running_var: the UNBIASED batch variance, averaged"),
    ParamRule("num_batches_tracked", "num_batches_tracked", integer=True),
)}


def _batchnorm_source(l) -> str:
    return f"BatchNorm({l.num_features}, eps={l.eps!r}, momentum={l.momentum!r}, affine={l.affine}, dtype=dtype)"


@builds(L.BatchNorm1d, rules=_BN_RULES, source=_batchnorm_source)
def _batchnorm1d(l: L.BatchNorm1d, *, rngs, dtype):
    return BatchNorm(l.num_features, eps=l.eps, momentum=l.momentum, dtype=dtype, affine=l.affine)


@builds(L.BatchNorm2d, rules=_BN_RULES, source=_batchnorm_source)
def _batchnorm2d(l: L.BatchNorm2d, *, rngs, dtype):
    return BatchNorm(l.num_features, eps=l.eps, momentum=l.momentum, dtype=dtype, affine=l.affine)


@builds(L.Dropout)
def _dropout(l: L.Dropout, *, rngs, dtype):
    return Dropout(l.p)


@builds(L.GaussianNoise)
def _gaussian_noise(l: L.GaussianNoise, *, rngs, dtype):
    return GaussianNoise(l.std, l.clip)


@builds(L.MaskingNoise)
def _masking_noise(l: L.MaskingNoise, *, rngs, dtype):
    return MaskingNoise(l.p)


@builds(L.TiedLinear, rules={TiedLinear: (_BIAS,)})
def _tied_linear(l: L.TiedLinear, *, rngs, dtype):
    return TiedLinear(l.in_features, l.out_features, use_bias=l.bias, dtype=dtype, rngs=rngs)


@builds(L.GaussianHead)  # its mu / logvar are nnx.Linear (ruled above)
def _gaussian_head(l: L.GaussianHead, *, rngs, dtype):
    return GaussianHead(l.in_features, l.latent, dtype=dtype, rngs=rngs)


@builds(L.LSTM, rules={LSTM: (
    ParamRule("kernel_ih", "weight_ih_l0", *TRANSPOSE, "kernel_ih (in, 4H) = weight_ih_l0.T, gates i,f,g,o"),
    ParamRule("kernel_hh", "weight_hh_l0", *TRANSPOSE, "kernel_hh (H, 4H) = weight_hh_l0.T, gates i,f,g,o"),
    ParamRule("bias_ih", "bias_ih_l0"),
    ParamRule("bias_hh", "bias_hh_l0"),
)})
def _lstm(l: L.LSTM, *, rngs, dtype):
    return LSTM(l.input_size, l.hidden_size, dtype=dtype, rngs=rngs)


@builds(L.LastStep)
def _last_step(l: L.LastStep, *, rngs, dtype):
    return last_step


@builds(L.RepeatSteps)
def _repeat_steps(l: L.RepeatSteps, *, rngs, dtype):
    return RepeatSteps(l.steps)
