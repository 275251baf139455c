"""torch optimizers from the ae_core optimizer table, and their state in canonical form (mirrors ae_jax/optim.py)."""

from __future__ import annotations

import numpy as np
import torch

from ae_core.optim import OPTIMIZERS, OptimizerConfig

# torch offers three implementations of each optimizer; "default" lets torch pick (foreach on CPU).
IMPLEMENTATIONS = ("default", "single", "foreach", "fused")


def make_optimizer(model: torch.nn.Module, config: OptimizerConfig, impl: str = "default") -> torch.optim.Optimizer:
    """The torch optimizer of ``config`` over ``model.parameters()``, every hyperparameter explicit."""
    if impl not in IMPLEMENTATIONS:
        raise ValueError(f"unknown torch optimizer implementation {impl!r}; expected one of {IMPLEMENTATIONS}")
    cls = getattr(torch.optim, OPTIMIZERS[config.name][0])
    kwargs = config.torch_kwargs()
    if impl == "single":
        kwargs["foreach"] = False
    elif impl == "foreach":
        kwargs["foreach"] = True
    elif impl == "fused":
        kwargs["fused"] = True
    return cls(model.parameters(), **kwargs)


def optimizer_state(opt: torch.optim.Optimizer, model: torch.nn.Module, config: OptimizerConfig) -> dict[str, np.ndarray]:
    """``{"<param name>.<slot>": array}`` in torch layout (empty before the first step)."""
    out = {}
    for name, p in model.named_parameters():
        state = opt.state.get(p, {})
        for slot in config.state_slots:
            if slot in state:
                out[f"{name}.{slot}"] = state[slot].detach().cpu().numpy().copy()
    return out


def load_optimizer_state(opt: torch.optim.Optimizer, model: torch.nn.Module, config: OptimizerConfig,
                         state: dict[str, np.ndarray], step: int) -> None:
    """Install canonical optimizer state (as written by either framework) after ``step`` steps."""
    per_param = {}
    for i, (name, p) in enumerate(model.named_parameters()):
        slots = {slot: torch.as_tensor(state[f"{name}.{slot}"]).to(p) for slot in config.state_slots
                 if f"{name}.{slot}" in state}
        if step > 0 and slots:
            if config.name in ("adam", "adamw"):
                slots["step"] = torch.tensor(float(step), dtype=torch.float32)
            per_param[i] = slots
    sd = opt.state_dict()
    opt.load_state_dict({"state": per_param, "param_groups": sd["param_groups"]})
