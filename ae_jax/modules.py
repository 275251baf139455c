"""torch-faithful NNX modules where Flax's differ from torch or do not exist (``ae_jax.layers`` builds
them from the layer specs and holds their conversion rules).

- :class:`BatchNorm`: torch's momentum, unbiased running variance, ``num_batches_tracked``,
  ``track_running_stats=False`` and the cumulative average (``momentum=None``);
- :class:`LayerNorm`, :class:`GroupNorm`: over torch's axes (the last ones; groups of axis 1), biased
  variance, torch's eps; :class:`PReLU`: slopes on axis 1; :class:`Embedding`: no gradient for the
  padding row;
- :class:`PaddedConv`: ``nnx.Conv`` after torch's reflect / replicate / circular padding;
  :class:`TorchConvTranspose`: a transposed convolution with torch's groups and any padding (cropping
  where it exceeds ``dilation * (kernel - 1)``).

Layouts: the convolutions and BatchNorm run channels-last (N, *spatial, C) like ``nnx.Conv``; the
others take torch's layout, ``channels_last = False`` (``ae_parity.nnx_record`` reads it).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

PAD_MODES = {"reflect": "reflect", "replicate": "edge", "circular": "wrap"}  # torch's padding_mode -> jnp.pad's


def torch_uniform(fan_in: int):
    """PyTorch's default Linear init, U(-1/sqrt(fan_in), 1/sqrt(fan_in)), as a JAX initializer."""
    bound = 1.0 / fan_in ** 0.5

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


def to_channels_last(x: jax.Array) -> jax.Array:
    """torch's (N, C, *spatial) -> (N, *spatial, C); (N, C) as it is."""
    return jnp.moveaxis(x, 1, -1) if x.ndim >= 3 else x


def to_channels_first(x: jax.Array) -> jax.Array:
    """(N, *spatial, C) -> torch's (N, C, *spatial); (N, C) as it is."""
    return jnp.moveaxis(x, -1, 1) if x.ndim >= 3 else x


# --------------------------------------------------------------------------- normalisation ----
def normalize(x: jax.Array, axes: tuple[int, ...], eps: float) -> jax.Array:
    """``(x - mean) / sqrt(var + eps)`` over ``axes``, the biased variance (torch's normalisations)."""
    mean = jnp.mean(x, axis=axes, keepdims=True)
    var = jnp.mean(jnp.square(x - mean), axis=axes, keepdims=True)
    return (x - mean) * jax.lax.rsqrt(var + eps)


def _per_channel(v, ndim: int):
    """A (C,) vector broadcast along axis 1 of an ``ndim``-d value."""
    return v.reshape((-1,) + (1,) * (ndim - 2)) if ndim >= 2 else v


def affine(y: jax.Array, weight, bias, channel_axis: bool = False) -> jax.Array:
    """``y * weight + bias`` (each may be None); ``channel_axis``: (C,) vectors on axis 1."""
    shape = (lambda v: _per_channel(v, y.ndim)) if channel_axis else (lambda v: v)
    y = y if weight is None else y * shape(weight)
    return y if bias is None else y + shape(bias)


def layer_norm(x, normalized_shape, weight=None, bias=None, eps=1e-5):
    n = len(tuple(normalized_shape))
    return affine(normalize(x, tuple(range(x.ndim - n, x.ndim)), eps), weight, bias)


def group_norm(x, num_groups: int, weight=None, bias=None, eps=1e-5):
    groups = x.reshape(x.shape[0], num_groups, -1)
    return affine(normalize(groups, (2,), eps).reshape(x.shape), weight, bias, channel_axis=True)


def _value(v):
    return None if v is None else v.get_value()


class BatchNorm(nnx.Module):
    """torch's ``BatchNorm1d`` / ``BatchNorm2d`` (features on the last axis: (N, C) or channels-last).

    Not ``nnx.BatchNorm``, which differs from torch in three ways (PORTING-PITFALLS): its momentum is
    the decay of the running average (torch 0.1 = Flax 0.9), it stores the *biased* batch variance in
    the running average where torch stores the unbiased one (n / (n - 1)), and it has no
    ``num_batches_tracked``. Train mode normalises with the batch's mean and biased variance and updates
    the running statistics (``momentum=None``: torch's cumulative average, factor 1 / num_batches_tracked);
    eval mode (``use_running_average=True``) uses them. ``track_running_stats=False``: no statistics kept,
    the batch's in both modes.
    """

    def __init__(self, num_features: int, *, eps: float = 1e-5, momentum: float | None = 0.1, dtype=jnp.float32,
                 use_running_average: bool = False, affine: bool = True, track_running_stats: bool = True):
        self.num_features, self.eps, self.momentum = num_features, eps, momentum
        self.use_running_average = use_running_average
        # affine=False (torch): normalisation only, no scale and no bias (the rule table skips them)
        self.scale = nnx.Param(jnp.ones(num_features, dtype)) if affine else None
        self.bias = nnx.Param(jnp.zeros(num_features, dtype)) if affine else None
        track = track_running_stats
        self.mean = nnx.BatchStat(jnp.zeros(num_features, dtype)) if track else None
        self.var = nnx.BatchStat(jnp.ones(num_features, dtype)) if track else None
        self.num_batches_tracked = nnx.BatchStat(jnp.zeros((), jax.dtypes.canonicalize_dtype(jnp.int64))) \
            if track else None

    def __call__(self, x: jax.Array) -> jax.Array:
        if self.use_running_average and self.mean is not None:
            mean, var = self.mean.get_value(), self.var.get_value()
        else:
            axes = tuple(range(x.ndim - 1))
            n = x.size // x.shape[-1]
            mean = jnp.mean(x, axis=axes)
            var = jnp.mean(jnp.square(x - mean), axis=axes)  # biased: what normalises the batch
            if self.mean is not None:
                self._update(mean, var, n / max(n - 1, 1))
        y = (x - mean) * jax.lax.rsqrt(var + self.eps)
        return y if self.scale is None else y * self.scale.get_value() + self.bias.get_value()

    def _update(self, mean: jax.Array, var: jax.Array, unbias: float) -> None:
        count = self.num_batches_tracked.get_value() + 1
        m = self.momentum if self.momentum is not None else (1.0 / count).astype(mean.dtype)
        self.mean.set_value((1 - m) * self.mean.get_value() + m * mean)
        self.var.set_value((1 - m) * self.var.get_value() + m * var * unbias)  # the unbiased variance
        self.num_batches_tracked.set_value(count)


class LayerNorm(nnx.Module):
    """torch's ``nn.LayerNorm``: over the last ``len(normalized_shape)`` axes of torch's layout; ``weight``
    and ``bias`` of ``normalized_shape`` (Flax's ``nnx.LayerNorm`` has epsilon 1e-6 and a faster, less
    exact variance)."""

    channels_last = False

    def __init__(self, normalized_shape, *, eps: float = 1e-5, elementwise_affine: bool = True, bias: bool = True,
                 dtype=jnp.float32):
        self.normalized_shape, self.eps = tuple(normalized_shape), eps
        self.weight = nnx.Param(jnp.ones(self.normalized_shape, dtype)) if elementwise_affine else None
        self.bias = nnx.Param(jnp.zeros(self.normalized_shape, dtype)) if elementwise_affine and bias else None

    def __call__(self, x: jax.Array) -> jax.Array:
        return layer_norm(x, self.normalized_shape, _value(self.weight), _value(self.bias), self.eps)


class GroupNorm(nnx.Module):
    """torch's ``nn.GroupNorm`` on (N, C, ...): groups of consecutive channels of axis 1."""

    channels_last = False

    def __init__(self, num_groups: int, num_channels: int, *, eps: float = 1e-5, affine: bool = True,
                 dtype=jnp.float32):
        self.num_groups, self.eps = num_groups, eps
        self.weight = nnx.Param(jnp.ones(num_channels, dtype)) if affine else None
        self.bias = nnx.Param(jnp.zeros(num_channels, dtype)) if affine else None

    def __call__(self, x: jax.Array) -> jax.Array:
        return group_norm(x, self.num_groups, _value(self.weight), _value(self.bias), self.eps)


class PReLU(nnx.Module):
    """torch's ``nn.PReLU``: ``x if x > 0 else weight * x``, one slope or one per channel (axis 1)."""

    channels_last = False

    def __init__(self, num_parameters: int = 1, *, init: float = 0.25, dtype=jnp.float32):
        self.weight = nnx.Param(jnp.full((num_parameters,), init, dtype))

    def __call__(self, x: jax.Array) -> jax.Array:
        w = self.weight.get_value()
        w = _per_channel(w, x.ndim) if w.size > 1 else w.reshape(())
        return jnp.where(x > 0, x, w * x)


class Embedding(nnx.Module):
    """torch's ``nn.Embedding``: rows of ``embedding`` (num_embeddings, dim) for integer indices; the
    ``padding_idx`` row gets no gradient, as in torch (``nnx.Embed``'s would)."""

    channels_last = False

    def __init__(self, num_embeddings: int, embedding_dim: int, *, padding_idx: int | None = None, dtype=jnp.float32,
                 rngs: nnx.Rngs):
        table = jax.random.normal(rngs.params(), (num_embeddings, embedding_dim), dtype)  # torch: N(0, 1)
        self.padding_idx = padding_idx
        self.embedding = nnx.Param(table if padding_idx is None else table.at[padding_idx].set(0))

    def __call__(self, input: jax.Array) -> jax.Array:
        out = jnp.take(self.embedding.get_value(), input, axis=0)
        if self.padding_idx is None:
            return out
        return jnp.where((input == self.padding_idx)[..., None], jax.lax.stop_gradient(out), out)


# ---------------------------------------------------------------------------- convolutions ----
class PaddedConv(nnx.Conv):
    """``nnx.Conv`` (channels-last) after torch's ``padding_mode`` "reflect" / "replicate" / "circular":
    the input padded by ``padding`` ((before, after) per spatial axis) with ``jnp.pad``, then a 'VALID'
    convolution -- what torch's ``Conv2d._conv_forward`` does with ``F.pad``."""

    def __init__(self, in_features: int, out_features: int, kernel_size, strides=1, *, padding, padding_mode: str,
                 **kwargs):
        super().__init__(in_features, out_features, kernel_size, strides, padding="VALID", **kwargs)
        self.pad_widths = tuple(tuple(p) for p in padding)
        self.pad_mode = PAD_MODES[padding_mode]

    def __call__(self, x: jax.Array) -> jax.Array:
        return super().__call__(jnp.pad(x, ((0, 0), *self.pad_widths, (0, 0)), mode=self.pad_mode))


class TorchConvTranspose(nnx.Module):
    """torch's ``ConvTranspose2d`` channels-last, where ``nnx.ConvTranspose`` cannot: ``groups``, padding
    beyond ``dilation * (kernel - 1)`` (a negative ``padding`` pair here: the output cropped), and a
    ``conv_general_dilated`` of one's choice (as ``nnx.Conv`` takes one: ``ae_jax.convforms.ConvForm``).

    ``kernel`` (*kernel, out / groups, in) = torch's weight (in, out / groups, *kernel) moved like
    ``nnx.ConvTranspose(transpose_kernel=True)``'s, so the same conversion rule holds. The forward is the
    convolution of the stride-dilated input with the flipped kernel, ``feature_group_count=groups``.
    """

    channels_last = True

    def __init__(self, in_features: int, out_features: int, kernel_size, strides, *, padding, kernel_dilation=1,
                 groups: int = 1, use_bias: bool = True, dtype=jnp.float32, param_dtype=jnp.float32, kernel_init,
                 bias_init, rngs: nnx.Rngs, conv_general_dilated=jax.lax.conv_general_dilated):
        self.conv_general_dilated = conv_general_dilated  # as nnx.Conv's: ae_jax.convforms.ConvForm, say
        self.kernel_size, nd = tuple(kernel_size), len(tuple(kernel_size))
        self.strides, self.padding = tuple(strides), tuple(tuple(p) for p in padding)
        self.kernel_dilation = (kernel_dilation,) * nd if isinstance(kernel_dilation, int) else tuple(kernel_dilation)
        self.groups, self.dtype = groups, dtype
        shape = (*self.kernel_size, out_features // groups, in_features)
        self.kernel = nnx.Param(kernel_init(rngs.params(), shape, param_dtype))
        self.bias = nnx.Param(bias_init(rngs.params(), (out_features,), param_dtype)) if use_bias else None

    def __call__(self, x: jax.Array) -> jax.Array:
        k = self.kernel.get_value().astype(self.dtype)
        *ks, og, cin = k.shape
        nd, g = len(ks), self.groups
        # (*k, out/g, in) -> (*k, in/g, out): output channel group * out/g + j reads input group * in/g + i
        k = k.reshape(*ks, og, g, cin // g)
        k = jnp.transpose(k, (*range(nd), nd + 2, nd + 1, nd)).reshape(*ks, cin // g, g * og)
        k = jnp.flip(k, axis=tuple(range(nd)))
        spatial = "DHW"[-nd:] if nd <= 3 else None
        y = self.conv_general_dilated(x.astype(self.dtype), k, (1,) * nd, self.padding, lhs_dilation=self.strides,
                                         rhs_dilation=self.kernel_dilation, feature_group_count=g,
                                         dimension_numbers=(f"N{spatial}C", f"{spatial}IO", f"N{spatial}C"))
        return y if self.bias is None else y + self.bias.get_value().astype(self.dtype)
