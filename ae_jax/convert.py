"""NNX <-> canonical (PyTorch) state dicts, through ONE table of layout rules.

Every NNX module type that holds variables has one entry in :data:`RULES`: which NNX attribute is
which torch parameter, and how the array is laid out on each side. A module's torch name comes from
its path in the module tree, with ``nnx.Sequential``'s ``layers`` hop dropped (torch's
``nn.Sequential`` names children ``0, 1, ...`` directly)::

    NNX  encoder.layers.0.kernel  (in, out)   <->   torch  encoder.0.weight  (out, in)

Nothing here is per-model: any module tree made of ruled layer types converts, including
user-written modules with nested submodules. A module type that holds variables but has no rule is an
error, never a guess.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, NamedTuple

import jax.numpy as jnp
import numpy as np
from flax import nnx

from ae_core.weights import StateDictError, check_state_dict

from . import models


def _identity(a: np.ndarray) -> np.ndarray:
    return a


def _transpose(a: np.ndarray) -> np.ndarray:
    return a.T


@dataclass(frozen=True)
class ParamRule:
    """One variable: NNX attribute ``nnx_name`` <-> torch parameter ``torch_name``."""

    nnx_name: str
    torch_name: str
    to_torch: Callable[[np.ndarray], np.ndarray] = _identity
    from_torch: Callable[[np.ndarray], np.ndarray] = _identity
    layout: str = "same layout"
    integer: bool = False  # a counter (BatchNorm's num_batches_tracked): int64 in torch


def _hwio_from_torch(a: np.ndarray) -> np.ndarray:
    return a.transpose(2, 3, 1, 0)


def _hwio_to_torch(a: np.ndarray) -> np.ndarray:
    return a.transpose(3, 2, 0, 1)


# The table.
# - Linear: flax kernel (in, out) = torch weight.T (out, in)  [PORTING-PITFALLS 1]
# - Conv2d: flax kernel (kH, kW, in, out) = torch weight (out, in, kH, kW).transpose(2, 3, 1, 0)  [2]
# - ConvTranspose2d: torch weight (in, out, kH, kW).transpose(2, 3, 1, 0) = (kH, kW, out, in), used by
#   nnx.ConvTranspose with transpose_kernel=True (the spatial flip torch does)  [4]
# - BatchNorm (ae_jax's torch-faithful one): scale = weight, bias, mean/var = running_mean/running_var,
#   num_batches_tracked (an int64 counter)  [6]
# - LSTM (ae_jax's, torch gate order): kernel_ih/kernel_hh (in, 4H) = weight_ih_l0/weight_hh_l0 .T, and
#   both biases kept  [9]
# - TiedLinear: only the bias is its own; the weight is the encoder Linear's (one parameter)
RULES: dict[type, tuple[ParamRule, ...]] = {
    nnx.Linear: (
        ParamRule("kernel", "weight", _transpose, _transpose, "kernel (in, out) = weight.T"),
        ParamRule("bias", "bias"),
    ),
    nnx.Conv: (
        ParamRule("kernel", "weight", _hwio_to_torch, _hwio_from_torch,
                  "kernel (kH, kW, in, out) = weight (out, in, kH, kW).transpose(2, 3, 1, 0)"),
        ParamRule("bias", "bias"),
    ),
    nnx.ConvTranspose: (
        ParamRule("kernel", "weight", _hwio_to_torch, _hwio_from_torch,
                  "kernel (kH, kW, out, in) = weight (in, out, kH, kW).transpose(2, 3, 1, 0), transpose_kernel=True"),
        ParamRule("bias", "bias"),
    ),
    models.BatchNorm: (
        ParamRule("scale", "weight"),
        ParamRule("bias", "bias"),
        ParamRule("mean", "running_mean"),
        ParamRule("var", "running_var", layout="running_var: the UNBIASED batch variance, averaged"),
        ParamRule("num_batches_tracked", "num_batches_tracked", integer=True),
    ),
    models.LSTM: (
        ParamRule("kernel_ih", "weight_ih_l0", _transpose, _transpose, "kernel_ih (in, 4H) = weight_ih_l0.T, gates i,f,g,o"),
        ParamRule("kernel_hh", "weight_hh_l0", _transpose, _transpose, "kernel_hh (H, 4H) = weight_hh_l0.T, gates i,f,g,o"),
        ParamRule("bias_ih", "bias_ih_l0"),
        ParamRule("bias_hh", "bias_hh_l0"),
    ),
    models.TiedLinear: (
        ParamRule("bias", "bias"),
    ),
    # Flax's own normalisation layers, for ports that use them (ae-parity diagnose): LayerNorm maps 1:1;
    # nnx.BatchNorm has no num_batches_tracked and its own momentum convention (docs/porting.md).
    nnx.LayerNorm: (
        ParamRule("scale", "weight"),
        ParamRule("bias", "bias"),
    ),
    nnx.BatchNorm: (
        ParamRule("scale", "weight"),
        ParamRule("bias", "bias"),
        ParamRule("mean", "running_mean"),
        ParamRule("var", "running_var"),
    ),
}


@dataclass(frozen=True)
class Binding:
    """One model variable bound to its canonical name."""

    name: str  # torch name, e.g. "encoder.0.weight"
    nnx_path: str  # e.g. "encoder.layers.0.kernel"
    module: nnx.Module
    rule: ParamRule

    @property
    def variable(self) -> nnx.Variable:
        return getattr(self.module, self.rule.nnx_name)

    def torch_shape(self) -> tuple[int, ...]:
        v = self.variable
        # a zero-stride view: transposes the shape without touching data
        return tuple(self.rule.to_torch(np.broadcast_to(np.empty((), v.dtype), v.shape)).shape)


class LoadResult(NamedTuple):
    missing_keys: list[str]
    unexpected_keys: list[str]


def _torch_path(model: nnx.Module, path: tuple) -> list[str]:
    parts, obj = [], model
    for p in path:
        if isinstance(obj, nnx.Sequential) and p == "layers":
            obj = obj.layers
            continue
        obj = obj[p] if isinstance(p, int) else getattr(obj, p)
        parts.append(str(p))
    return parts


def bindings(model: nnx.Module) -> list[Binding]:
    """Every variable of ``model`` with its canonical name, via the rule table."""
    out: list[Binding] = []
    seen: dict[str, str] = {}
    for path, module in nnx.iter_modules(model):
        own_vars = [k for k, v in vars(module).items() if isinstance(v, nnx.Variable)]
        rules = RULES.get(type(module))
        if rules is None:
            if own_vars:
                where = ".".join(map(str, path)) or "<root>"
                raise TypeError(f"no conversion rule for {type(module).__name__} at {where} "
                                f"(it holds variables {own_vars}); add one to ae_jax.convert.RULES")
            continue
        prefix = _torch_path(model, path)
        for rule in rules:
            if getattr(module, rule.nnx_name, None) is None:  # e.g. use_bias=False
                continue
            name = ".".join(prefix + [rule.torch_name])
            nnx_path = ".".join([*map(str, path), rule.nnx_name])
            if name in seen:
                raise TypeError(f"{nnx_path} and {seen[name]} both map to torch name {name!r}")
            seen[name] = nnx_path
            out.append(Binding(name, nnx_path, module, rule))
    return out


def expected_shapes(model: nnx.Module) -> dict[str, tuple[int, ...]]:
    """Canonical names -> torch-layout shapes for ``model``."""
    return {b.name: b.torch_shape() for b in bindings(model)}


def int_keys(model: nnx.Module) -> set[str]:
    """Names of the integer entries (counters) of ``model``'s state dict."""
    return {b.name for b in bindings(model) if b.rule.integer}


def state_dict(model: nnx.Module) -> dict[str, np.ndarray]:
    """``{torch name: numpy array in torch layout}``: what ``torch_model.load_state_dict`` takes.

    Counters come out as int64, torch's dtype for them."""
    return {b.name: np.array(b.rule.to_torch(np.asarray(b.variable.get_value())),
                             dtype=np.int64 if b.rule.integer else None) for b in bindings(model)}


def load_state_dict(model: nnx.Module, state_dict: Mapping[str, Any], strict: bool = True) -> LoadResult:
    """Load a canonical state dict (torch tensors or numpy arrays) into ``model``, in place.

    Validates everything first and raises one :class:`StateDictError` listing every problem (missing or
    unexpected keys when ``strict``, wrong shapes, non-float dtypes), in which case the model is left
    exactly as it was. Values are cast to the model's parameter dtype, as ``torch``'s ``copy_`` does.
    Unlike ``torch.nn.Module.load_state_dict``, which copies the matching tensors before it reports
    size mismatches, nothing is assigned unless everything fits.
    """
    binds = bindings(model)
    arrays = check_state_dict({b.name: b.torch_shape() for b in binds}, state_dict, strict=strict,
                              int_keys=int_keys(model))
    new_values = {}
    for b in binds:
        if b.name in arrays:
            # jnp.array copies: jnp.asarray may alias the numpy buffer on CPU, and a torch tensor's .numpy()
            # shares torch's memory -- a later in-place torch update (a BatchNorm's running statistics)
            # would silently change the JAX model
            new_values[b.name] = jnp.array(b.rule.from_torch(arrays[b.name]), dtype=b.variable.dtype, copy=True)
    for b in binds:  # all converted: now assign (cannot fail half-way)
        if b.name in new_values:
            b.variable.set_value(new_values[b.name])
    names = {b.name for b in binds}
    return LoadResult(missing_keys=[n for n in names if n not in arrays],
                      unexpected_keys=[k for k in state_dict if k not in names])


def to_torch_layout(model: nnx.Module, tree: nnx.State) -> dict[str, np.ndarray]:
    """A state shaped like ``model``'s parameters (e.g. gradients) as a canonical dict of the parameters."""
    shadow = nnx.clone(model)
    nnx.update(shadow, tree)
    params = set(param_names(shadow))
    return {k: v for k, v in state_dict(shadow).items() if k in params}


__all__ = ["Binding", "LoadResult", "ParamRule", "RULES", "StateDictError", "bindings", "expected_shapes",
           "from_torch_layout", "int_keys", "load_state_dict", "param_names", "state_dict", "to_torch_layout"]


def param_names(model: nnx.Module) -> list[str]:
    """Canonical names of the trainable parameters (``nnx.Param``), i.e. torch's ``named_parameters``."""
    return [b.name for b in bindings(model) if isinstance(b.variable, nnx.Param)]


def from_torch_layout(model: nnx.Module, tensors: Mapping[str, Any]) -> nnx.State:
    """A canonical dict (every parameter of ``model``) as an ``nnx.State`` shaped like the model's params.

    The inverse of :func:`to_torch_layout`; used for optimizer state (Adam moments, momentum buffers).
    """
    params = {b.name for b in bindings(model) if isinstance(b.variable, nnx.Param)}
    problems = [f"missing key {n!r}" for n in sorted(params - set(tensors))]
    problems += [f"unexpected key {k!r}" for k in tensors if k not in params]
    if problems:
        raise StateDictError(problems, "optimizer state")
    shadow = nnx.clone(model)
    load_state_dict(shadow, tensors, strict=False)
    return nnx.state(shadow, nnx.Param)
