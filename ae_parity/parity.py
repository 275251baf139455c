"""Forward / loss / gradient parity between ae_torch and ae_jax for one spec, dtype and batch.

Differences are reported as
- ``max_abs``: max |jax - torch| over all elements;
- ``max_rel``: max_abs / max |torch|  (relative to the reference's scale, well defined where
  elementwise ratios are not, e.g. ReLU zeros); for a gradient, max |torch| over its module's
  gradients (weight and bias together), since some biases' gradients are zero by construction.
Numerics are explicit: JAX matmuls at precision "highest", torch TF32 off.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import numpy as np

# Targets (issue 2): float32 forward <= 1e-6 abs, loss and gradients <= 1e-5 relative; float64 1e-12.
# Issue 3: one optimizer step from identical state <= 1e-6 (float32) on the updated weights.
TOLERANCES = {
    "float32": {"forward": ("abs", 1e-6), "loss": ("rel", 1e-5), "grad": ("rel", 1e-5), "step": ("abs", 1e-6)},
    "float64": {"forward": ("abs", 1e-12), "loss": ("rel", 1e-12), "grad": ("rel", 1e-12), "step": ("abs", 1e-12)},
}


@dataclass(frozen=True)
class Row:
    quantity: str
    group: str  # forward / loss / grad
    shape: tuple[int, ...]
    max_abs: float
    max_rel: float
    kind: str  # which of the two the tolerance applies to
    tol: float
    # Set where the tolerance is per element (an Adam step, see step_parity): whether every element passed.
    elementwise_ok: bool | None = None

    @property
    def value(self) -> float:
        return self.max_abs if self.kind.startswith("abs") else self.max_rel

    @property
    def ok(self) -> bool:
        if self.elementwise_ok is not None:
            return self.elementwise_ok
        return bool(self.value <= self.tol)


def diff(a, b, scale: float | None = None) -> tuple[float, float]:
    """(max abs, max abs relative to max |b|) of two arrays; ``b`` is the reference.

    ``scale`` overrides max |b| as the denominator (see :func:`forward_parity` for gradients)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {a.shape} vs {b.shape}")
    max_abs = float(np.max(np.abs(a - b))) if a.size else 0.0
    if scale is None:
        scale = float(np.max(np.abs(b))) if b.size else 0.0
    return max_abs, (max_abs / scale if scale > 0 else max_abs)


def module_scales(grads) -> dict[str, float]:
    """``{module name: largest |gradient| over its parameters}`` from ``{parameter name: gradient}``.

    Gradients are compared relative to their module's scale: a bias in front of a BatchNorm has a
    mathematically zero gradient (the normalisation removes any shift), so its computed value is
    rounding noise and "relative to itself" would be noise over noise.
    """
    out: dict[str, float] = {}
    for name, g in grads.items():
        module = name.rsplit(".", 1)[0]
        largest = float(np.max(np.abs(np.asarray(g)))) if np.size(g) else 0.0
        out[module] = max(out.get(module, 0.0), largest)
    return out


def make_row(quantity: str, group: str, jax_value, torch_value, dtype: str, scale: float | None = None) -> Row:
    kind, tol = TOLERANCES[dtype][group]
    max_abs, max_rel = diff(jax_value, torch_value, scale)
    return Row(quantity, group, tuple(np.shape(torch_value)), max_abs, max_rel, kind, tol)


PRECISIONS = ("highest", "default")


@contextlib.contextmanager
def parity_numerics(precision: str = "highest"):
    """A context for a parity computation; restores both frameworks' previous settings on exit.

    "highest": full-precision matmuls on both sides (no TF32 / bf16 passes), the parity setting.
    "default": each framework's default (XLA may use TF32/bf16 passes for float32 on GPU/TPU, torch's
    TF32 switches on): shows what default precision costs in parity."""
    from ae_jax.numerics import matmul_precision
    from ae_torch.numerics import tf32

    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; expected one of {PRECISIONS}")
    with matmul_precision(precision), tf32(precision != "highest"):
        yield


def forward_parity(spec, dtype: str, x: np.ndarray, *, seed: int = 0, loss: str | None = None,
                   precision: str = "highest") -> list[Row]:
    """Build both models from the same ``seed`` weights, run one batch, compare everything.

    Rows: encodings and reconstructions, the loss (for a VAE also its reconstruction and KL terms
    separately) and the gradient of every parameter (canonical names). Models whose train mode differs
    from eval mode (BatchNorm, dropout, corruption, VAE sampling) are compared in both: eval-mode
    outputs, then train-mode outputs, loss and gradients with the same supplied noise
    (``ae_core.noise.batch_noise``) on both sides. Runs inside :func:`parity_numerics` ``(precision)``.
    """
    with parity_numerics(precision):
        return _forward_rows(spec, dtype, x, seed, loss)


def _forward_rows(spec, dtype: str, x: np.ndarray, seed: int, loss: str | None) -> list[Row]:
    import jax.numpy as jnp
    import torch

    import ae_jax
    import ae_torch
    from ae_core import get_spec
    from ae_core.noise import batch_noise
    from ae_core.training import check_loss, default_loss
    from ae_jax.losses import vae_terms as jax_vae_terms
    from ae_jax.train import encode_decode
    from ae_jax.train import loss_and_grad as jax_loss_and_grad
    from ae_torch.losses import vae_terms as torch_vae_terms
    from ae_torch.train import loss_and_grad as torch_loss_and_grad

    spec = get_spec(spec)
    loss = loss or default_loss(spec)
    check_loss(spec, loss)
    tm = ae_torch.build(spec, dtype=dtype, seed=seed)
    jm = ae_jax.build(spec, dtype=dtype, seed=seed)
    xt = torch.from_numpy(np.asarray(x, dtype=dtype))
    xj = jnp.asarray(x, dtype=ae_jax.jnp_dtype(dtype))
    noise = batch_noise(spec, seed, len(x), dtype)
    noise_t = {k: torch.from_numpy(v) for k, v in noise.items()}
    noise_j = {k: jnp.asarray(v) for k, v in noise.items()}
    rows = []
    modal = bool(noise) or spec.has("batchnorm1d", "batchnorm2d")
    for mode in ("eval", "train") if modal else ("train",):
        tag = f" ({mode})" if modal else ""
        tm.train(mode == "train")
        getattr(jm, mode)()
        with torch.no_grad():
            out_t = tm.outputs(xt, noise_t if mode == "train" else None)
        zj, rj = encode_decode(jm, xj, noise_j if mode == "train" else None)  # jit-compiled
        rows += [make_row("encodings" + tag, "forward", zj, out_t["code"].numpy(), dtype),
                 make_row("reconstructions" + tag, "forward", rj, out_t["recon"].numpy(), dtype)]
    if spec.is_vae:
        with torch.no_grad():
            terms_t = torch_vae_terms(tm, xt, xt, noise_t)
        terms_j = jax_vae_terms(jm, xj, xj, noise_j)
        rows += [make_row(f"loss vae {k}", "loss", float(terms_j[k]), float(terms_t[k]), dtype) for k in terms_t]
    loss_t, grads_t = torch_loss_and_grad(tm, xt, loss=loss, noise=noise_t)
    loss_j, grads_j = jax_loss_and_grad(jm, xj, loss=loss, noise=noise_j)  # both canonical numpy dicts
    rows.append(make_row(f"loss ({loss})", "loss", loss_j, loss_t, dtype))
    if set(grads_j) != set(grads_t):
        raise AssertionError(f"gradient names differ: {sorted(set(grads_j) ^ set(grads_t))}")
    scales = module_scales(grads_t)
    rows += [make_row(f"grad {name}", "grad", grads_j[name], g, dtype, scales[name.rsplit(".", 1)[0]])
             for name, g in grads_t.items()]
    return rows


def adam_first_step_bound(grad: np.ndarray, lr: float, eps: float, grad_tol_rel: float, tol: float,
                          scale: float | None = None) -> np.ndarray:
    """Per-element bound on |step_jax - step_torch| for Adam's first step, ``lr * g / (|g| + eps)``.

    Its sensitivity to the gradient is ``lr * eps / (|g| + eps)**2``: where |g| is near ``eps`` (channels
    behind dead ReLUs), a gradient difference far inside the gradient target becomes a visible step
    difference. Bound = ``tol`` + that sensitivity times the largest gradient difference the gradient
    target admits (``grad_tol_rel * scale``, ``scale`` = max|g| of the module, as in
    :func:`forward_parity`) -- derived from the targets, not from measured differences.
    """
    delta = grad_tol_rel * (np.max(np.abs(grad)) if scale is None else scale)
    return tol + lr * delta * eps / (np.abs(grad) + eps) ** 2


def step_parity(spec, dtype: str, x: np.ndarray, optimizer, *, seed: int = 0, loss: str | None = None,
                precision: str = "highest") -> list[Row]:
    """One optimizer step from identical weights on the same batch (see :func:`_step_rows`), inside
    :func:`parity_numerics` ``(precision)``."""
    with parity_numerics(precision):
        return _step_rows(spec, dtype, x, optimizer, seed, loss, precision)


def _step_rows(spec, dtype: str, x: np.ndarray, optimizer, seed: int, loss: str | None, precision: str) -> list[Row]:
    """One optimizer step from identical weights on the same batch: every updated weight compared, and
    every buffer (BatchNorm running statistics and counters after the step).

    SGD steps are linear in the gradient and are held to the plain target. Adam/AdamW's first step
    normalises each gradient entry by its own magnitude, so each element is held to
    :func:`adam_first_step_bound` (the target plus what the gradient target admits); such rows say so.
    """
    import torch

    from ae_core import epoch_batches, get_spec
    from ae_core.noise import epoch_noise
    from ae_core.training import TrainConfig, default_loss
    from ae_torch.train import loss_and_grad

    from .runner import Data, make_trainer

    spec = get_spec(spec)
    loss = loss or default_loss(spec)
    config = TrainConfig(epochs=1, batch_size=len(x), optimizer=optimizer, loss=loss, seed=seed, dtype=dtype)
    data = Data(np.asarray(x, dtype=dtype), np.asarray(x, dtype=dtype), "batch")
    after = {}
    for framework in ("torch", "jax"):
        trainer = make_trainer(framework, spec, config, data, **({"precision": precision} if framework == "jax" else {}))
        if framework == "torch":  # the gradient the step sees: the epoch's noise, a copy of the model
            import copy

            noise = {k: torch.from_numpy(v[0]) for k, v in epoch_noise(spec, seed, 0, 1, len(x), dtype).items()}
            batch = data.x_train[epoch_batches(seed, 0, len(x), len(x))[0]]  # the trainer's (shuffled) order
            probe = copy.deepcopy(trainer.model).train()
            _, grads = loss_and_grad(probe, torch.from_numpy(batch), loss=loss, noise=noise)
        trainer.train_epoch(0)  # one batch = one step
        after[framework] = trainer.model_state()
    rows = []
    scales = module_scales(grads)
    for name, w in after["torch"].items():
        row = make_row(f"step {name}", "step", after["jax"][name], w, dtype)
        if optimizer.name in ("adam", "adamw") and name in grads:
            bound = adam_first_step_bound(grads[name].astype(np.float64), optimizer.lr, optimizer.eps,
                                          TOLERANCES[dtype]["grad"][1], row.tol, scales[name.rsplit(".", 1)[0]])
            diff_ = np.abs(after["jax"][name].astype(np.float64) - w.astype(np.float64))
            row = Row(row.quantity, row.group, row.shape, row.max_abs, row.max_rel, "abs*", row.tol,
                      elementwise_ok=bool(np.all(diff_ <= bound)))
        rows.append(row)
    return rows


def format_table(rows: list[Row], title: str = "") -> str:
    """A plain-text table: quantity, shape, max abs, max rel, tolerance, verdict."""
    head = f"{'quantity':<26} {'shape':<12} {'max abs':>10} {'max rel':>10}  {'target':<12} ok"
    lines = [title] if title else []
    lines += [head, "-" * len(head)]
    for r in rows:
        target = f"{r.kind.rstrip('*')}<={r.tol:.0e}" + ("*" if r.kind.endswith("*") else "")
        lines.append(f"{r.quantity:<26} {'x'.join(map(str, r.shape)) or 'scalar':<12} {r.max_abs:>10.2e} "
                     f"{r.max_rel:>10.2e}  {target:<12} {'yes' if r.ok else 'NO'}")
    if any(r.kind.endswith("*") for r in rows):
        lines.append("* Adam's first step lr*g/(|g|+eps): per element, the target plus what the gradient target "
                     "admits where |g| is near eps (ae_parity.parity.adam_first_step_bound)")
    return "\n".join(lines)


def summarize(rows: list[Row]) -> dict[str, float]:
    """Worst value per group (forward abs, loss rel, grad rel)."""
    out: dict[str, float] = {}
    for r in rows:
        out[r.group] = max(out.get(r.group, 0.0), r.value)
    return out
