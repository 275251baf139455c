"""Canonical state dicts and safetensors files for torch models (mirrors ae_jax/weights.py).

``torch.nn.Module.load_state_dict`` copies every matching tensor *before* it reports size mismatches,
leaving a half-loaded model; :func:`load_state_dict` validates everything first (one error listing all
problems) and loads only when everything fits.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import torch

from ae_core import check_dtype
from ae_core import weights as core_weights
from ae_core.weights import check_state_dict


def model_dtype(model: torch.nn.Module) -> str:
    """"float32" or "float64": the dtype of a model's parameters (which must all agree)."""
    dtypes = {p.dtype for p in model.parameters()}
    if len(dtypes) != 1:
        raise ValueError(f"model parameters have mixed dtypes {sorted(map(str, dtypes))}")
    return check_dtype(dtypes.pop())


def expected_shapes(model: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    """Canonical names -> shapes of everything in ``model``'s state dict (parameters and buffers)."""
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def int_keys(model: torch.nn.Module) -> set[str]:
    """Names of the integer entries (counters such as ``num_batches_tracked``) of ``model``'s state dict."""
    return {k for k, v in model.state_dict().items() if not v.is_floating_point()}


def param_names(model: torch.nn.Module) -> list[str]:
    """Canonical names of the trainable parameters (``named_parameters``)."""
    return [name for name, _ in model.named_parameters()]


def state_dict(model: torch.nn.Module) -> dict[str, np.ndarray]:
    """``{torch name: numpy array}`` (copies), the canonical form ``ae_jax.load_state_dict`` takes."""
    return {k: v.detach().cpu().numpy().copy() for k, v in model.state_dict().items()}


def load_state_dict(model: torch.nn.Module, state_dict: Mapping[str, Any], strict: bool = True):
    """Validate, then load (numpy arrays or tensors); on any problem raise and change nothing."""
    arrays = check_state_dict(expected_shapes(model), state_dict, strict=strict, int_keys=int_keys(model))
    ref = dict(model.state_dict())
    tensors = {k: torch.as_tensor(np.asarray(v)).to(dtype=ref[k].dtype, device=ref[k].device)
               for k, v in arrays.items()}
    return model.load_state_dict(tensors, strict=strict)


def save_weights(model, path) -> None:
    """Save a model's weights as safetensors (atomically), with its spec and dtype in the metadata."""
    core_weights.save_weights(path, state_dict(model), model.spec, model_dtype(model))


def load_weights(model, path) -> None:
    """Load a safetensors weights file written by either framework (or plain torch code)."""
    load_state_dict(model, core_weights.load_weights(path, model.spec, model_dtype(model)))
