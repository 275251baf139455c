"""Model graphs (``ae_core.graph``) as native Flax NNX modules.

:func:`build` turns a :class:`~ae_core.graph.Graph` -- typically traced from a PyTorch module by
``ae_torch.graph.trace`` -- into a :class:`GraphModule`: its layers are the NNX layers of the layer
specs (``ae_jax.layers``: ``nnx.Linear``, ``nnx.Conv``, the torch-faithful ``BatchNorm``...) held under
the torch module paths (``conv1``, ``encoder.0.0``), so ``ae_jax.load_state_dict(m,
torch_model.state_dict())`` loads strictly, and its ``__call__`` / ``encode`` / ``decode`` run the
graph's nodes with jax.numpy -- jit-able, differentiable, vmap-able like any NNX module.

Values keep torch's layout (channels first), so every functional op means what it meant in torch
(``view`` after a convolution, ``cat(dim=1)``, ``chunk``); the image layers (``LayerSpec.image``)
run channels-last, XLA's native convolution layout. An image layer's output stays channels-last while
elementwise ops consume it and the next image layer takes it as it is; it is converted once, where an
op needs torch's layout (:class:`_Values`), so a conv stack has no transpose pair per layer.
``model.train()`` / ``model.eval()`` switch modes as in torch. Random draws are supplied:
``model(x, noise={node name: array})`` with the shapes of ``graph.noise_shapes()`` (``ae_core.noise``
draws them for training); the torch graph runtime (``ae_torch.graph.GraphModule``) takes the same.
"""

from __future__ import annotations

import functools
from typing import Any, Mapping

import jax
import jax.numpy as jnp
from flax import nnx

from ae_core import check_dtype
from ae_core.graph import OPS as GRAPH_OPS
from ae_core.graph import Graph, Ref, bind_inputs, eval_method, is_list, module_tree, refs, resolve

import ae_jax.functional as functional
from .layers import make_layer, relu, to_channels_first, to_channels_last
from .numerics import jnp_dtype


class Block(nnx.Module):
    """A torch container (``nn.Sequential``, a user's block): its children under their torch names."""

    def __init__(self, children: Mapping[str, nnx.Module]):
        for name, child in children.items():
            setattr(self, name, child)


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
        for name, child in _blocks(module_tree(layers)).items():
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
        values = _Values(bind_inputs(self.graph.name, method, m.inputs, args, inputs))
        get = values.get
        for node in m.nodes:
            if node.op == "module":
                spec, layer = self.graph.modules[node.target], self._layer(node.target)
                x_ref, *rest = node.args
                rest = [*values.get(rest), *(self._input(what, spec, node.name, noise) for what in spec.inputs)]
                if spec.image:
                    values.put_last(node.name, layer(values.last(x_ref), *rest))
                elif spec.kind == "activation" and values.is_last(x_ref):  # elementwise: in either layout
                    values.put_last(node.name, _elementwise(layer, values.last(x_ref), spec.name == "relu"))
                else:
                    values.put(node.name, layer(get(x_ref), *rest))
            elif GRAPH_OPS[node.op].noise in _DRAWN:  # randn_like, rand_like, randn, rand
                a = get(dict(node.kwargs))
                shape = a["input"].shape if "input" in a else tuple(a["size"])
                a["noise"] = _noise(node.name, noise, shape, _DRAWN[GRAPH_OPS[node.op].noise])
                values.put(node.name, OPS[node.op](**a))
            elif node.op == "dropout" and not self.deterministic:
                x = get(node.kwargs["input"])
                mask = _noise(node.name, noise, x.shape, "a dropout mask (1 = keep)")
                values.put(node.name, OPS["dropout"](x, node.kwargs["p"], mask=mask, training=True))
            elif node.op == "dropout":
                values.alias(node.name, node.kwargs["input"])
            elif _layout_free(node) and values.is_last(node.kwargs["input"]):
                kw = dict(node.kwargs)
                x = values.last(kw.pop("input"))
                values.put_last(node.name, _elementwise(functools.partial(OPS[node.op], **kw), x, node.op == "relu"))
            else:
                values.put(node.name, OPS[node.op](**get(dict(node.kwargs))))
        return get(m.output)

    def _input(self, what: str, spec, name: str, noise):
        """What a layer spec takes besides its activations (``LayerSpec.inputs``): its supplied noise, or the
        kernel of the Linear it is tied to."""
        if what == "noise":
            return None if noise is None else noise.get(name)
        if what == "tied_weight":
            return self._layer(spec.tied_to).kernel.get_value()
        raise TypeError(f"ae_jax does not know how to supply {what!r} to {spec}")

    def __call__(self, x, *more, noise: Mapping[str, jax.Array] | None = None, **inputs):
        return self.run("forward", x, *more, noise=noise, **inputs)

    def encode(self, x, noise=None):
        """The code (a preset VAE's: the mean in eval mode, a sample in train mode)."""
        return self.run("encode", x, noise=noise)

    def decode(self, z, noise=None):
        return self.run("decode", z, noise=noise)


_DRAWN = {"normal": "standard normal numbers", "uniform": "U[0, 1) numbers"}

# Ops that compute each element from that element alone (their other arguments numbers): they run on a
# channels-last value as it is, so consecutive image layers with activations between them stay channels-last
# (the presets' conv stacks compile as they did before they were graphs, without a transpose pair per layer).
_ELEMENTWISE = {"relu", "leaky_relu", "elu", "selu", "gelu", "silu", "sigmoid", "tanh", "softplus", "neg", "exp",
                "log", "sqrt", "abs", "identity", "contiguous", "add", "sub", "mul", "truediv", "pow"}


def _layout_free(node) -> bool:
    """An elementwise op whose only array argument is ``input``."""
    return node.op in _ELEMENTWISE and isinstance(node.kwargs.get("input"), Ref) and \
        not refs(*(v for k, v in node.kwargs.items() if k != "input"))


def _elementwise(fn, x_last, is_relu: bool):
    """``fn`` on a channels-last value; a ReLU's recorded input (``ae_jax.layers.relu_inputs``, the parity
    tools') is in torch's layout all the same."""
    return relu(x_last, recorded=to_channels_first) if is_relu else fn(x_last)


class _Values:
    """A method's values by name, each held in torch's layout or, an image layer's output, channels-last;
    converted once, where a consumer needs the other."""

    def __init__(self, inputs: Mapping[str, Any]):
        self.first: dict[str, Any] = dict(inputs)
        self.channels_last: dict[str, Any] = {}

    def is_last(self, ref) -> bool:
        return isinstance(ref, Ref) and ref.name in self.channels_last

    def put(self, name: str, value) -> None:
        self.first[name] = value

    def put_last(self, name: str, value) -> None:
        if getattr(value, "ndim", 0) >= 3:
            self.channels_last[name] = value
        else:  # (N, C): the same in both layouts
            self.first[name] = value

    def alias(self, name: str, ref) -> None:
        if self.is_last(ref):
            self.channels_last[name] = self.channels_last[ref.name]
        else:
            self.first[name] = self.get(ref)

    def last(self, ref):
        return self.channels_last[ref.name] if self.is_last(ref) else to_channels_last(self.get(ref))

    def get(self, v):
        """``v`` with its references resolved in torch's layout."""
        for r in refs(v):
            if r.name not in self.first:
                self.first[r.name] = to_channels_first(self.channels_last[r.name])
        return resolve(v, self.first)


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
