"""NNX modules for the ae_core layer kinds: one registered builder and one layout rule per kind (mirrors
ae_torch/layers.py).

``@builds(SpecClass, rules={NNX class: (ParamRule, ...)})`` registers the function that turns a layer
spec into its NNX module (or a parameter-free function), and, beside it, how that module's variables
map to torch's parameters (``ae_jax.convert``). Flax's own layers where they match torch
(``nnx.Linear``, ``nnx.Conv``, ``nnx.ConvTranspose`` with explicit padding); torch-faithful ones where
Flax's differ or do not exist (``ae_jax.modules``: BatchNorm, LayerNorm, GroupNorm, PReLU, Embedding, the
padded and grouped convolutions; ``ae_jax.recurrent``: LSTM, GRU); below, the presets' own layers.

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

from .convert import HWIO, LINEAR, ParamRule, register_rules
from .convforms import ConvForm, build_form  # noqa: F401 (ConvForm: re-exported for ports' source)
from .modules import (BatchNorm, Embedding, GroupNorm, LayerNorm, PaddedConv, PReLU,  # noqa: F401 (re-exported:
                      TorchConvTranspose, to_channels_first, to_channels_last, torch_uniform)  # ports import them here)
from .recurrent import GRU, LSTM, recurrent_rules

# The list receiving ReLU inputs while :func:`relu_inputs` is active (None otherwise).
_RELU_INPUTS: contextvars.ContextVar = contextvars.ContextVar("ae_jax_relu_inputs", default=None)


def relu(x: jax.Array, recorded=None) -> jax.Array:
    """``jax.nn.relu``; inside :func:`relu_inputs` its input is also appended to the recording list
    (``recorded(x)``: in another layout, torch's, where the caller runs it channels-last)."""
    seen = _RELU_INPUTS.get()
    if seen is not None:
        seen.append(x if recorded is None else recorded(x))
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
# the names ``nnx``, ``dtype``, ``rngs`` and those of SOURCE_NAMES (from this module) in scope; a test checks
# that it builds exactly what the builder builds.
SOURCES: dict[type, Callable[[LayerSpec], str]] = {}
SOURCE_NAMES = ("BatchNorm", "ConvForm", "Embedding", "GRU", "GroupNorm", "LSTM", "LayerNorm", "PReLU",
                "PaddedConv", "TorchConvTranspose", "torch_uniform")


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


class _Noisy(nnx.Module):
    """A train-mode layer fed with supplied noise, in the layout of its input: torch's (a model graph runs
    every layer on torch-layout values but the image layers, ``ae_jax.graph``)."""

    deterministic: bool = False

    def noise(self, value) -> jax.Array:
        if value is None:
            raise ValueError(f"{type(self).__name__} in train mode needs its noise: call the model with "
                             f"noise=ae_core.noise.draw_noise(spec, ...) (or switch to eval mode: model.eval())")
        return jnp.asarray(value)


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
# - Conv1d / Conv2d: flax kernel (*k, in / groups, out) = torch weight (out, in / groups, *k) with the kernel
#   axes first: .transpose(2, 3, 1, 0) (Conv2d), .transpose(2, 1, 0) (Conv1d)  [2]
# - ConvTranspose2d: torch weight (in, out / groups, kH, kW).transpose(2, 3, 1, 0) = (kH, kW, out / groups, in),
#   used by nnx.ConvTranspose with transpose_kernel=True (the spatial flip torch does) or TorchConvTranspose  [4]
# - BatchNorm (the torch-faithful one, ae_jax.modules): scale = weight, bias, mean/var = running_mean/running_var,
#   num_batches_tracked (an int64 counter)  [5]
# - LayerNorm, GroupNorm, PReLU: weight / bias as they are; Embedding: embedding = weight (num, dim)
# - LSTM / GRU (torch gate orders): kernel_ih/kernel_hh (in, G*H) = weight_ih_l<l>/weight_hh_l<l> .T, both
#   biases kept  [9]
# - TiedLinear: only the bias is its own; the weight is the encoder Linear's (one parameter)
_BIAS = ParamRule("bias", "bias")


def _tail(fan_in: int) -> str:
    """The keyword arguments every weighted layer's source ends with."""
    return (f"dtype=dtype, param_dtype=dtype, kernel_init=torch_uniform({fan_in}), bias_init=torch_uniform({fan_in}), "
            f"rngs=rngs")


def _kwargs(kw: dict) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in kw.items())


@builds(L.Linear, rules={nnx.Linear: (LINEAR, _BIAS)},
        source=lambda l: f"nnx.Linear({l.in_features}, {l.out_features}, use_bias={l.bias}, {_tail(l.fan_in)})")
def _linear(l: L.Linear, *, rngs, dtype):
    init = torch_uniform(l.in_features)
    return nnx.Linear(l.in_features, l.out_features, use_bias=l.bias, dtype=dtype, param_dtype=dtype,
                      kernel_init=init, bias_init=init, rngs=rngs)


@builds(L.Activation)
def _activation(l: L.Activation, *, rngs, dtype):
    return _ACTIVATIONS[l.name]


def _conv_call(l) -> tuple[type, str, dict]:
    """The NNX class of a Conv1d / Conv2d spec, its name in source and its own keyword arguments: nnx.Conv
    with torch's per-side padding, PaddedConv for the other padding modes; the convolution computed in the
    form being built (``ae_jax.convforms``; the plain form is nnx's own)."""
    form = build_form()
    kw = {"strides": l.strides, "padding": l.pads}
    if set(l.dilations) != {1}:
        kw["kernel_dilation"] = l.dilations
    if l.groups != 1:
        kw["feature_group_count"] = l.groups
    if l.padding_mode != "zeros":
        kw["padding_mode"] = l.padding_mode
    kw["use_bias"] = l.bias
    if form.form != "plain":
        kw["conv_general_dilated"] = form
    return (nnx.Conv, "nnx.Conv", kw) if l.padding_mode == "zeros" else (PaddedConv, "PaddedConv", kw)


def _conv_source(l) -> str:
    _, name, kw = _conv_call(l)
    return f"{name}({l.in_channels}, {l.out_channels}, {l.kernel!r}, {_kwargs(kw)}, {_tail(l.fan_in)})"


def _conv(l, *, rngs, dtype):
    cls, _, kw = _conv_call(l)
    init = torch_uniform(l.fan_in)
    return cls(l.in_channels, l.out_channels, l.kernel, **kw, dtype=dtype, param_dtype=dtype, kernel_init=init,
               bias_init=init, rngs=rngs)


_CONV_RULES = {nnx.Conv: (
    ParamRule("kernel", "weight", *HWIO, "kernel (*k, in / groups, out) = weight (out, in / groups, *k) with the "
                                         "kernel axes first: .transpose(2, 3, 1, 0) (Conv2d), (2, 1, 0) (Conv1d)"),
    _BIAS)}
builds(L.Conv2d, rules=_CONV_RULES, source=_conv_source)(_conv)
builds(L.Conv1d, rules=_CONV_RULES, source=_conv_source)(_conv)


def _conv_transpose_call(l) -> tuple[type, str, dict]:
    """In the plain form, nnx.ConvTranspose where it can (groups 1, padding at most dilation * (kernel - 1)),
    else TorchConvTranspose; in the others TorchConvTranspose computing its convolution in that form. Both
    take the padding of the equivalent convolution, per side."""
    form = build_form()
    plain = form.form == "plain" and l.groups == 1 and min(lo for lo, _ in l.pads) >= 0
    kw = {"strides": l.strides, "padding": l.pads}
    if set(l.dilations) != {1}:
        kw["kernel_dilation"] = l.dilations
    if plain:
        kw["transpose_kernel"] = True
    elif l.groups != 1:
        kw["groups"] = l.groups
    kw["use_bias"] = l.bias
    if form.form != "plain":
        kw["conv_general_dilated"] = form
    return (nnx.ConvTranspose, "nnx.ConvTranspose", kw) if plain else (TorchConvTranspose, "TorchConvTranspose", kw)


_CONV_TRANSPOSE_RULE = ParamRule("kernel", "weight", *HWIO, "kernel (kH, kW, out / groups, in) = weight (in, out / "
                                                            "groups, kH, kW).transpose(2, 3, 1, 0), the flip in the op")


def _conv_transpose_source(l) -> str:
    _, name, kw = _conv_transpose_call(l)
    return f"{name}({l.in_channels}, {l.out_channels}, {l.kernel!r}, {_kwargs(kw)}, {_tail(l.fan_in)})"


@builds(L.ConvTranspose2d, rules={nnx.ConvTranspose: (_CONV_TRANSPOSE_RULE, _BIAS),
                                  TorchConvTranspose: (_CONV_TRANSPOSE_RULE, _BIAS)}, source=_conv_transpose_source)
def _conv_transpose2d(l: L.ConvTranspose2d, *, rngs, dtype):
    cls, _, kw = _conv_transpose_call(l)
    init = torch_uniform(l.fan_in)
    return cls(l.in_channels, l.out_channels, l.kernel, **kw, dtype=dtype, param_dtype=dtype, kernel_init=init,
               bias_init=init, rngs=rngs)


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


def _batchnorm_kwargs(l) -> dict:
    kw = {"eps": l.eps, "momentum": l.momentum, "affine": l.affine}
    return kw if l.track_running_stats else {**kw, "track_running_stats": False}


def _batchnorm_source(l) -> str:
    return f"BatchNorm({l.num_features}, {_kwargs(_batchnorm_kwargs(l))}, dtype=dtype)"


def _batchnorm(l, *, rngs, dtype):
    return BatchNorm(l.num_features, **_batchnorm_kwargs(l), dtype=dtype)


builds(L.BatchNorm1d, rules=_BN_RULES, source=_batchnorm_source)(_batchnorm)
builds(L.BatchNorm2d, rules=_BN_RULES, source=_batchnorm_source)(_batchnorm)

_WEIGHT = ParamRule("weight", "weight")


@builds(L.LayerNorm, rules={LayerNorm: (_WEIGHT, _BIAS)},
        source=lambda l: f"LayerNorm({l.normalized_shape!r}, eps={l.eps!r}, elementwise_affine={l.elementwise_affine}, "
                         f"bias={l.bias}, dtype=dtype)")
def _layer_norm(l: L.LayerNorm, *, rngs, dtype):
    return LayerNorm(l.normalized_shape, eps=l.eps, elementwise_affine=l.elementwise_affine, bias=l.bias, dtype=dtype)


@builds(L.GroupNorm, rules={GroupNorm: (_WEIGHT, _BIAS)},
        source=lambda l: f"GroupNorm({l.num_groups}, {l.num_channels}, eps={l.eps!r}, affine={l.affine}, dtype=dtype)")
def _group_norm(l: L.GroupNorm, *, rngs, dtype):
    return GroupNorm(l.num_groups, l.num_channels, eps=l.eps, affine=l.affine, dtype=dtype)


@builds(L.PReLU, rules={PReLU: (_WEIGHT,)},
        source=lambda l: f"PReLU({l.num_parameters}, init={l.init!r}, dtype=dtype)")
def _prelu(l: L.PReLU, *, rngs, dtype):
    return PReLU(l.num_parameters, init=l.init, dtype=dtype)


@builds(L.Embedding, rules={Embedding: (ParamRule("embedding", "weight", layout="embedding (num, dim) = weight"),)},
        source=lambda l: f"Embedding({l.num_embeddings}, {l.embedding_dim}, padding_idx={l.padding_idx!r}, "
                         f"dtype=dtype, rngs=rngs)")
def _embedding(l: L.Embedding, *, rngs, dtype):
    return Embedding(l.num_embeddings, l.embedding_dim, padding_idx=l.padding_idx, dtype=dtype, rngs=rngs)


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


def _recurrent_kwargs(l) -> dict:
    return {"num_layers": l.num_layers, "bias": l.bias, "batch_first": l.batch_first, "returns_state": l.returns_state}


def _recurrent_source(l) -> str:
    return f"{type(l).__name__}({l.input_size}, {l.hidden_size}, {_kwargs(_recurrent_kwargs(l))}, dtype=dtype, rngs=rngs)"


@builds(L.LSTM, rules={LSTM: recurrent_rules("gates i,f,g,o")}, source=_recurrent_source)
def _lstm(l: L.LSTM, *, rngs, dtype):
    return LSTM(l.input_size, l.hidden_size, **_recurrent_kwargs(l), dtype=dtype, rngs=rngs)


@builds(L.GRU, rules={GRU: recurrent_rules("gates r,z,n")}, source=_recurrent_source)
def _gru(l: L.GRU, *, rngs, dtype):
    return GRU(l.input_size, l.hidden_size, **_recurrent_kwargs(l), dtype=dtype, rngs=rngs)


@builds(L.LastStep)
def _last_step(l: L.LastStep, *, rngs, dtype):
    return last_step


@builds(L.RepeatSteps)
def _repeat_steps(l: L.RepeatSteps, *, rngs, dtype):
    return RepeatSteps(l.steps)
