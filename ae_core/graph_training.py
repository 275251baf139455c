"""Training a model graph (``ae_core.graph``) the way a preset trains: what its loss compares, its checks.

A graph -- a ported torch model (``ae_torch.trace``) or a graph file -- trains as an autoencoder on its
FIRST output array (of a tuple / list / dict output: the first leaf), which must have the input's shape,
against the input batch, with the presets' loss names:

- ``"mse"`` (the default): ``nn.MSELoss()`` between that array and the input;
- ``"bce"``: ``nn.BCEWithLogitsLoss()`` as for the presets ending in Sigmoid: that array must be a
  sigmoid's output (``torch.sigmoid``, ``F.sigmoid``, ``nn.Sigmoid``) and the loss takes the sigmoid's
  input, the logits (no clamping of log(0));
- ``"vae"`` is the presets' ELBO of a ``GaussianHead``; a graph has no such head, and is refused it.

:func:`loss_graph` is what both frameworks train: the same modules (the same state dict, the same
names), ``forward`` (and ``forward@eval``) returning that one array. The graph's random draws are
``ae_core.noise``'s, as for the presets (:meth:`Graph.noise_shapes`).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Mapping

from .errors import UsageError
from .graph import Graph, Method, Ref, eval_method
from .layers import Activation

GRAPH_LOSSES = ("mse", "bce")


def first_leaf(output: Any):
    """The first leaf of an output structure (tuple / list / dict, nested), or the output itself."""
    while isinstance(output, (list, tuple, Mapping)):
        if not output:
            return None
        output = next(iter(output.values())) if isinstance(output, Mapping) else output[0]
    return output


def _shape(graph: Graph, method: Method, ref: Ref) -> tuple[int, ...] | None:
    """The per-example shape of ``ref`` in the traced call (None: not an array)."""
    if ref.name in method.inputs:
        return tuple(graph.input_shape) if ref.name == method.inputs[0] else None
    node = next(n for n in method.nodes if n.name == ref.name)
    return None if node.shape is None else tuple(node.shape[1:])


def loss_output(graph: Graph, loss: str = "mse", method: str = "forward") -> Ref:
    """The value the loss of ``graph`` compares with the input (see the module docstring): the first
    output of ``method``, or for ``"bce"`` the logits going into the sigmoid that makes it. UsageError
    (one line, naming the output and the shapes) when the graph cannot train on ``loss``."""
    if loss not in GRAPH_LOSSES:
        raise UsageError(f"{graph.name}: a model graph trains on loss {' or '.join(GRAPH_LOSSES)}, not {loss!r}"
                         + (" (the 'vae' loss is the presets' GaussianHead ELBO)" if loss == "vae" else ""))
    m = graph.methods[method]
    ref = first_leaf(m.output)
    if not isinstance(ref, Ref):
        raise UsageError(f"{graph.name}: the first output of {method} is {ref!r}, not an array computed by the "
                         f"model; a graph trains as an autoencoder, on its first output")
    shape = _shape(graph, m, ref)
    if shape != tuple(graph.input_shape):
        raise UsageError(f"{graph.name}: the first output of {method} ({ref.name!r}) has the per-example shape "
                         f"{shape}, not the input's {tuple(graph.input_shape)}: a graph trains as an autoencoder, "
                         f"its first output (of a tuple / list / dict: the first leaf) reconstructing the input")
    if loss == "bce":
        node = next((n for n in m.nodes if n.name == ref.name), None)
        logits = None
        if node is not None and node.op == "sigmoid":
            logits = node.kwargs.get("input")
        elif node is not None and node.op == "module" and graph.modules[node.target] == Activation("sigmoid"):
            logits = node.args[0]  # a lowered spec's nn.Sigmoid() module (ae_core.lowering)
        if not isinstance(logits, Ref):
            made = "an input" if node is None else f"{node.op}" + (f" ({node.target})" if node.target else "")
            raise UsageError(f"{graph.name}: loss 'bce' is computed from logits and needs the first output of "
                             f"{method} to be a sigmoid's; {ref.name!r} is {made}")
        ref = logits
    return ref


def check_graph_loss(graph: Graph, loss: str) -> None:
    """Raise UsageError if ``graph`` cannot train on ``loss`` (in either mode's forward)."""
    for method in dict.fromkeys(("forward", eval_method(graph))):
        loss_output(graph, loss, method)


def loss_graph(graph: Graph, loss: str = "mse") -> Graph:
    """``graph`` with ``forward`` (and ``forward@eval``) returning only what ``loss`` compares with the
    input (:func:`loss_output`); the same modules, so the same state dict."""
    methods = dict(graph.methods)
    for method in dict.fromkeys(("forward", eval_method(graph))):
        methods[method] = replace(methods[method], output=loss_output(graph, loss, method))
    return replace(graph, methods=methods)


__all__ = ["GRAPH_LOSSES", "check_graph_loss", "eval_method", "first_leaf", "loss_graph", "loss_output"]
