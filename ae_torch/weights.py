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
from ae_core.weights import FLOAT_DTYPES, Names, StateDictError, check_state_dict, model_spec


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


def load_state_dict(model: torch.nn.Module, state_dict: Mapping[str, Any], strict: bool = True,
                    names: Names = None):
    """Validate, then load (numpy arrays or tensors); on any problem raise and change nothing.

    ``names`` renames the state dict's keys to the model's first: ``{"fc21": "fc_mu"}`` (torch-name
    prefixes, ``fc21.weight`` -> ``fc_mu.weight``) or a function ``str -> str``; see
    :func:`ae_core.weights.fit_state_dict`, which raises one :class:`StateDictError` listing every problem.
    """
    ref = dict(model.state_dict())
    arrays = check_state_dict(expected_shapes(model), state_dict, strict=strict, int_keys=int_keys(model),
                              names=names, dtypes={k: str(v.dtype).replace("torch.", "") for k, v in ref.items()})
    tensors = {k: torch.as_tensor(np.asarray(v)).to(dtype=ref[k].dtype, device=ref[k].device)
               for k, v in arrays.items()}
    return model.load_state_dict(tensors, strict=strict)


def _file_dtype(model: torch.nn.Module, spec) -> str | None:
    """The dtype a weights file records and is checked against: a preset's (all parameters agree, or it is
    an error, as ever); a hand-written model's parameters' one floating dtype, or None where they have
    several (or none) -- its tensors are then cast on load like any state dict's."""
    if spec is not None:
        return model_dtype(model)
    dtypes = {str(p.dtype).replace("torch.", "") for p in model.parameters()}
    return dtypes.pop() if len(dtypes) == 1 and dtypes <= set(FLOAT_DTYPES) else None


def save_weights(model: torch.nn.Module, path) -> None:
    """Save a model's weights as safetensors in torch naming (atomically), for any ``nn.Module``.

    A model built from a spec records the spec and dtype, so that loading refuses another architecture; a
    hand-written model records its dtype (where its parameters have one), the framework and its class,
    and is checked by names and shapes when loaded."""
    spec = model_spec(model)
    extra = None if spec is not None else core_weights.hand_written_metadata(model, "torch")
    core_weights.save_weights(path, state_dict(model), spec, _file_dtype(model, spec), extra)


def load_weights(model: torch.nn.Module, path, *, names: Names = None) -> None:
    """Load a safetensors weights file written by either framework (or plain torch code) into any model.

    The file's spec is checked against the model's where both have one, its dtype where both have one;
    then its tensors by names and shapes (after ``names``, as in :func:`load_state_dict`). Any problem is
    one error naming the file, and the model is left as it was."""
    spec = model_spec(model)
    tensors = core_weights.load_weights(path, spec, _file_dtype(model, spec))
    try:
        load_state_dict(model, tensors, names=names)
    except StateDictError as e:
        raise StateDictError(e.problems, f"weights file {path}") from None

