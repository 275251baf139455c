"""NNX variables <-> canonical (PyTorch) names and layouts, through ONE table of layout rules.

Every NNX module type that holds variables has one entry in :data:`RULES`: which NNX attribute is
which torch parameter, and how the array is laid out on each side. The rules of the layer kinds are
registered beside their builders (``ae_jax/layers.py``); Flax's own LayerNorm and BatchNorm, for ports
that use them, below. A module's torch name comes from its path in the module tree, with
``nnx.Sequential``'s ``layers`` hop dropped (torch's ``nn.Sequential`` names children ``0, 1, ...``
directly)::

    NNX  encoder.layers.0.kernel  (in, out)   <->   torch  encoder.0.weight  (out, in)

Nothing here is per-model: any module tree made of ruled layer types converts, including
user-written modules with nested submodules; rules for a user's own NNX classes are passed in
(``rules={cls: (ParamRule, ...)}``), never written into the global table. Rules are looked up along a
class's MRO: a subclass (``class MyConv(nnx.Conv)``) gets its base's rule, unless it has its own entry
or holds variables that rule does not map. A module type that holds variables but has no rule is an
error (:class:`ConversionRuleError`), never a guess. The state dicts themselves are in
``ae_jax/weights.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping

import numpy as np
from flax import nnx


def _identity(a: np.ndarray) -> np.ndarray:
    return a


def _transpose(a: np.ndarray) -> np.ndarray:
    return a.T


def _hwio_from_torch(a: np.ndarray) -> np.ndarray:
    """A torch kernel (out, in, *k) -> (*k, in, out): ``transpose(2, 3, 1, 0)`` for 2-d, ``(2, 1, 0)`` for 1-d."""
    return a.transpose(*range(2, a.ndim), 1, 0)


def _hwio_to_torch(a: np.ndarray) -> np.ndarray:
    return a.transpose(a.ndim - 1, a.ndim - 2, *range(a.ndim - 2))


# (to_torch, from_torch) pairs
TRANSPOSE = (_transpose, _transpose)
HWIO = (_hwio_to_torch, _hwio_from_torch)


@dataclass(frozen=True)
class ParamRule:
    """One variable: NNX attribute ``nnx_name`` <-> torch parameter ``torch_name``."""

    nnx_name: str
    torch_name: str
    to_torch: Callable[[np.ndarray], np.ndarray] = _identity
    from_torch: Callable[[np.ndarray], np.ndarray] = _identity
    layout: str = "same layout"
    integer: bool = False  # a counter (BatchNorm's num_batches_tracked): int64 in torch


LINEAR = ParamRule("kernel", "weight", *TRANSPOSE, "kernel (in, out) = weight.T")

Rules = Mapping[type, tuple[ParamRule, ...]]
RULES: dict[type, tuple[ParamRule, ...]] = {}


def register_rules(cls: type, rules: tuple[ParamRule, ...]) -> None:
    """Add the layout rules of one NNX class to :data:`RULES` (at import time, beside its builder).
    Registering a class twice is allowed only with the same rules (BatchNorm1d and 2d share one)."""
    rules = tuple(rules)
    if RULES.get(cls, rules) != rules:
        raise TypeError(f"{cls.__name__} already has other conversion rules")
    RULES[cls] = rules


# Flax's own normalisation layers, for ports that use them (ae-parity diagnose): LayerNorm maps 1:1;
# nnx.BatchNorm has no num_batches_tracked and its own momentum convention (docs/porting.md).
register_rules(nnx.LayerNorm, (ParamRule("scale", "weight"), ParamRule("bias", "bias")))
register_rules(nnx.BatchNorm, (ParamRule("scale", "weight"), ParamRule("bias", "bias"),
                               ParamRule("mean", "running_mean"), ParamRule("var", "running_var")))


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


def torch_name(model: nnx.Module, path: tuple) -> str:
    """The torch module name of the submodule at NNX ``path`` (``("encoder", "layers", 0)`` -> ``"encoder.0"``)."""
    parts, obj = [], model
    for p in path:
        if isinstance(obj, nnx.Sequential) and p == "layers":
            obj = obj.layers
            continue
        obj = obj[p] if isinstance(p, int) else getattr(obj, p)
        parts.append(str(p))
    return ".".join(parts)


def module_names(model: nnx.Module) -> dict[str, nnx.Module]:
    """``{torch module name: NNX submodule}`` for every submodule of ``model`` (the root excluded)."""
    return {torch_name(model, path): module for path, module in nnx.iter_modules(model) if path}


class ConversionRuleError(TypeError):
    """A module that holds variables has no conversion rule (or an inherited rule that misses some of
    them), or two variables map to one torch name."""


def rules_for(cls: type, rules: Rules | None = None) -> tuple[tuple[ParamRule, ...], type] | None:
    """The conversion rules of NNX class ``cls`` and the class they were registered for: the first class of
    ``cls.__mro__`` with an entry in ``rules`` (yours) or in :data:`RULES`. So a class's own entry wins over
    an inherited one (``class MyConv(nnx.Conv)`` gets ``nnx.Conv``'s unless it has its own), and for one
    class yours win over the table's; yours apply to subclasses of your classes too. None: no rule."""
    for klass in cls.__mro__:
        for table in (rules or {}, RULES):
            found = table.get(klass)
            if found is not None:
                return tuple(found), klass
    return None


def _module_rules(module: nnx.Module, path: tuple, rules: Rules | None) -> tuple[ParamRule, ...] | None:
    """The rules of one module; an error if it holds variables that no rule (its own or inherited) maps."""
    own_vars = [k for k, v in vars(module).items() if isinstance(v, nnx.Variable)]
    found = rules_for(type(module), rules)
    name, where = type(module).__name__, ".".join(map(str, path)) or "<root>"
    fix = f"pass rules={{{name}: (ParamRule(...), ...)}} (see ae_jax.convert)"
    if found is None:
        if own_vars:
            raise ConversionRuleError(f"no conversion rule for {name} at {where} (it holds variables {own_vars}); "
                                      f"{fix}")
        return None
    module_rules, owner = found
    unmapped = [k for k in own_vars if k not in {r.nnx_name for r in module_rules}]
    if owner is not type(module) and unmapped:  # a subclass with variables of its own: never a guess
        raise ConversionRuleError(f"{name} at {where} inherits the conversion rule of {owner.__name__}, which does "
                                  f"not map its variables {unmapped}; {fix}")
    return module_rules


def bindings(model: nnx.Module, rules: Rules | None = None) -> list[Binding]:
    """Every variable of ``model`` with its canonical name, via :data:`RULES` and ``rules`` for classes of
    your own, looked up along each module class's MRO (:func:`rules_for`)."""
    out: list[Binding] = []
    seen: dict[str, str] = {}
    for path, module in nnx.iter_modules(model):
        module_rules = _module_rules(module, path, rules)
        if module_rules is None:
            continue
        prefix = torch_name(model, path)
        for rule in module_rules:
            if getattr(module, rule.nnx_name, None) is None:  # e.g. use_bias=False
                continue
            name = f"{prefix}.{rule.torch_name}" if prefix else rule.torch_name
            nnx_path = ".".join([*map(str, path), rule.nnx_name])
            if name in seen:
                raise ConversionRuleError(f"{nnx_path} and {seen[name]} both map to torch name {name!r}")
            seen[name] = nnx_path
            out.append(Binding(name, nnx_path, module, rule))
    return out


def expected_shapes(model: nnx.Module, rules: Rules | None = None) -> dict[str, tuple[int, ...]]:
    """Canonical names -> torch-layout shapes of everything in ``model``'s state dict."""
    return {b.name: b.torch_shape() for b in bindings(model, rules)}


def int_keys(model: nnx.Module, rules: Rules | None = None) -> set[str]:
    """Names of the integer entries (counters) of ``model``'s state dict."""
    return {b.name for b in bindings(model, rules) if b.rule.integer}


def param_names(model: nnx.Module, rules: Rules | None = None) -> list[str]:
    """Canonical names of the trainable parameters (``nnx.Param``), i.e. torch's ``named_parameters``."""
    return [b.name for b in bindings(model, rules) if isinstance(b.variable, nnx.Param)]


__all__ = ["Binding", "ConversionRuleError", "HWIO", "LINEAR", "ParamRule", "RULES", "Rules", "TRANSPOSE", "bindings",
           "expected_shapes", "int_keys", "module_names", "param_names", "register_rules", "rules_for", "torch_name"]
