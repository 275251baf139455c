"""safetensors files for NNX models (mirrors ae_torch/weights.py); the layout rules live in convert.py."""

from __future__ import annotations

import jax
from flax import nnx

from ae_core import check_dtype
from ae_core import weights as core_weights

from .convert import load_state_dict, state_dict


def model_dtype(model: nnx.Module) -> str:
    """"float32" or "float64": the dtype of a model's parameters (which must all agree)."""
    dtypes = {leaf.dtype for leaf in jax.tree.leaves(nnx.state(model, nnx.Param))}
    if len(dtypes) != 1:
        raise ValueError(f"model parameters have mixed dtypes {sorted(map(str, dtypes))}")
    return check_dtype(dtypes.pop().name)


def save_weights(model, path) -> None:
    """Save a model's weights as safetensors in torch naming/layout (atomically), spec and dtype recorded."""
    core_weights.save_weights(path, state_dict(model), model.spec, model_dtype(model))


def load_weights(model, path) -> None:
    """Load a safetensors weights file written by either framework (or plain torch code)."""
    load_state_dict(model, core_weights.load_weights(path, model.spec, model_dtype(model)))
