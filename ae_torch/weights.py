"""Canonical state dicts and safetensors files for torch models (mirrors ae_jax/convert.py's API).

``torch.nn.Module.load_state_dict`` copies every matching tensor *before* it reports size mismatches,
leaving a half-loaded model; :func:`load_state_dict` validates everything first (one error listing all
problems) and loads only when everything fits.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import torch

from ae_core import weights as core_weights
from ae_core.weights import check_state_dict

from .models import model_dtype


def state_dict(model: torch.nn.Module) -> dict[str, np.ndarray]:
    """``{torch name: numpy array}`` (copies), the canonical form ``ae_jax.load_state_dict`` takes."""
    return {k: v.detach().cpu().numpy().copy() for k, v in model.state_dict().items()}


def load_state_dict(model: torch.nn.Module, state_dict: Mapping[str, Any], strict: bool = True):
    """Validate, then load (numpy arrays or tensors); on any problem raise and change nothing."""
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    ints = {k for k, v in model.state_dict().items() if not v.is_floating_point()}
    arrays = check_state_dict(expected, state_dict, strict=strict, int_keys=ints)
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
