"""Port a PyTorch autoencoder to Flax NNX automatically: trace it to a graph, build the NNX module, load
its weights.

``port(torch_model, x)`` traces ``torch_model`` on the example batch ``x`` (``ae_torch.graph.trace``:
``forward``, and ``encode`` / ``decode`` where it has them), builds the native NNX module of that graph
(``ae_jax.graph.build``) in the torch model's dtype and loads the torch model's ``state_dict`` into it
strictly: the same names, torch's values. Nothing is half-built: an unsupported construct raises one
``PortError`` listing all of them with their source lines before any module exists.
"""

from __future__ import annotations

import jax
from flax import nnx


def port(torch_model, *example, dtype: str | None = None):
    """The NNX port of ``torch_model`` (an ``ae_jax.graph.GraphModule``) with its weights, in its mode
    (train / eval) and dtype (or ``dtype``). ``example``: one batch per ``forward`` input (torch tensors)."""
    from ae_core import check_dtype
    from ae_jax.graph import GraphModule
    from ae_jax.numerics import jnp_dtype
    from ae_jax.weights import load_state_dict
    from ae_torch.trace import trace
    from ae_torch.weights import state_dict

    graph = trace(torch_model, *example)
    dt = jnp_dtype(check_dtype(dtype or graph.dtype))
    # weights come from torch: build the module abstractly (shapes only) and load them, rather than
    # drawing every layer's random initialisation only to overwrite it
    model = nnx.eval_shape(lambda: GraphModule(graph, rngs=nnx.Rngs(0), dtype=dt))
    load_state_dict(model, state_dict(torch_model))  # strict: every variable gets the torch value
    if any(isinstance(leaf, jax.ShapeDtypeStruct) for leaf in jax.tree.leaves(nnx.state(model))):
        raise RuntimeError(f"{graph.name}: a variable of the port has no value in the torch state dict")
    if torch_model.training:
        model.train()
    else:
        model.eval()
    return model


__all__ = ["port"]
