"""optax optimizers from the ae_core optimizer table, and their state in canonical form (mirrors ae_torch/optim.py)."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from ae_core.optim import OptimizerConfig

from .weights import from_torch_layout, to_torch_layout


def scale_by_torch_adam(b1: float, b2: float, eps: float) -> optax.GradientTransformation:
    """``optax.scale_by_adam`` computed as ``torch.optim.Adam`` computes it (same state, so checkpoints
    and ``optimizer_state`` are unchanged): ``m / (1 - b1**t) / (sqrt(v) / sqrt(1 - b2**t) + eps)``.

    The difference is the bias corrections. optax evaluates ``1 - b2**t`` in the moments' dtype:
    float32(0.999) = 0.99899995, so ``1 - b2`` comes out 4.7e-5 relative off the ``1 - b2`` that scales the
    first moment update, and float32 steps land ~6.7e-6 relative (57 ulps) from the float64 step;
    torch computes them in Python floats (float64) and rounds once. Here they are ``-expm1(t * log(b))``,
    accurate to an ulp in float32 as in float64 (measured: first step within 1 ulp of float64's, against
    optax's 57; docs/porting.md, "float32 verdicts")."""
    log_b1, log_b2 = math.log(b1), math.log(b2)

    def init(params):
        return optax.ScaleByAdamState(count=jnp.zeros([], jnp.int32), mu=jax.tree.map(jnp.zeros_like, params),
                                      nu=jax.tree.map(jnp.zeros_like, params))

    def update(updates, state, params=None):
        del params
        count = optax.safe_increment(state.count)
        mu = jax.tree.map(lambda m, g: b1 * m + (1 - b1) * g, state.mu, updates)
        nu = jax.tree.map(lambda v, g: b2 * v + (1 - b2) * g * g, state.nu, updates)

        def step(m, v):
            t = count.astype(m.dtype)
            bc1, bc2 = -jnp.expm1(t * log_b1), -jnp.expm1(t * log_b2)
            return (m / bc1) / (jnp.sqrt(v) / jnp.sqrt(bc2) + eps)

        return jax.tree.map(step, mu, nu), optax.ScaleByAdamState(count=count, mu=mu, nu=nu)

    return optax.GradientTransformation(init, update)


def make_optimizer(config: OptimizerConfig, lr=None) -> optax.GradientTransformation:
    """The optax transformation that steps exactly like the torch optimizer of ``config``.

    ``lr`` overrides ``config.lr`` and may be a traced array: a sweep vmaps one step over many learning
    rates (:mod:`ae_jax.sweep`); the optimizer state's structure does not depend on it."""
    c = config
    lr = c.lr if lr is None else lr
    if c.name == "adam":  # coupled L2: decay added to the gradient BEFORE the moments (torch.optim.Adam)
        return optax.chain(optax.add_decayed_weights(c.weight_decay),
                           scale_by_torch_adam(c.betas[0], c.betas[1], c.eps),
                           optax.scale_by_learning_rate(lr))
    if c.name == "adamw":  # decoupled decay (torch.optim.AdamW), as optax.adamw chains it; weight_decay explicit
        return optax.chain(scale_by_torch_adam(c.betas[0], c.betas[1], c.eps),
                           optax.add_decayed_weights(c.weight_decay), optax.scale_by_learning_rate(lr))
    if c.name == "sgd":
        return optax.chain(optax.add_decayed_weights(c.weight_decay),
                           optax.sgd(lr, momentum=c.momentum or None, nesterov=c.nesterov))
    raise ValueError(f"unknown optimizer {c.name!r}")


# torch slot name -> the optax state field that holds it
_SLOT_FIELDS = {"exp_avg": "mu", "exp_avg_sq": "nu", "momentum_buffer": "trace"}


def _state_field(opt_state, field: str, value=None):
    """Get (``value is None``) or replace the field ``field`` of the optax state NamedTuple that has it.

    Walks only optax's own structure (chains are tuples of NamedTuple states), never into the parameter
    trees inside: ``optax.tree_utils.tree_get`` also matches dict keys there, so a model with a layer
    called ``mu`` (the VAE head) would make "mu" ambiguous.
    """
    found = []

    def walk(node):
        if isinstance(node, tuple) and hasattr(node, "_fields"):  # an optax state NamedTuple
            if field in node._fields:
                found.append(node)
                return node if value is None else node._replace(**{field: value})
            return type(node)(*(walk(child) for child in node))
        if isinstance(node, tuple):
            return tuple(walk(child) for child in node)
        return node

    new_state = walk(opt_state)
    if len(found) != 1:
        raise KeyError(f"optimizer state has {len(found)} fields named {field!r}, expected exactly one")
    return getattr(found[0], field) if value is None else new_state


def optimizer_state(opt_state, model: nnx.Module, config: OptimizerConfig, step: int) -> dict[str, np.ndarray]:
    """``{"<param name>.<slot>": array}`` in torch layout and naming, after ``step`` steps.

    Empty before the first step, like a fresh torch optimizer (optax holds zeros there).
    """
    if step == 0:
        return {}
    out = {}
    for slot in config.state_slots:
        tree = _state_field(opt_state, _SLOT_FIELDS[slot])
        out.update({f"{name}.{slot}": v for name, v in to_torch_layout(model, tree).items()})
    return out


def load_optimizer_state(opt_state, model: nnx.Module, config: OptimizerConfig, state: dict[str, np.ndarray],
                         step: int):
    """A new optax state holding canonical optimizer state written by either framework after ``step`` steps."""
    for slot in config.state_slots:
        sd = {k[: -len(slot) - 1]: v for k, v in state.items() if k.endswith("." + slot)}
        if step == 0 and not sd:
            continue  # nothing to restore before the first step (fresh zeros)
        opt_state = _state_field(opt_state, _SLOT_FIELDS[slot], from_torch_layout(model, sd))
    if config.name in ("adam", "adamw"):
        opt_state = _state_field(opt_state, "count", jnp.asarray(step, jnp.int32))
    return opt_state

