"""Forward / loss / gradient parity between ae_torch and ae_jax for one spec, dtype and batch.

Differences are reported as
- ``max_abs``: max |jax - torch| over all elements;
- ``max_rel``: max_abs / max |torch|  (relative to the reference's scale, well defined where
  elementwise ratios are not, e.g. ReLU zeros); for a gradient, max |torch| over its module's
  gradients (weight and bias together), since some biases' gradients are zero by construction.
Numerics are explicit: JAX matmuls at precision "highest", torch TF32 off.

float32 forward outputs and losses are judged against a float64 REFERENCE of the same computation (the
float32 weights, inputs and noise, upcast; computed by torch in float64): a float32 result can only be
"as right as float32 allows", and how far that is depends on the computation's conditioning
(BatchNorm in train mode divides by a batch standard deviation) and on the machine (summation order,
threads, SIMD width), so a fixed float32 tolerance passes on one machine and fails on the next. JAX
passes such a row when its error against the reference is at most ``REFERENCE_K`` times torch's own
float32 error (the largest over ``REFERENCE_ORDERS`` orders of the same batch) plus a floor of
``REFERENCE_FLOOR_ULPS`` float32 ulps, all relative to the tensor's scale (max |reference|). Gradients
and optimizer steps keep ``TOLERANCES`` for now (see ``REFERENCE_GROUPS``); float64 keeps its absolute
/ relative 1e-12 targets.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import numpy as np

# Fixed targets (issue 2): float32 forward <= 1e-6 abs, loss and gradients <= 1e-5 relative; float64 1e-12.
# Issue 3: one optimizer step from identical state <= 1e-6 (float32) on the updated weights. float32 outputs
# and losses are now judged by the reference criterion below instead (REFERENCE_GROUPS).
TOLERANCES = {
    "float32": {"forward": ("abs", 1e-6), "loss": ("rel", 1e-5), "grad": ("rel", 1e-5), "step": ("abs", 1e-6)},
    "float64": {"forward": ("abs", 1e-12), "loss": ("rel", 1e-12), "grad": ("rel", 1e-12), "step": ("abs", 1e-12)},
}


# The float32 criterion (see the module docstring), chosen from measurement (docs/porting.md, "float32
# verdicts"; 276 output and loss rows: every preset, batches 16/64/256, seeds 0/1, this 2-core CPU): JAX's
# error over torch's is 1.01 at the median and at most 3.07 where torch's error is 2 ulps or more; the
# most any row needed beyond 4 x torch's error was 1.78 ulps (conv_bn codes in train mode: JAX 8.6 ulps
# from the reference, torch 1.7). K = 4 and a 4-ulp floor leave a margin of 1.3x and 2.2x.
REFERENCE_K = 4.0
REFERENCE_FLOOR_ULPS = 4
# torch's float32 error is the largest over the batch in its own order and REFERENCE_ORDERS - 1 other
# orders (mathematically the same computation: outputs are per example, losses and gradients sums over
# the batch). One order alone is one sample of float32 rounding: where a ReLU after a BatchNorm sees
# pre-activations within rounding of 0, whether the gradient flips there is chance, for either framework.
REFERENCE_ORDERS = 4
# The groups judged by the reference criterion in float32. Gradients and optimizer steps keep the fixed
# TOLERANCES for now: where a ReLU input lies within float32 rounding of 0 (measured: conv_bn, one element
# in 100,000 at |x| = 3e-7 after a BatchNorm), one framework's float32 forward may land on the other side
# of the kink than the float64 reference; that gradient is then exact for a point within rounding of the
# input, but 1e-3 from the reference's, amplified upstream by the BatchNorm backward. A fair gradient
# reference must follow each framework's own ReLU pattern (docs/porting.md, "float32 verdicts").
REFERENCE_GROUPS = ("forward", "loss")
FLOAT32_EPS = float(np.finfo(np.float32).eps)


@dataclass(frozen=True)
class Row:
    quantity: str
    group: str  # forward / loss / grad / step
    shape: tuple[int, ...]
    max_abs: float  # max |jax - torch|
    max_rel: float  # max_abs / the tensor's scale
    kind: str  # "abs" / "rel": which of the two the tolerance applies to; "ref": the float32 reference criterion
    tol: float
    # Set where the tolerance is per element (an Adam step in float64, see step_parity): whether every element passed.
    elementwise_ok: bool | None = None
    # kind "ref": each framework's float32 error against the float64 reference, relative to the tensor's scale
    jax_err: float | None = None
    torch_err: float | None = None

    @property
    def floor(self) -> float:
        return REFERENCE_FLOOR_ULPS * FLOAT32_EPS

    @property
    def ratio(self) -> float:
        """JAX's float32 error over torch's (kind "ref")."""
        if self.torch_err:
            return self.jax_err / self.torch_err
        return 0.0 if not self.jax_err else float("inf")

    @property
    def value(self) -> float:
        if self.kind == "ref":
            return self.jax_err
        return self.max_abs if self.kind.startswith("abs") else self.max_rel

    @property
    def ok(self) -> bool:
        if self.kind == "ref":
            return bool(self.jax_err <= self.tol * self.torch_err + self.floor)
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


def make_row(quantity: str, group: str, jax_value, torch_value, dtype: str, scale: float | None = None,
             reference=None, ref_scale: float | None = None, torch_others=()) -> Row:
    """One compared tensor. With a float64 ``reference`` (float32 rows), the verdict is the reference
    criterion, errors relative to ``ref_scale`` (default max |reference|), torch's error the largest of
    ``torch_value`` and ``torch_others`` (the same quantity from other batch orders); without, ``TOLERANCES``."""
    max_abs, max_rel = diff(jax_value, torch_value, scale)
    if reference is None:
        kind, tol = TOLERANCES[dtype][group]
        return Row(quantity, group, tuple(np.shape(torch_value)), max_abs, max_rel, kind, tol)
    _, jax_err = diff(jax_value, reference, ref_scale)
    torch_err = max(diff(t, reference, ref_scale)[1] for t in (torch_value, *torch_others))
    return Row(quantity, group, tuple(np.shape(torch_value)), max_abs, max_rel, "ref", REFERENCE_K,
               jax_err=jax_err, torch_err=torch_err)


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


def _torch_quantities(spec, tm, x, noise, loss: str, modes) -> dict[str, tuple[str, np.ndarray]]:
    """``{quantity: (group, value)}`` of the torch model on one batch: codes and reconstructions per mode,
    the VAE terms, the loss and every gradient (canonical names)."""
    import torch

    from ae_torch.losses import vae_terms
    from ae_torch.train import loss_and_grad

    xt = torch.from_numpy(x)
    noise_t = {k: torch.from_numpy(v) for k, v in noise.items()}
    out = {}
    for mode, tag in modes:
        tm.train(mode == "train")
        with torch.no_grad():
            o = tm.outputs(xt, noise_t if mode == "train" else None)
        out["encodings" + tag], out["reconstructions" + tag] = ("forward", o["code"].numpy()), ("forward", o["recon"].numpy())
    if spec.is_vae:
        with torch.no_grad():
            out.update({f"loss vae {k}": ("loss", float(v)) for k, v in vae_terms(tm, xt, xt, noise_t).items()})
    value, grads = loss_and_grad(tm, xt, loss=loss, noise=noise_t)
    out[f"loss ({loss})"] = ("loss", value)
    out.update({f"grad {name}": ("grad", g) for name, g in grads.items()})
    return out


def _jax_quantities(spec, jm, x, noise, loss: str, modes) -> dict[str, tuple[str, np.ndarray]]:
    """The same quantities as :func:`_torch_quantities`, from the NNX model (jit-compiled)."""
    import jax.numpy as jnp

    from ae_jax.losses import vae_terms
    from ae_jax.train import encode_decode, loss_and_grad

    xj = jnp.asarray(x)
    noise_j = {k: jnp.asarray(v) for k, v in noise.items()}
    out = {}
    for mode, tag in modes:
        getattr(jm, mode)()
        zj, rj = encode_decode(jm, xj, noise_j if mode == "train" else None)
        out["encodings" + tag], out["reconstructions" + tag] = ("forward", np.asarray(zj)), ("forward", np.asarray(rj))
    if spec.is_vae:
        out.update({f"loss vae {k}": ("loss", float(v)) for k, v in vae_terms(jm, xj, xj, noise_j).items()})
    value, grads = loss_and_grad(jm, xj, loss=loss, noise=noise_j)
    out[f"loss ({loss})"] = ("loss", value)
    out.update({f"grad {name}": ("grad", g) for name, g in grads.items()})
    return out


def float64_reference(spec, state: dict[str, np.ndarray]):
    """A float64 torch model holding exactly ``state`` (float32 weights, upcast): the reference of a
    float32 computation differs from it only in arithmetic precision."""
    import ae_torch
    from ae_torch.weights import load_state_dict

    ref = ae_torch.build(spec, dtype="float64")
    load_state_dict(ref, {k: (v.astype(np.float64) if v.dtype.kind == "f" else v) for k, v in state.items()})
    return ref


def _forward_rows(spec, dtype: str, x: np.ndarray, seed: int, loss: str | None) -> list[Row]:
    import ae_jax
    import ae_torch
    from ae_core import get_spec, init_state_dict
    from ae_core.noise import batch_noise
    from ae_core.training import check_loss, default_loss

    spec = get_spec(spec)
    loss = loss or default_loss(spec)
    check_loss(spec, loss)
    x = np.asarray(x, dtype=dtype)
    noise = batch_noise(spec, seed, len(x), dtype)
    modal = bool(noise) or spec.has("batchnorm1d", "batchnorm2d")
    modes = [("eval", " (eval)"), ("train", " (train)")] if modal else [("train", "")]
    qt = _torch_quantities(spec, ae_torch.build(spec, dtype=dtype, seed=seed), x, noise, loss, modes)
    qj = _jax_quantities(spec, ae_jax.build(spec, dtype=dtype, seed=seed), x, noise, loss, modes)
    if set(qt) != set(qj):
        raise AssertionError(f"compared quantities differ: {sorted(set(qt) ^ set(qj))}")
    ref, others = {}, []
    if dtype == "float32":
        state = init_state_dict(spec, seed, dtype)
        up = {k: v.astype(np.float64) for k, v in noise.items()}
        ref = _torch_quantities(spec, float64_reference(spec, state), x.astype(np.float64), up, loss, modes)
        for order in batch_orders(len(x)):
            q = _torch_quantities(spec, ae_torch.build(spec, dtype=dtype, seed=seed), x[order],
                                  {k: v[order] for k, v in noise.items()}, loss, modes)
            others.append({k: (g, _unpermute(v, order) if g == "forward" else v) for k, (g, v) in q.items()})
    scales = module_scales({q[5:]: v for q, (_, v) in qt.items() if q.startswith("grad ")})
    ref_scales = module_scales({q[5:]: v for q, (_, v) in ref.items() if q.startswith("grad ")})
    rows = []
    for q, (group, tv) in qt.items():
        module = q[5:].rsplit(".", 1)[0] if group == "grad" else None
        judged = ref and group in REFERENCE_GROUPS
        rows.append(make_row(q, group, qj[q][1], tv, dtype, scales[module] if module else None,
                             ref[q][1] if judged else None, ref_scales.get(module) if module else None,
                             [o[q][1] for o in others] if judged else ()))
    return rows


def batch_orders(n: int) -> list[np.ndarray]:
    """The ``REFERENCE_ORDERS - 1`` other orders of a batch of ``n`` in which torch's float32 error is
    also measured (seeded: the same verdict every run)."""
    rng = np.random.default_rng(0x0DE5)
    return [rng.permutation(n) for _ in range(REFERENCE_ORDERS - 1)]


def _unpermute(values: np.ndarray, order: np.ndarray) -> np.ndarray:
    out = np.empty_like(values)
    out[order] = values
    return out


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
    import copy

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
    noise = {k: v[0] for k, v in epoch_noise(spec, seed, 0, 1, len(x), dtype).items()}  # the trainers' noise
    batch = data.x_train[epoch_batches(seed, 0, len(x), len(x))[0]]  # the trainers' (shuffled) order
    after = {}
    for framework in ("torch", "jax"):
        trainer = make_trainer(framework, spec, config, data, **({"precision": precision} if framework == "jax" else {}))
        if framework == "torch":  # the gradient the step sees, on a copy of the model
            probe = copy.deepcopy(trainer.model).train()
            _, grads = loss_and_grad(probe, torch.from_numpy(batch), loss=loss,
                                     noise={k: torch.from_numpy(v) for k, v in noise.items()})
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
    """A plain-text table: quantity, shape, max abs, max rel (JAX vs torch), the target, and for float32
    rows each framework's error against the float64 reference and their ratio; the verdict."""
    ref = any(r.kind == "ref" for r in rows)
    head = (f"{'quantity':<26} {'shape':<12} {'max abs':>10} {'max rel':>10}  {'target':<12}"
            + (f" {'jax err':>9} {'torch err':>9} {'ratio':>6}" if ref else "") + " ok")
    lines = [title] if title else []
    lines += [head, "-" * len(head)]
    for r in rows:
        if r.kind == "ref":
            target = f"ref<={r.tol:g}x"
            errs = f" {r.jax_err:>9.2e} {r.torch_err:>9.2e} {min(r.ratio, 999):>6.2f}"
        else:
            target = f"{r.kind.rstrip('*')}<={r.tol:.0e}" + ("*" if r.kind.endswith("*") else "")
            errs = " " * 27 if ref else ""
        lines.append(f"{r.quantity:<26} {'x'.join(map(str, r.shape)) or 'scalar':<12} {r.max_abs:>10.2e} "
                     f"{r.max_rel:>10.2e}  {target:<12}{errs} {'yes' if r.ok else 'NO'}")
    if ref:
        lines.append(f"ref rows: jax err / torch err = each framework's max error against a float64 reference of "
                     f"the same computation (same float32 weights, inputs, noise), relative to the tensor's scale "
                     f"(torch's: the largest over {REFERENCE_ORDERS} batch orders); passes when jax err <= "
                     f"{REFERENCE_K:g} x torch err + {REFERENCE_FLOOR_ULPS} ulps ({REFERENCE_FLOOR_ULPS * FLOAT32_EPS:.1e})")
    if any(r.kind.endswith("*") for r in rows):
        lines.append("* Adam's first step lr*g/(|g|+eps): per element, the target plus what the gradient target "
                     "admits where |g| is near eps (ae_parity.parity.adam_first_step_bound)")
    return "\n".join(lines)


def summarize(rows: list[Row]) -> dict[str, float]:
    """Worst value per group: float64 (and float32 gradients and steps) the max abs / rel difference to torch
    of the group's target; float32 outputs and losses JAX's error against the float64 reference, keyed
    "<group> vs float64"."""
    out: dict[str, float] = {}
    for r in rows:
        key = f"{r.group} vs float64" if r.kind == "ref" else r.group
        out[key] = max(out.get(key, 0.0), r.value)
    return out
