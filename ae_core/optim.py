"""The optimizer table: each torch optimizer and its exact optax counterpart, in one place.

| name  | PyTorch                                        | optax (ae_jax.optim)                                            |
|-------|------------------------------------------------|-----------------------------------------------------------------|
| adam  | Adam(lr, betas, eps, weight_decay)             | chain(add_decayed_weights(wd), scale_by_adam(b1, b2, eps), scale(-lr)) |
| adamw | AdamW(lr, betas, eps, weight_decay)            | adamw(lr, b1, b2, eps, weight_decay=wd)                         |
| sgd   | SGD(lr, momentum, nesterov, weight_decay)      | chain(add_decayed_weights(wd), sgd(lr, momentum, nesterov))     |

Known traps, handled here:
- ``torch.optim.Adam(weight_decay=l)`` is *coupled* L2 (l*w added to the gradient before the moments),
  which is ``add_decayed_weights`` before ``scale_by_adam``; ``optax.adamw`` is the *decoupled* form
  (optax#392, #417) and matches ``torch.optim.AdamW`` instead.
- ``torch.optim.AdamW`` defaults to weight_decay=1e-2, ``optax.adamw`` to 1e-4: the value is always
  passed explicitly, with torch's defaults as ours.
- SGD momentum: torch's first step sets ``buf = g``; optax's ``trace`` starts from zeros and computes
  ``g + m * 0 = g``: the same (dampening is 0 in both).

Optimizer state crosses frameworks in torch's own naming: per parameter ``exp_avg`` / ``exp_avg_sq``
(Adam, AdamW) or ``momentum_buffer`` (SGD with momentum), in torch layout, plus the step count.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

from .errors import UsageError

# name -> (torch.optim class name, torch's default weight_decay for it)
OPTIMIZERS = {"adam": ("Adam", 0.0), "adamw": ("AdamW", 1e-2), "sgd": ("SGD", 0.0)}


@dataclass(frozen=True)
class OptimizerConfig:
    """One optimizer with all hyperparameters explicit (unset ones take torch's defaults)."""

    name: str = "adam"
    lr: float = 1e-3
    weight_decay: float | None = None  # None: the torch default of this optimizer
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    momentum: float = 0.0
    nesterov: bool = False

    def __post_init__(self) -> None:
        if self.name not in OPTIMIZERS:
            raise UsageError(f"unknown optimizer {self.name!r}; known: {', '.join(OPTIMIZERS)}")
        if self.weight_decay is None:
            object.__setattr__(self, "weight_decay", OPTIMIZERS[self.name][1])
        object.__setattr__(self, "betas", tuple(float(b) for b in self.betas))
        problems = []
        if not self.lr > 0:
            problems.append(f"lr must be > 0, got {self.lr}")
        if self.weight_decay < 0:
            problems.append(f"weight_decay must be >= 0, got {self.weight_decay}")
        if not all(0.0 <= b < 1.0 for b in self.betas):
            problems.append(f"betas must be in [0, 1), got {self.betas}")
        if not self.eps > 0:
            problems.append(f"eps must be > 0, got {self.eps}")
        if self.momentum < 0:
            problems.append(f"momentum must be >= 0, got {self.momentum}")
        if self.nesterov and (self.name != "sgd" or self.momentum <= 0):
            problems.append("nesterov needs the sgd optimizer with momentum > 0")
        if self.name != "sgd" and self.momentum:
            problems.append(f"momentum is an sgd setting; {self.name} uses betas")
        if problems:
            raise UsageError(f"optimizer {self.name}: " + "; ".join(problems))

    @property
    def state_slots(self) -> tuple[str, ...]:
        """Per-parameter state tensors, by torch's names."""
        if self.name in ("adam", "adamw"):
            return ("exp_avg", "exp_avg_sq")
        return ("momentum_buffer",) if self.momentum > 0 else ()

    def torch_kwargs(self) -> dict:
        """Keyword arguments for the torch optimizer class (every value explicit)."""
        if self.name == "sgd":
            return {"lr": self.lr, "momentum": self.momentum, "nesterov": self.nesterov,
                    "weight_decay": self.weight_decay}
        return {"lr": self.lr, "betas": self.betas, "eps": self.eps, "weight_decay": self.weight_decay}

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "OptimizerConfig":
        d = json.loads(text)
        return cls(**{**d, "betas": tuple(d["betas"])})
