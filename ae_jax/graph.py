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

from typing import Any, Mapping

import jax
import jax.numpy as jnp
from flax import nnx

from ae_core import check_dtype
from ae_core.graph import OPS as GRAPH_OPS
from ae_core.graph import Graph, bind_inputs, eval_method, resolve

from . import functional
from .layers import make_layer, to_channels_first, to_channels_last
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


def is_list(keys) -> bool:
    """Children named 0, 1, ... n-1 (an ``nn.Sequential`` / ``nn.ModuleList`` with every child ported)
    become an ``nnx.List``; any other names (a user's block, a Sequential whose parameter-free children
    are ops) a :class:`Block`."""
    return list(keys) == [str(i) for i in range(len(keys))]


def _blocks(tree: Mapping[str, Any]) -> dict[str, nnx.Module]:
    out = {k: _blocks(v) if isinstance(v, dict) else v for k, v in tree.items()}
    return {k: (nnx.List(list(v.values())) if is_list(v) else Block(v)) if isinstance(v, dict) else v
            for k, v in out.items()}


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
            obj = obj[int(part)] if isinstance(obj, nnx.List) else getattr(obj, part)
        return obj

    def run(self, method: str, *args, noise: Mapping[str, jax.Array] | None = None, **inputs):
        """Run one of the graph's methods (``forward``, ``encode``, ``decode``) in the current mode, on its
        inputs by position or by their torch names."""
        if self.deterministic:
            method = eval_method(self.graph, method)
        if method not in self.graph.methods:
            raise AttributeError(f"{self.graph.name} has no {method.split('@')[0]!r} (traced: "
                                 f"{', '.join(m for m in self.graph.methods if '@' not in m)})")
        m = self.graph.methods[method]
        env: dict[str, Any] = bind_inputs(self.graph.name, method, m.inputs, args, inputs)

        def get(v):
            return resolve(v, env)

        for node in m.nodes:
            if node.op == "module":
                layer, (x, *rest) = self._layer(node.target), get(node.args)
                if self.graph.modules[node.target].image:
                    env[node.name] = to_channels_first(layer(to_channels_last(x), *rest))
                else:
                    env[node.name] = layer(x, *rest)
            elif node.op == "randn_like":
                x = get(node.kwargs["input"])
                env[node.name] = OPS["randn_like"](x, _noise(node.name, noise, x.shape, "standard normal numbers"))
            elif node.op == "dropout" and not self.deterministic:
                x = get(node.kwargs["input"])
                mask = _noise(node.name, noise, x.shape, "a dropout mask (1 = keep)")
                env[node.name] = OPS["dropout"](x, node.kwargs["p"], mask=mask, training=True)
            elif node.op == "dropout":
                env[node.name] = get(node.kwargs["input"])
            else:
                env[node.name] = OPS[node.op](**get(dict(node.kwargs)))
        return get(m.output)

    def __call__(self, x, *more, noise: Mapping[str, jax.Array] | None = None, **inputs):
        return self.run("forward", x, *more, noise=noise, **inputs)

    def encode(self, x, noise=None):
        return self.run("encode", x, noise=noise)

    def decode(self, z, noise=None):
        return self.run("decode", z, noise=noise)


def _noise(name: str, noise, shape, what: str):
    value = None if noise is None else noise.get(name)
    if value is None:
        raise ValueError(f"node {name!r} draws {what} in torch: pass noise={{{name!r}: array of shape {tuple(shape)}}} "
                         f"(graph.noise_shapes() lists them; ae_core.noise draws them)")
    return value


# One implementation per graph op (ae_core.graph.OPS): torch's functional ops in jax (ae_jax.functional).
OPS = {name: getattr(functional, name) for name in GRAPH_OPS}


def build(graph: Graph, *, dtype: str | None = None, rngs: nnx.Rngs | None = None) -> GraphModule:
    """An NNX module running ``graph`` in ``dtype`` (default: the graph's). Its weights are drawn from
    ``rngs`` (torch's default distributions); a port loads the torch model's (``ae_parity.port``).
    ``dtype="float64"`` turns on ``jax_enable_x64``."""
    dtype = check_dtype(dtype or graph.dtype)
    return GraphModule(graph, rngs=rngs if rngs is not None else nnx.Rngs(0), dtype=jnp_dtype(dtype))


__all__ = ["Block", "GraphModule", "OPS", "build"]
