"""Model graphs (``ae_core.graph``) as native Flax NNX modules.

:func:`build` turns a :class:`~ae_core.graph.Graph` -- typically traced from a PyTorch module by
``ae_torch.graph.trace`` -- into a :class:`GraphModule`: its layers are the NNX layers of the layer
specs (``ae_jax.layers``: ``nnx.Linear``, ``nnx.Conv``, the torch-faithful ``BatchNorm``...) held under
the torch module paths (``conv1``, ``encoder.0.0``), so ``ae_jax.load_state_dict(m,
torch_model.state_dict())`` loads strictly, and its ``__call__`` / ``encode`` / ``decode`` run the
graph's nodes with jax.numpy -- jit-able, differentiable, vmap-able like any NNX module.

Values keep torch's layout (channels first), so every functional op means what it meant in torch
(``view`` after a convolution, ``cat(dim=1)``, ``chunk``); the image layers (``LayerSpec.image``)
run channels-last inside, XLA's native convolution layout, converting on the way in and out.
``model.train()`` / ``model.eval()`` switch modes as in torch. Random draws are supplied:
``model(x, noise={node name: array})`` with the shapes of ``graph.noise_shapes()`` (``ae_core.noise``
draws them for training); the torch graph runtime (``ae_torch.graph.GraphModule``) takes the same.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from ae_core import check_dtype
from ae_core.graph import Graph, Ref

from .layers import make_layer, relu, to_nchw, to_nhwc
from .numerics import jnp_dtype


class Block(nnx.Module):
    """A torch container (``nn.Sequential``, a user's block): its children under their torch names."""

    def __init__(self, children: Mapping[str, nnx.Module]):
        for name, child in children.items():
            setattr(self, name, child)


def _tree(modules: Mapping[str, nnx.Module]) -> dict[str, Any]:
    """``{"encoder.0.0": m, "fc_mu": m2}`` -> nested dicts along the paths."""
    root: dict[str, Any] = {}
    for path, module in modules.items():
        node = root
        *heads, leaf = path.split(".")
        for h in heads:
            node = node.setdefault(h, {})
        node[leaf] = module
    return root


def _blocks(tree: Mapping[str, Any]) -> dict[str, nnx.Module]:
    return {k: Block(_blocks(v)) if isinstance(v, dict) else v for k, v in tree.items()}


class GraphModule(nnx.Module):
    """A graph as an NNX module (see the module docstring). ``deterministic`` is what ``eval()`` sets."""

    def __init__(self, graph: Graph, *, rngs: nnx.Rngs, dtype=jnp.float32):
        self.graph = graph
        self.deterministic = False
        layers = {path: make_layer(spec, rngs=rngs, dtype=dtype) for path, spec in graph.modules.items()}
        for name, child in _blocks(_tree(layers)).items():
            setattr(self, name, child)

    def _layer(self, path: str):
        obj = self
        for part in path.split("."):
            obj = getattr(obj, part)
        return obj

    def run(self, method: str, *args, noise: Mapping[str, jax.Array] | None = None):
        """Run one of the graph's methods (``forward``, ``encode``, ``decode``) in the current mode."""
        if self.deterministic and f"{method}@eval" in self.graph.methods:
            method = f"{method}@eval"
        if method not in self.graph.methods:
            raise AttributeError(f"{self.graph.name} has no {method.split('@')[0]!r} (traced: "
                                 f"{', '.join(m for m in self.graph.methods if '@' not in m)})")
        m = self.graph.methods[method]
        env: dict[str, Any] = dict(zip(m.inputs, args))

        def get(v):
            if isinstance(v, Ref):
                return env[v.name]
            if isinstance(v, list):
                return [get(x) for x in v]
            if isinstance(v, tuple):
                return tuple(get(x) for x in v)
            if isinstance(v, dict):
                return {k: get(x) for k, x in v.items()}
            if isinstance(v, slice):
                return slice(get(v.start), get(v.stop), get(v.step))
            return v

        for node in m.nodes:
            if node.op == "module":
                layer, (x, *rest) = self._layer(node.target), get(node.args)
                if self.graph.modules[node.target].image:
                    env[node.name] = to_nchw(layer(to_nhwc(x), *rest))
                else:
                    env[node.name] = layer(x, *rest)
            else:
                env[node.name] = OPS[node.op](get(dict(node.kwargs)), _Call(node.name, noise, not self.deterministic))
        return get(m.output)

    def __call__(self, x, noise: Mapping[str, jax.Array] | None = None):
        return self.run("forward", x, noise=noise)

    def encode(self, x, noise=None):
        return self.run("encode", x, noise=noise)

    def decode(self, z, noise=None):
        return self.run("decode", z, noise=noise)


class _Call:
    """What an op may need besides its arguments: its node's name (the noise key), the noise, the mode."""

    def __init__(self, name: str, noise, training: bool):
        self.name, self.noise, self.training = name, noise, training

    def supplied(self, shape, what: str):
        value = None if self.noise is None else self.noise.get(self.name)
        if value is None:
            raise ValueError(f"node {self.name!r} draws {what} in torch: pass noise={{{self.name!r}: array of shape "
                             f"{tuple(shape)}}} (graph.noise_shapes() lists them; ae_core.noise draws them)")
        if tuple(value.shape) != tuple(shape):
            raise ValueError(f"noise {self.name!r} has shape {tuple(value.shape)}, expected {tuple(shape)}")
        return value


# ------------------------------------------------------------------------------------------ ops ----
def _dims(d, ndim: int) -> tuple[int, ...]:
    return tuple(x % ndim for x in (d if isinstance(d, (list, tuple)) else [d]))


def _flatten(a):
    x = a["input"]
    if x.ndim == 0:
        return x.reshape(1)
    s, e = a["start_dim"] % x.ndim, a["end_dim"] % x.ndim
    return x.reshape(x.shape[:s] + (math.prod(x.shape[s:e + 1]),) + x.shape[e + 1:])


def _unflatten(a):
    x, d = a["input"], a["dim"] % a["input"].ndim
    sizes = list(a["sizes"])
    if -1 in sizes:
        known = math.prod(s for s in sizes if s != -1)
        sizes[sizes.index(-1)] = x.shape[d] // known
    return x.reshape(x.shape[:d] + tuple(sizes) + x.shape[d + 1:])


def _chunk(a):
    x, n, d = a["input"], a["chunks"], a["dim"] % a["input"].ndim
    size = -(-x.shape[d] // n)  # torch: chunks of ceil(len / n), the last one smaller
    return tuple(jax.lax.slice_in_dim(x, i, min(i + size, x.shape[d]), axis=d) for i in range(0, x.shape[d], size))


def _repeat(a):  # torch's Tensor.repeat: more sizes than dims prepend new leading dims
    x, sizes = a["input"], tuple(a["sizes"])
    return jnp.tile(x.reshape((1,) * (len(sizes) - x.ndim) + x.shape), sizes)


def _squeeze(a):
    x, d = a["input"], a["dim"]
    if d is None:
        return jnp.squeeze(x)
    dims = tuple(i for i in _dims(d, x.ndim) if x.shape[i] == 1)  # torch: a no-op where the size is not 1
    return jnp.squeeze(x, dims) if dims else x


def _reduce(fn):
    def op(a):
        x, d = a["input"], a["dim"]
        return fn(x) if d is None else fn(x, axis=_dims(d, x.ndim), keepdims=a["keepdim"])
    return op


def _size(a):
    x, d = a["input"], a["dim"]
    return tuple(x.shape) if d is None else x.shape[d]


def _softmax(a):
    if a["dim"] is None:
        raise ValueError("softmax without dim (torch's implicit, deprecated choice): give dim=")
    return jax.nn.softmax(a["input"], axis=a["dim"])


def _softplus(a):
    x, beta, threshold = a["input"], a["beta"], a["threshold"]
    return jnp.where(x * beta > threshold, x, jnp.log1p(jnp.exp(beta * x)) / beta)


def _two(v) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else tuple(v)


def _pool_geometry(size: int, k: int, s: int, p: int, d: int, ceil_mode: bool) -> tuple[int, int]:
    """torch's pooled length and the extra right padding it implies (``ceil_mode``: a last, partial window
    that starts inside the input or the left padding)."""
    span = size + 2 * p - d * (k - 1) - 1
    out = (-(-span // s) if ceil_mode else span // s) + 1
    if ceil_mode and (out - 1) * s >= size + p:
        out -= 1
    return out, max(0, (out - 1) * s + d * (k - 1) + 1 - (size + 2 * p))


def _window(a, dilation=(1, 1)):
    x = a["input"]
    k = _two(a["kernel_size"])
    s = _two(a["stride"]) if a["stride"] not in (None, [], ()) else k
    p = _two(a["padding"])
    geo = [_pool_geometry(x.shape[2 + i], k[i], s[i], p[i], dilation[i], a["ceil_mode"]) for i in range(2)]
    pads = ((0, 0), (0, 0)) + tuple((p[i], p[i] + geo[i][1]) for i in range(2))
    return x, (1, 1) + k, (1, 1) + s, pads, p


def _max_pool2d(a):
    dilation = _two(a["dilation"])
    x, window, strides, pads, _ = _window(a, dilation)
    if dilation == (1, 1):
        return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, window, strides, pads)
    # dilated: the max of the window's shifted, strided slices (JAX has no gradient of a dilated
    # reduce_window max)
    xp = jnp.pad(x, pads, constant_values=-jnp.inf)
    (kh, kw), (sh, sw) = window[2:], strides[2:]
    oh, ow = ((xp.shape[2 + i] - dilation[i] * (window[2 + i] - 1) - 1) // strides[2 + i] + 1 for i in range(2))
    taps = [xp[:, :, i * dilation[0]: i * dilation[0] + (oh - 1) * sh + 1: sh,
               j * dilation[1]: j * dilation[1] + (ow - 1) * sw + 1: sw] for i in range(kh) for j in range(kw)]
    return functools.reduce(jnp.maximum, taps)


def _avg_pool2d(a):
    x, window, strides, pads, p = _window(a)
    total = jax.lax.reduce_window(x, 0.0, jax.lax.add, window, strides, pads)
    if a["divisor_override"]:
        return total / a["divisor_override"]
    if a["count_include_pad"]:  # the window's part inside the explicitly padded input (not the ceil_mode extra)
        inside = jnp.ones((x.shape[2] + 2 * p[0], x.shape[3] + 2 * p[1]), x.dtype)
        extra = [(0, hi - lo) for lo, hi in pads[2:]]
    else:  # the window's part inside the input itself
        inside, extra = jnp.ones(x.shape[2:], x.dtype), list(pads[2:])
    count = jax.lax.reduce_window(inside, 0.0, jax.lax.add, window[2:], strides[2:], extra)
    return total / count


def _adaptive_avg_pool2d(a):
    x = a["input"]
    out = _two(a["output_size"])
    out = tuple(x.shape[2 + i] if o is None else o for i, o in enumerate(out))

    def bins(n, m):  # torch: [floor(i * n / m), ceil((i + 1) * n / m))
        return [(i * n // m, -(-(i + 1) * n // m)) for i in range(m)]

    rows = [jnp.stack([jnp.mean(x[:, :, h0:h1, w0:w1], axis=(2, 3)) for w0, w1 in bins(x.shape[3], out[1])], axis=-1)
            for h0, h1 in bins(x.shape[2], out[0])]
    return jnp.stack(rows, axis=-2)


def _interpolate(a):
    """``F.interpolate`` on (N, C, *spatial): nearest, (bi)linear (align_corners either way)."""
    x, mode = a["input"], a["mode"]
    spatial = x.shape[2:]
    if a["size"] is not None:
        size = (a["size"],) * len(spatial) if isinstance(a["size"], int) else tuple(a["size"])
        scales = [n / m for n, m in zip(spatial, size)]
    else:
        sf = a["scale_factor"]
        sf = (sf,) * len(spatial) if isinstance(sf, (int, float)) else tuple(sf)
        size = tuple(int(math.floor(n * f)) for n, f in zip(spatial, sf))
        scales = [1.0 / f for f in sf]  # torch uses the given factor, not in / out
    for axis, (n, m, scale) in enumerate(zip(spatial, size, scales), start=2):
        dst = np.arange(m, dtype=np.float64)
        if mode == "nearest":
            x = jnp.take(x, np.minimum(np.floor(dst * scale).astype(np.int64), n - 1), axis=axis)
        elif mode == "nearest-exact":
            x = jnp.take(x, np.minimum(np.floor((dst + 0.5) * scale).astype(np.int64), n - 1), axis=axis)
        elif mode in ("linear", "bilinear"):
            if a["align_corners"]:
                src = dst * ((n - 1) / (m - 1) if m > 1 else 0.0)
            else:
                src = np.maximum((dst + 0.5) * scale - 0.5, 0.0)
            i0 = np.minimum(np.floor(src).astype(np.int64), n - 1)
            i1 = np.minimum(i0 + 1, n - 1)
            lam = jnp.asarray((src - i0).reshape((-1,) + (1,) * (x.ndim - 1 - axis)), x.dtype)
            x = jnp.take(x, i0, axis=axis) * (1 - lam) + jnp.take(x, i1, axis=axis) * lam
        else:
            raise ValueError(f"interpolate mode {mode!r} is not supported (nearest, nearest-exact, bilinear)")
    return x


def _leaky_relu(a):  # torch's gradient at exactly 0 is the slope (jax.nn.leaky_relu's is 1)
    x = a["input"]
    return jnp.where(x > 0, x, a["negative_slope"] * x)


def _elu(a):
    x = a["input"]
    return jnp.where(x > 0, x, a["alpha"] * jnp.expm1(jnp.minimum(x, 0)))


def _randn_like(a, call):
    return call.supplied(a["input"].shape, "standard normal numbers").astype(a["input"].dtype)


def _dropout(a, call):
    x, p = a["input"], a["p"]
    if not call.training or p == 0:
        return x
    return x * call.supplied(x.shape, "a dropout mask (1 = keep)").astype(x.dtype) / (1 - p)


def _plain(fn):
    return lambda a, call: fn(a)


OPS = {
    "relu": _plain(lambda a: relu(a["input"])),
    "leaky_relu": _plain(_leaky_relu),
    "elu": _plain(_elu),
    "selu": _plain(lambda a: jax.nn.selu(a["input"])),
    "gelu": _plain(lambda a: jax.nn.gelu(a["input"], approximate=a["approximate"] == "tanh")),
    "silu": _plain(lambda a: jax.nn.silu(a["input"])),
    "sigmoid": _plain(lambda a: jax.nn.sigmoid(a["input"])),
    "tanh": _plain(lambda a: jnp.tanh(a["input"])),
    "softplus": _plain(_softplus),
    "softmax": _plain(_softmax),
    "add": _plain(lambda a: a["input"] + (a["other"] if a["alpha"] == 1 else a["alpha"] * a["other"])),
    "sub": _plain(lambda a: a["input"] - (a["other"] if a["alpha"] == 1 else a["alpha"] * a["other"])),
    "mul": _plain(lambda a: a["input"] * a["other"]),
    "truediv": _plain(lambda a: a["input"] / a["other"]),
    "pow": _plain(lambda a: a["input"] ** a["exponent"]),
    "neg": _plain(lambda a: -a["input"]),
    "exp": _plain(lambda a: jnp.exp(a["input"])),
    "log": _plain(lambda a: jnp.log(a["input"])),
    "sqrt": _plain(lambda a: jnp.sqrt(a["input"])),
    "abs": _plain(lambda a: jnp.abs(a["input"])),
    "matmul": _plain(lambda a: a["input"] @ a["other"]),
    "view": _plain(lambda a: jnp.reshape(a["input"], tuple(a["shape"]))),
    "reshape": _plain(lambda a: jnp.reshape(a["input"], tuple(a["shape"]))),
    "flatten": _plain(_flatten),
    "unflatten": _plain(_unflatten),
    "permute": _plain(lambda a: jnp.transpose(a["input"], tuple(a["dims"]))),
    "repeat": _plain(_repeat),
    "transpose": _plain(lambda a: jnp.swapaxes(a["input"], a["dim0"], a["dim1"])),
    "squeeze": _plain(_squeeze),
    "unsqueeze": _plain(lambda a: jnp.expand_dims(a["input"], a["dim"] % (a["input"].ndim + 1))),
    "contiguous": _plain(lambda a: a["input"]),
    "identity": _plain(lambda a: a["input"]),
    "size": _plain(_size),
    "cat": _plain(lambda a: jnp.concatenate(list(a["tensors"]), axis=a["dim"])),
    "stack": _plain(lambda a: jnp.stack(list(a["tensors"]), axis=a["dim"])),
    "chunk": _plain(_chunk),
    "getitem": _plain(lambda a: a["input"][a["index"]]),
    "sum": _plain(_reduce(jnp.sum)),
    "mean": _plain(_reduce(jnp.mean)),
    "max_pool2d": _plain(_max_pool2d),
    "avg_pool2d": _plain(_avg_pool2d),
    "adaptive_avg_pool2d": _plain(_adaptive_avg_pool2d),
    "interpolate": _plain(_interpolate),
    "randn_like": _randn_like,
    "dropout": _dropout,
}


def build(graph: Graph, *, dtype: str | None = None, rngs: nnx.Rngs | None = None) -> GraphModule:
    """An NNX module running ``graph`` in ``dtype`` (default: the graph's). Its weights are drawn from
    ``rngs`` (torch's default distributions); a port loads the torch model's (``ae_parity.port``).
    ``dtype="float64"`` turns on ``jax_enable_x64``."""
    dtype = check_dtype(dtype or graph.dtype)
    return GraphModule(graph, rngs=rngs if rngs is not None else nnx.Rngs(0), dtype=jnp_dtype(dtype))


__all__ = ["Block", "GraphModule", "OPS", "build"]
