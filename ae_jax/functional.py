"""torch's functional operations in jax.numpy, with torch's signatures and torch's layout (channels first).

One function per op of a model graph (``ae_core.graph.OPS``), named and called as in torch
(``max_pool2d(x, kernel_size=2, stride=2)``, ``interpolate(x, scale_factor=2)``, ``leaky_relu(x, 0.2)``):
what a graph runs (``ae_jax.graph``) and what a generated port's source calls (``ae_parity.codegen``),
so the two cannot drift apart. Where torch and jax.nn differ, torch's semantics win (the gradient of
``leaky_relu`` at exactly 0, ``chunk``'s sizes, ``squeeze`` of a non-1 dimension, ``interpolate``'s
source indices, pooling's ``ceil_mode`` windows and ``count_include_pad``). Random draws take the
supplied noise (``randn_like(x, noise)``, ``dropout(x, p, mask=..., training=...)``).
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

import ae_jax.modules as _modules
from .layers import relu as _relu


# ------------------------------------------------------------------------------- elementwise ----
def relu(input):
    return _relu(input)  # ae_jax.layers.relu: records its input for the float32 verdict (ae_parity)


def leaky_relu(input, negative_slope=0.01):
    return jnp.where(input > 0, input, negative_slope * input)  # torch's gradient at exactly 0: the slope


def elu(input, alpha=1.0):
    return jax.nn.elu(input, alpha)


def selu(input):
    return jax.nn.selu(input)


def gelu(input, approximate="none"):
    return jax.nn.gelu(input, approximate=approximate == "tanh")  # torch's default is the exact erf form


def silu(input):
    return jax.nn.silu(input)


def sigmoid(input):
    return jax.nn.sigmoid(input)


def tanh(input):
    return jnp.tanh(input)


def softplus(input, beta=1.0, threshold=20.0):
    # torch's formula, its values bit for bit; the clamp keeps the branch not taken finite, whose exp would
    # overflow (beta * input above ~88 in float32) and leak a NaN into the gradient through the where
    linear = input * beta > threshold
    return jnp.where(linear, input, jnp.log1p(jnp.exp(jnp.where(linear, threshold, beta * input))) / beta)


def softmax(input, dim=None):
    if dim is None:
        raise ValueError("softmax without dim (torch's implicit, deprecated choice): give dim=")
    return jax.nn.softmax(input, axis=dim)


def add(input, other, alpha=1):
    return input + (other if alpha == 1 else alpha * other)


def sub(input, other, alpha=1):
    return input - (other if alpha == 1 else alpha * other)


def mul(input, other):
    return input * other


def truediv(input, other):
    return input / other


def pow(input, exponent):  # noqa: A001 - torch's name
    return input ** exponent


def neg(input):
    return -input


def exp(input):
    return jnp.exp(input)


def log(input):
    return jnp.log(input)


def sqrt(input):
    return jnp.sqrt(input)


def abs(input):  # noqa: A001 - torch's name
    return jnp.abs(input)


def matmul(input, other):
    return input @ other


# ------------------------------------------------------------------------------------ shapes ----
def _dims(d, ndim: int) -> tuple[int, ...]:
    return tuple(x % ndim for x in (d if isinstance(d, (list, tuple)) else [d]))


def view(input, shape):
    return jnp.reshape(input, tuple(shape))


reshape = view


def flatten(input, start_dim=0, end_dim=-1):
    if input.ndim == 0:
        return input.reshape(1)
    s, e = start_dim % input.ndim, end_dim % input.ndim
    return input.reshape(input.shape[:s] + (math.prod(input.shape[s:e + 1]),) + input.shape[e + 1:])


def unflatten(input, dim, sizes):
    d, sizes = dim % input.ndim, list(sizes)
    if -1 in sizes:
        sizes[sizes.index(-1)] = input.shape[d] // math.prod(s for s in sizes if s != -1)
    return input.reshape(input.shape[:d] + tuple(sizes) + input.shape[d + 1:])


def permute(input, dims):
    return jnp.transpose(input, tuple(dims))


def repeat(input, sizes):  # Tensor.repeat: more sizes than dims prepend new leading dims
    sizes = tuple(sizes)
    return jnp.tile(input.reshape((1,) * (len(sizes) - input.ndim) + input.shape), sizes)


def transpose(input, dim0, dim1):
    return jnp.swapaxes(input, dim0, dim1)


def squeeze(input, dim=None):
    if dim is None:
        return jnp.squeeze(input)
    dims = tuple(i for i in _dims(dim, input.ndim) if input.shape[i] == 1)  # torch: a no-op where size != 1
    return jnp.squeeze(input, dims) if dims else input


def unsqueeze(input, dim):
    return jnp.expand_dims(input, dim % (input.ndim + 1))


def contiguous(input):
    return input


identity = contiguous


def size(input, dim=None):
    return tuple(input.shape) if dim is None else input.shape[dim]


def cat(tensors, dim=0):
    return jnp.concatenate(list(tensors), axis=dim)


def stack(tensors, dim=0):
    return jnp.stack(list(tensors), axis=dim)


def chunk(input, chunks, dim=0):
    d = dim % input.ndim
    n = -(-input.shape[d] // chunks)  # torch: chunks of ceil(len / chunks), the last one smaller
    return tuple(jax.lax.slice_in_dim(input, i, min(i + n, input.shape[d]), axis=d) for i in range(0, input.shape[d], n))


def getitem(input, index):
    return input[index]


def sum(input, dim=None, keepdim=False):  # noqa: A001 - torch's name
    return jnp.sum(input) if dim is None else jnp.sum(input, axis=_dims(dim, input.ndim), keepdims=keepdim)


def mean(input, dim=None, keepdim=False):
    return jnp.mean(input) if dim is None else jnp.mean(input, axis=_dims(dim, input.ndim), keepdims=keepdim)


# --------------------------------------------------------------------- pooling and resampling ----
def _two(v) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else tuple(v)


def _pool_geometry(n: int, k: int, s: int, p: int, d: int, ceil_mode: bool) -> int:
    """The extra right padding torch's pooled length implies (``ceil_mode``: a last, partial window that
    starts inside the input or the left padding)."""
    span = n + 2 * p - d * (k - 1) - 1
    out = (-(-span // s) if ceil_mode else span // s) + 1
    if ceil_mode and (out - 1) * s >= n + p:
        out -= 1
    return max(0, (out - 1) * s + d * (k - 1) + 1 - (n + 2 * p))


def _window(input, kernel_size, stride, padding, ceil_mode, dilation=(1, 1)):
    k = _two(kernel_size)
    s = _two(stride) if stride not in (None, [], ()) else k
    p = _two(padding)
    extra = [_pool_geometry(input.shape[2 + i], k[i], s[i], p[i], dilation[i], ceil_mode) for i in range(2)]
    return (1, 1) + k, (1, 1) + s, ((0, 0), (0, 0)) + tuple((p[i], p[i] + extra[i]) for i in range(2)), p


def max_pool2d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False):
    dilation = _two(dilation)
    window, strides, pads, _ = _window(input, kernel_size, stride, padding, ceil_mode, dilation)
    if dilation == (1, 1):
        return jax.lax.reduce_window(input, -jnp.inf, jax.lax.max, window, strides, pads)
    # dilated: the max of the window's shifted, strided slices (JAX has no gradient of a dilated
    # reduce_window max)
    xp = jnp.pad(input, pads, constant_values=-jnp.inf)
    out = [(xp.shape[2 + i] - dilation[i] * (window[2 + i] - 1) - 1) // strides[2 + i] + 1 for i in range(2)]
    taps = [xp[:, :, i * dilation[0]: i * dilation[0] + (out[0] - 1) * strides[2] + 1: strides[2],
               j * dilation[1]: j * dilation[1] + (out[1] - 1) * strides[3] + 1: strides[3]]
            for i in range(window[2]) for j in range(window[3])]
    return functools.reduce(jnp.maximum, taps)


def avg_pool2d(input, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
               divisor_override=None):
    window, strides, pads, p = _window(input, kernel_size, stride, padding, ceil_mode)
    total = jax.lax.reduce_window(input, 0.0, jax.lax.add, window, strides, pads)
    if divisor_override:
        return total / divisor_override
    if count_include_pad:  # the window's part inside the explicitly padded input (not the ceil_mode extra)
        inside = jnp.ones((input.shape[2] + 2 * p[0], input.shape[3] + 2 * p[1]), input.dtype)
        extra = [(0, hi - lo) for lo, hi in pads[2:]]
    else:  # the window's part inside the input itself
        inside, extra = jnp.ones(input.shape[2:], input.dtype), list(pads[2:])
    return total / jax.lax.reduce_window(inside, 0.0, jax.lax.add, window[2:], strides[2:], extra)


def adaptive_avg_pool2d(input, output_size):
    out = tuple(input.shape[2 + i] if o is None else o for i, o in enumerate(_two(output_size)))

    def bins(n, m):  # torch: [floor(i * n / m), ceil((i + 1) * n / m))
        return [(i * n // m, -(-(i + 1) * n // m)) for i in range(m)]

    rows = [jnp.stack([jnp.mean(input[:, :, h0:h1, w0:w1], axis=(2, 3)) for w0, w1 in bins(input.shape[3], out[1])],
                      axis=-1) for h0, h1 in bins(input.shape[2], out[0])]
    return jnp.stack(rows, axis=-2)


def _resample(x, axis: int, n: int, m: int, scale: float, mode: str, align_corners):
    dst = np.arange(m, dtype=np.float64)
    if mode == "nearest":
        return jnp.take(x, np.minimum(np.floor(dst * scale).astype(np.int64), n - 1), axis=axis)
    if mode == "nearest-exact":
        return jnp.take(x, np.minimum(np.floor((dst + 0.5) * scale).astype(np.int64), n - 1), axis=axis)
    if mode in ("linear", "bilinear"):
        if align_corners:
            src = dst * ((n - 1) / (m - 1) if m > 1 else 0.0)
        else:
            src = np.maximum((dst + 0.5) * scale - 0.5, 0.0)
        i0 = np.minimum(np.floor(src).astype(np.int64), n - 1)
        lam = jnp.asarray((src - i0).reshape((-1,) + (1,) * (x.ndim - 1 - axis)), x.dtype)
        return jnp.take(x, i0, axis=axis) * (1 - lam) + jnp.take(x, np.minimum(i0 + 1, n - 1), axis=axis) * lam
    raise ValueError(f"interpolate mode {mode!r} is not supported (nearest, nearest-exact, linear, bilinear)")


def interpolate(input, size=None, scale_factor=None, mode="nearest", align_corners=None):
    """``F.interpolate`` on (N, C, *spatial): nearest, nearest-exact, (bi)linear (align_corners either way)."""
    spatial = input.shape[2:]
    if size is not None:
        size = (size,) * len(spatial) if isinstance(size, int) else tuple(size)
        scales = [n / m for n, m in zip(spatial, size)]
    else:
        sf = (scale_factor,) * len(spatial) if isinstance(scale_factor, (int, float)) else tuple(scale_factor)
        size = tuple(int(math.floor(n * f)) for n, f in zip(spatial, sf))
        scales = [1.0 / f for f in sf]  # torch uses the given factor, not in / out
    x = input
    for axis, (n, m, scale) in enumerate(zip(spatial, size, scales), start=2):
        x = _resample(x, axis, n, m, scale, mode, align_corners)
    return x


# ---------------------------------------------------------------------------- normalisation ----
def layer_norm(input, normalized_shape, weight=None, bias=None, eps=1e-5):
    """``F.layer_norm``: over the last ``len(normalized_shape)`` axes, the biased variance."""
    return _modules.layer_norm(input, normalized_shape, weight, bias, eps)


def group_norm(input, num_groups, weight=None, bias=None, eps=1e-5):
    """``F.group_norm`` on (N, C, ...): groups of consecutive channels."""
    return _modules.group_norm(input, num_groups, weight, bias, eps)


def batch_norm(input, running_mean, running_var, weight=None, bias=None, training=False, momentum=0.1, eps=1e-5):
    """``F.batch_norm`` on (N, C, ...): the batch's statistics in training or without running ones, else the
    given ones (read only: a graph holds no buffers outside its layers)."""
    axes = (0, *range(2, input.ndim))
    if training or running_mean is None:
        y = _modules.normalize(input, axes, eps)
    else:
        shape = (-1,) + (1,) * (input.ndim - 2)
        y = (input - running_mean.reshape(shape)) * jax.lax.rsqrt(running_var.reshape(shape) + eps)
    return _modules.affine(y, weight, bias, channel_axis=True)


# ----------------------------------------------------------------------------- random draws ----
def _supplied(op: str, noise, shape, dtype):
    if tuple(noise.shape) != tuple(shape):
        raise ValueError(f"{op} noise has shape {tuple(noise.shape)}, expected {tuple(shape)}")
    return jnp.asarray(noise).astype(dtype)


def randn_like(input, noise):
    """torch.randn_like's draw, supplied: ``noise`` (standard normal numbers of ``input``'s shape)."""
    return _supplied("randn_like", noise, input.shape, input.dtype)


def rand_like(input, noise):
    """torch.rand_like's draw, supplied: ``noise`` (U[0, 1) numbers of ``input``'s shape)."""
    return _supplied("rand_like", noise, input.shape, input.dtype)


def randn(size, dtype=None, *, noise):
    """torch.randn(*size)'s draw, supplied; float32 (torch's default dtype) unless ``dtype`` says otherwise."""
    return _supplied("randn", noise, tuple(size), dtype or "float32")


def rand(size, dtype=None, *, noise):
    """torch.rand(*size)'s draw, supplied; float32 (torch's default dtype) unless ``dtype`` says otherwise."""
    return _supplied("rand", noise, tuple(size), dtype or "float32")


def dropout(input, p=0.5, *, mask=None, training=True):
    """torch's dropout, its keep-mask supplied (1 = keep): ``input * mask / (1 - p)`` in training."""
    if not training or p == 0:
        return input
    if tuple(mask.shape) != tuple(input.shape):
        raise ValueError(f"dropout mask has shape {tuple(mask.shape)}, expected {tuple(input.shape)}")
    return input * jnp.asarray(mask).astype(input.dtype) / (1 - p)
