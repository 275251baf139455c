"""Model graphs (``ae_core.graph``) run by PyTorch: the torch side of a port (mirrors ``ae_jax/graph.py``).

:class:`GraphModule` runs a graph in torch -- its layers built from the specs under their torch module
paths, so a traced model's ``state_dict`` loads strictly -- with optional supplied noise for the graph's
random draws: the torch side of a port's parity certificate, where both frameworks get the same random
numbers. Without noise it draws them as the traced code did (same seed, same numbers). The graph of a
torch module comes from :func:`~ae_torch.trace.trace`.
"""

from __future__ import annotations

import operator
from typing import Any, Mapping

import torch
from torch import nn
from torch.nn import functional as F

from ae_core.graph import Graph, bind_inputs, eval_method, is_list, module_tree, resolve

from .layers import make_layer
from .trace import PortError, trace

# ------------------------------------------------------------------------------ the torch runtime ----
class _Call:
    """What an op may need besides its arguments: its node's name (the noise key), the noise, the mode."""

    def __init__(self, name: str, noise, training: bool):
        self.name, self.noise, self.training = name, noise, training

    def supplied(self):
        value = None if self.noise is None else self.noise.get(self.name)
        return None if value is None else torch.as_tensor(value)


def _like(draw):
    def op(a, call):
        given = call.supplied()
        return draw(a["input"]) if given is None else given.to(a["input"].dtype)
    return op


def _sized(draw):  # torch.randn / torch.rand: the dtype given, else torch's default
    def op(a, call):
        dtype = getattr(torch, a["dtype"]) if a["dtype"] else torch.get_default_dtype()
        given = call.supplied()
        return draw(*a["size"], dtype=dtype) if given is None else given.to(dtype)
    return op


def _dropout(a, call):
    x, p = a["input"], a["p"]
    if not call.training or p == 0:
        return x
    given = call.supplied()
    return F.dropout(x, p, True) if given is None else x * given.to(x.dtype) / (1 - p)


def _reduce(fn):
    def op(a, call):
        x, d = a["input"], a["dim"]
        return fn(x) if d is None else fn(x, d, keepdim=a["keepdim"])
    return op


def _plain(fn):
    return lambda a, call: fn(a)


def _unary(fn):
    return lambda a, call: fn(a["input"])


def _binary(fn, other="other"):
    return lambda a, call: fn(a["input"], a[other])


def _scaled(fn):  # add / sub with alpha
    return lambda a, call: fn(a["input"], a["other"] if a["alpha"] == 1 else a["alpha"] * a["other"])


# One torch implementation per graph op (ae_core.graph.OPS), the arguments normalised to keywords.
OPS = {
    "relu": _unary(torch.relu),
    "leaky_relu": _plain(lambda a: F.leaky_relu(a["input"], a["negative_slope"])),
    "elu": _plain(lambda a: F.elu(a["input"], a["alpha"])),
    "selu": _unary(F.selu),
    "gelu": _plain(lambda a: F.gelu(a["input"], approximate=a["approximate"])),
    "silu": _unary(F.silu),
    "sigmoid": _unary(torch.sigmoid),
    "tanh": _unary(torch.tanh),
    "softplus": _plain(lambda a: F.softplus(a["input"], a["beta"], a["threshold"])),
    "softmax": _plain(lambda a: F.softmax(a["input"], dim=a["dim"])),
    "add": _scaled(operator.add),
    "sub": _scaled(operator.sub),
    "mul": _binary(operator.mul),
    "truediv": _binary(operator.truediv),
    "pow": _binary(operator.pow, "exponent"),
    "neg": _unary(operator.neg),
    "exp": _unary(torch.exp),
    "log": _unary(torch.log),
    "sqrt": _unary(torch.sqrt),
    "abs": _unary(torch.abs),
    "matmul": _binary(operator.matmul),
    "view": _plain(lambda a: a["input"].view(*a["shape"])),
    "reshape": _plain(lambda a: a["input"].reshape(*a["shape"])),
    "flatten": _plain(lambda a: torch.flatten(a["input"], a["start_dim"], a["end_dim"])),
    "unflatten": _plain(lambda a: a["input"].unflatten(a["dim"], a["sizes"])),
    "permute": _plain(lambda a: a["input"].permute(*a["dims"])),
    "repeat": _plain(lambda a: a["input"].repeat(*a["sizes"])),
    "transpose": _plain(lambda a: a["input"].transpose(a["dim0"], a["dim1"])),
    "squeeze": _plain(lambda a: a["input"].squeeze() if a["dim"] is None else a["input"].squeeze(a["dim"])),
    "unsqueeze": _plain(lambda a: a["input"].unsqueeze(a["dim"])),
    "contiguous": _unary(lambda x: x),
    "identity": _unary(lambda x: x),
    "size": _plain(lambda a: a["input"].size() if a["dim"] is None else a["input"].size(a["dim"])),
    "cat": _plain(lambda a: torch.cat(list(a["tensors"]), dim=a["dim"])),
    "stack": _plain(lambda a: torch.stack(list(a["tensors"]), dim=a["dim"])),
    "chunk": _plain(lambda a: torch.chunk(a["input"], a["chunks"], dim=a["dim"])),
    "getitem": _plain(lambda a: a["input"][a["index"]]),
    "sum": _reduce(torch.sum),
    "mean": _reduce(torch.mean),
    "max_pool2d": _plain(lambda a: F.max_pool2d(a["input"], a["kernel_size"], a["stride"], a["padding"],
                                                a["dilation"], a["ceil_mode"])),
    "avg_pool2d": _plain(lambda a: F.avg_pool2d(a["input"], a["kernel_size"], a["stride"], a["padding"],
                                                a["ceil_mode"], a["count_include_pad"], a["divisor_override"])),
    "adaptive_avg_pool2d": _plain(lambda a: F.adaptive_avg_pool2d(a["input"], a["output_size"])),
    "interpolate": _plain(lambda a: F.interpolate(a["input"], a["size"], a["scale_factor"], a["mode"],
                                                  a["align_corners"])),
    "layer_norm": _plain(lambda a: F.layer_norm(a["input"], a["normalized_shape"], a["weight"], a["bias"], a["eps"])),
    "group_norm": _plain(lambda a: F.group_norm(a["input"], a["num_groups"], a["weight"], a["bias"], a["eps"])),
    "batch_norm": _plain(lambda a: F.batch_norm(a["input"], a["running_mean"], a["running_var"], a["weight"],
                                                a["bias"], a["training"], a["momentum"], a["eps"])),
    "randn_like": _like(torch.randn_like),
    "rand_like": _like(torch.rand_like),
    "randn": _sized(torch.randn),
    "rand": _sized(torch.rand),
    "dropout": _dropout,
}


class GraphModule(nn.Module):
    """A graph run by torch: its layers built from the specs under their torch paths (containers are
    ``nn.Module`` holders), so a traced model's ``state_dict`` loads strictly. ``noise``: ``{node name:
    tensor}`` for the graph's random draws (:meth:`Graph.noise_shapes`); where absent, torch draws them."""

    def __init__(self, graph: Graph):
        super().__init__()
        self.graph = graph
        for name, child in _containers(module_tree({p: make_layer(s) for p, s in graph.modules.items()})).items():
            self.add_module(name, child)
        self.layers = dict(self.named_modules())

    def run(self, method: str, *args, noise: Mapping[str, torch.Tensor] | None = None, **inputs):
        """Run one of the graph's methods on its inputs by position or by their torch names, in the current
        mode (the eval-mode trace where the code differs between the modes)."""
        if not self.training:
            method = eval_method(self.graph, method)
        m = self.graph.methods[method]
        env: dict[str, Any] = bind_inputs(self.graph.name, method, m.inputs, args, inputs)

        def get(v):
            return resolve(v, env)

        for node in m.nodes:
            if node.op == "module":
                spec = self.graph.modules[node.target]
                extra = [self._input(what, spec, node.name, noise) for what in spec.inputs]
                env[node.name] = self.layers[node.target](*get(node.args), *extra)
            else:
                env[node.name] = OPS[node.op](get(dict(node.kwargs)), _Call(node.name, noise, self.training))
        return get(m.output)

    def _input(self, what: str, spec, name: str, noise):
        """What a layer spec takes besides its activations (``LayerSpec.inputs``): its supplied noise (None:
        torch draws it), or the weight of the layer it is tied to."""
        if what == "noise":
            return _Call(name, noise, self.training).supplied()
        if what == "tied_weight":
            return self.layers[spec.tied_to].weight
        raise TypeError(f"ae_torch does not know how to supply {what!r} to {spec}")

    def forward(self, x, *more, noise: Mapping[str, torch.Tensor] | None = None, **inputs):
        return self.run("forward", x, *more, noise=noise, **inputs)

    def encode(self, x, noise=None):
        """The code (a preset VAE's: the mean in eval mode, a sample in train mode)."""
        return self.run("encode", x, noise=noise)

    def decode(self, z, noise=None):
        return self.run("decode", z, noise=noise)


class Block(nn.Module):
    """A torch container of a graph's layers that is not a Sequential (a user's block): its children."""


def _containers(tree: Mapping[str, Any]) -> dict[str, nn.Module]:
    """Nested dicts of layers -> torch containers: ``nn.Sequential`` where the children are ``0 .. n-1``
    (the tutorials' tree, ``model.decoder[-1]``), a :class:`Block` otherwise."""
    out = {}
    for name, child in tree.items():
        if isinstance(child, dict):
            kids = _containers(child)
            if is_list(kids):
                child = nn.Sequential(*kids.values())
            else:
                child = Block()
                for k, m in kids.items():
                    child.add_module(k, m)
        out[name] = child
    return out


def build(graph: Graph, *, dtype: str | None = None) -> GraphModule:
    """A torch module running ``graph`` (float32 unless ``dtype`` or the graph says otherwise)."""
    model = GraphModule(graph)
    return model.to({"float32": torch.float32, "float64": torch.float64}[dtype or graph.dtype])


__all__ = ["Block", "GraphModule", "OPS", "PortError", "build", "trace"]
