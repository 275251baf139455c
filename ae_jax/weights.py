"""Canonical state dicts and safetensors files for NNX models (mirrors ae_torch/weights.py).

The canonical form is ``{torch name: numpy array in torch layout}``; which NNX variable is which torch
parameter, and in which layout, is the rule table's business (``ae_jax/convert.py``). Every function
takes ``rules`` for NNX classes of your own (``{cls: (ParamRule, ...)}``), consulted before the table.
"""

from __future__ import annotations

from typing import Any, Mapping, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from ae_core import check_dtype
from ae_core import weights as core_weights
from ae_core.weights import FLOAT_DTYPES, Names, StateDictError, fit_state_dict

from .convert import Rules, bindings, expected_shapes, int_keys, param_names


class LoadResult(NamedTuple):
    missing_keys: list[str]
    unexpected_keys: list[str]


def model_dtype(model: nnx.Module) -> str:
    """"float32" or "float64": the dtype of a model's parameters (which must all agree)."""
    dtypes = {leaf.dtype for leaf in jax.tree.leaves(nnx.state(model, nnx.Param))}
    if len(dtypes) != 1:
        raise ValueError(f"model parameters have mixed dtypes {sorted(map(str, dtypes))}")
    return check_dtype(dtypes.pop().name)


def state_dict(model: nnx.Module, rules: Rules | None = None) -> dict[str, np.ndarray]:
    """``{torch name: numpy array in torch layout}``: what ``torch_model.load_state_dict`` takes.

    Counters come out as int64, torch's dtype for them."""
    return {b.name: np.array(b.rule.to_torch(np.asarray(b.variable.get_value())),
                             dtype=np.int64 if b.rule.integer else None) for b in bindings(model, rules)}


def load_state_dict(model: nnx.Module, state_dict: Mapping[str, Any], strict: bool = True,
                    rules: Rules | None = None, names: Names = None) -> LoadResult:
    """Load a canonical state dict (torch tensors or numpy arrays) into ``model``, in place.

    Validates everything first and raises one :class:`StateDictError` listing every problem (missing or
    unexpected keys when ``strict``, wrong shapes, non-float dtypes), in which case the model is left
    exactly as it was. Values are cast to the model's parameter dtype, as ``torch``'s ``copy_`` does.
    Unlike ``torch.nn.Module.load_state_dict``, which copies the matching tensors before it reports
    size mismatches, nothing is assigned unless everything fits. ``names`` renames the state dict's keys
    to the model's canonical names first: ``{"fc21": "fc_mu"}`` (torch-name prefixes) or a function
    ``str -> str`` (:func:`ae_core.weights.fit_state_dict`); the result's ``unexpected_keys`` are renamed.
    """
    binds = bindings(model, rules)
    fit = fit_state_dict({b.name: b.torch_shape() for b in binds}, state_dict, strict=strict,
                         int_keys={b.name for b in binds if b.rule.integer}, names=names,
                         dtypes={b.name: np.dtype(b.variable.dtype).name for b in binds})
    new_values = {}
    for b in binds:
        if b.name in fit.arrays:
            # jnp.array copies: jnp.asarray may alias the numpy buffer on CPU, and a torch tensor's .numpy()
            # shares torch's memory -- a later in-place torch update (a BatchNorm's running statistics)
            # would silently change the JAX model
            new_values[b.name] = jnp.array(b.rule.from_torch(fit.arrays[b.name]), dtype=b.variable.dtype, copy=True)
    for b in binds:  # all converted: now assign (cannot fail half-way)
        if b.name in new_values:
            b.variable.set_value(new_values[b.name])
    return LoadResult(missing_keys=fit.missing, unexpected_keys=fit.unexpected)


def to_torch_layout(model: nnx.Module, tree: nnx.State, rules: Rules | None = None) -> dict[str, np.ndarray]:
    """A state shaped like ``model``'s parameters (e.g. gradients) as a canonical dict of the parameters."""
    shadow = nnx.clone(model)
    nnx.update(shadow, tree)
    params = set(param_names(shadow, rules))
    return {k: v for k, v in state_dict(shadow, rules).items() if k in params}


def from_torch_layout(model: nnx.Module, tensors: Mapping[str, Any], rules: Rules | None = None) -> nnx.State:
    """A canonical dict (every parameter of ``model``) as an ``nnx.State`` shaped like the model's params.

    The inverse of :func:`to_torch_layout`; used for optimizer state (Adam moments, momentum buffers)."""
    params = set(param_names(model, rules))
    problems = [f"missing key {n!r}" for n in sorted(params - set(tensors))]
    problems += [f"unexpected key {k!r}" for k in tensors if k not in params]
    if problems:
        raise StateDictError(problems, "optimizer state")
    shadow = nnx.clone(model)
    load_state_dict(shadow, tensors, strict=False, rules=rules)
    return nnx.state(shadow, nnx.Param)


def _file_dtype(model: nnx.Module, spec) -> str | None:
    """The dtype a weights file records and is checked against: a preset's (all parameters agree, or it is
    an error, as ever); a hand-written model's parameters' one floating dtype, or None where they have
    several (or none) -- its tensors are then cast on load like any state dict's."""
    if spec is not None:
        return model_dtype(model)
    dtypes = {np.dtype(leaf.dtype).name for leaf in jax.tree.leaves(nnx.state(model, nnx.Param))}
    return dtypes.pop() if len(dtypes) == 1 and dtypes <= set(FLOAT_DTYPES) else None


def save_weights(model: nnx.Module, path, *, rules: Rules | None = None) -> None:
    """Save a model's weights as safetensors in torch naming/layout (atomically), for any NNX model.

    A model built from a spec records the spec and dtype, so that loading refuses another architecture; a
    hand-written model records its dtype (where its parameters have one), the framework and its class,
    and is checked by names and shapes when loaded. ``rules``: conversion rules for NNX classes of your
    own (as for :func:`state_dict`)."""
    spec = core_weights.model_spec(model)
    extra = None if spec is not None else core_weights.hand_written_metadata(model, "jax")
    core_weights.save_weights(path, state_dict(model, rules), spec, _file_dtype(model, spec), extra)


def load_weights(model: nnx.Module, path, *, rules: Rules | None = None, names: Names = None) -> None:
    """Load a safetensors weights file written by either framework (or plain torch code) into any model.

    The file's spec is checked against the model's where both have one, its dtype where both have one;
    then its tensors by names and shapes (after ``names``, as in :func:`load_state_dict`). Any problem is
    one error naming the file, and the model is left as it was."""
    spec = core_weights.model_spec(model)
    tensors = core_weights.load_weights(path, spec, _file_dtype(model, spec))
    try:
        load_state_dict(model, tensors, rules=rules, names=names)
    except StateDictError as e:
        raise StateDictError(e.problems, f"weights file {path}") from None


__all__ = ["LoadResult", "StateDictError", "expected_shapes", "from_torch_layout", "int_keys", "load_state_dict",
           "load_weights", "model_dtype", "param_names", "save_weights", "state_dict", "to_torch_layout"]
