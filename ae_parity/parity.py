"""Forward / loss / gradient / optimizer-step parity tables between ae_torch and ae_jax for one spec, dtype
and batch: both models built from the same seed's weights, every output, loss, gradient and stepped
weight compared and judged by the verdict engine (``ae_parity.verdict``: float64 to fixed 1e-12 targets,
float32 against a float64 reference of the same computation, ``ae_parity.reference``). Numerics are
explicit: JAX matmuls at precision "highest", torch TF32 off (:func:`parity_numerics`).
"""

from __future__ import annotations

import contextlib
import dataclasses

import numpy as np

from .reference import (REFERENCE_ORDERS, batch_orders, float64_reference, follow_kinks, kink_notes,
                        record_relu_inputs, unpermute)
from .verdict import (FLOAT32_EPS, REFERENCE_FLOOR_ULPS, REFERENCE_GROUPS, REFERENCE_K, TOLERANCES, Row,
                      adam_first_step_bound, adam_reference_row, diff, make_row, module_scales)

__all__ = ["FLOAT32_EPS", "REFERENCE_FLOOR_ULPS", "REFERENCE_GROUPS", "REFERENCE_K", "TOLERANCES", "Row",
           "adam_first_step_bound", "diff", "float64_reference", "forward_parity", "format_table", "make_row",
           "module_scales", "parity_numerics", "step_parity", "summarize"]

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


def _torch_quantities(spec, tm, x, noise, loss: str, modes, relu=None):
    """``{quantity: (group, value)}`` of the torch model on one batch: codes and reconstructions per mode,
    the VAE terms, the loss and every gradient (canonical names); and what ``relu`` (a context manager
    factory: :func:`~ae_parity.reference.record_relu_inputs` / ``follow_kinks``)
    yielded around the gradient computation."""
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
    with (relu or contextlib.nullcontext)() as seen:
        value, grads = loss_and_grad(tm, xt, loss=loss, noise=noise_t)
    out[f"loss ({loss})"] = ("loss", value)
    out.update({f"grad {name}": ("grad", g) for name, g in grads.items()})
    return out, seen


def _jax_quantities(spec, jm, x, noise, loss: str, modes) -> tuple[dict, list[np.ndarray]]:
    """The same quantities as :func:`_torch_quantities`, from the NNX model (jit-compiled), and the ReLU
    inputs of the gradient's forward (from the same compiled computation as the gradients)."""
    import jax.numpy as jnp

    from ae_jax.losses import vae_terms
    from ae_jax.train import encode_decode, loss_grad_and_relu_inputs

    xj = jnp.asarray(x)
    noise_j = {k: jnp.asarray(v) for k, v in noise.items()}
    out = {}
    for mode, tag in modes:
        getattr(jm, mode)()
        zj, rj = encode_decode(jm, xj, noise_j if mode == "train" else None)
        out["encodings" + tag], out["reconstructions" + tag] = ("forward", np.asarray(zj)), ("forward", np.asarray(rj))
    if spec.is_vae:
        out.update({f"loss vae {k}": ("loss", float(v)) for k, v in vae_terms(jm, xj, xj, noise_j).items()})
    value, grads, sides = loss_grad_and_relu_inputs(jm, xj, loss=loss, noise=noise_j)
    out[f"loss ({loss})"] = ("loss", value)
    out.update({f"grad {name}": ("grad", g) for name, g in grads.items()})
    return out, sides


def _permuted(q: dict, order: np.ndarray) -> dict:
    return {k: (g, unpermute(v, order) if g == "forward" else v) for k, (g, v) in q.items()}


def _float32_references(spec, seed: int, x, noise, loss: str, modes, torch_run, jax_sides):
    """JAX's float64 reference, and [(a torch float32 run, its own reference)] over the batch in its own
    order and ``batch_orders``' (each reference follows its run's ReLU kinks, ae_parity.reference), and
    the :class:`~ae_parity.reference.Kinks` of JAX's and of the first torch run's reference."""
    import ae_torch
    from ae_core import init_state_dict

    state = init_state_dict(spec, seed, "float32")

    def reference(xb, noise_b, sides):
        return _torch_quantities(spec, float64_reference(spec, state), xb.astype(np.float64),
                                 {k: v.astype(np.float64) for k, v in noise_b.items()}, loss, modes,
                                 lambda: follow_kinks(sides))

    ref_jax, jax_kinks = reference(x, noise, jax_sides)
    torch_ref, torch_kinks = reference(x, noise, torch_run[1])
    pairs = [(torch_run[0], torch_ref)]
    for order in batch_orders(len(x)):
        xo, no = x[order], {k: v[order] for k, v in noise.items()}
        q, sides = _torch_quantities(spec, ae_torch.build(spec, dtype="float32", seed=seed), xo, no, loss, modes,
                                     record_relu_inputs)
        pairs.append((_permuted(q, order), _permuted(reference(xo, no, sides)[0], order)))
    return ref_jax, pairs, (jax_kinks, torch_kinks)


def _forward_rows(spec, dtype: str, x: np.ndarray, seed: int, loss: str | None) -> list[Row]:
    import ae_jax
    import ae_torch
    from ae_core import get_spec
    from ae_core.noise import batch_noise
    from ae_core.training import check_loss, default_loss

    spec = get_spec(spec)
    loss = loss or default_loss(spec)
    check_loss(spec, loss)
    x = np.asarray(x, dtype=dtype)
    noise = batch_noise(spec, seed, len(x), dtype)
    modal = bool(noise) or spec.has("batchnorm1d", "batchnorm2d")
    modes = [("eval", " (eval)"), ("train", " (train)")] if modal else [("train", "")]
    float32 = dtype == "float32"
    torch_run = _torch_quantities(spec, ae_torch.build(spec, dtype=dtype, seed=seed), x, noise, loss, modes,
                                  record_relu_inputs if float32 else None)
    qt = torch_run[0]
    qj, jax_sides = _jax_quantities(spec, ae_jax.build(spec, dtype=dtype, seed=seed), x, noise, loss, modes)
    if set(qt) != set(qj):
        raise AssertionError(f"compared quantities differ: {sorted(set(qt) ^ set(qj))}")
    scales = module_scales({q[5:]: v for q, (_, v) in qt.items() if q.startswith("grad ")})
    if not float32:
        return [make_row(q, group, qj[q][1], tv, dtype, scales[q[5:].rsplit(".", 1)[0]] if group == "grad" else None)
                for q, (group, tv) in qt.items()]
    ref, pairs, kinks = _float32_references(spec, seed, x, noise, loss, modes, torch_run, jax_sides)
    ref_scales = module_scales({q[5:]: v for q, (_, v) in ref.items() if q.startswith("grad ")})
    rows = []
    for q, (group, tv) in qt.items():
        module = q[5:].rsplit(".", 1)[0] if group == "grad" else None
        rows.append(make_row(q, group, qj[q][1], tv, dtype, scales[module] if module else None, ref[q][1],
                             ref_scales[module] if module else None, [(t[q][1], r[q][1]) for t, r in pairs]))
    note = " ".join(kink_notes(*kinks))
    return _note_first_grad(rows, note) if note else rows


def _note_first_grad(rows: list[Row], note: str) -> list[Row]:
    i = next(i for i, r in enumerate(rows) if r.group == "grad")
    return rows[:i] + [dataclasses.replace(rows[i], note=note)] + rows[i + 1:]


def step_parity(spec, dtype: str, x: np.ndarray, optimizer, *, seed: int = 0, loss: str | None = None,
                precision: str = "highest") -> list[Row]:
    """One optimizer step from identical weights on the same batch (see :func:`_step_rows`), inside
    :func:`parity_numerics` ``(precision)``."""
    with parity_numerics(precision):
        return _step_rows(spec, dtype, x, optimizer, seed, loss, precision)


def _step_rows(spec, dtype: str, x: np.ndarray, optimizer, seed: int, loss: str | None, precision: str) -> list[Row]:
    """One optimizer step from identical weights on the same batch, by each framework's trainer: every
    updated weight compared, and every buffer (BatchNorm running statistics and counters after the step).

    float32: judged against float64 steps (:func:`_float32_step_rows`). float64: SGD steps are linear in
    the gradient and are held to the plain target; Adam/AdamW's first step normalises each gradient entry
    by its own magnitude, so each element is held to :func:`adam_first_step_bound` (the target plus what
    the gradient target admits); such rows say so.
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
            with record_relu_inputs() as torch_sides:
                _, grads = loss_and_grad(probe, torch.from_numpy(batch), loss=loss,
                                         noise={k: torch.from_numpy(v) for k, v in noise.items()})
        trainer.train_epoch(0)  # one batch = one step
        after[framework] = trainer.model_state()
    if dtype == "float32":
        return _float32_step_rows(spec, seed, batch, noise, loss, optimizer, after, torch_sides, grads)
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


def _one_step(model, batch, noise, loss: str, optimizer, relu) -> tuple[dict[str, np.ndarray], object, dict]:
    """One torch optimizer step of ``model`` (train mode) on ``batch``: (its state after, what ``relu``
    -- a context manager factory taking the model -- yielded around the forward and backward, the
    gradients the step used)."""
    import torch

    from ae_torch.losses import LOSSES
    from ae_torch.optim import make_optimizer
    from ae_torch.weights import state_dict

    dtype = next(model.parameters()).dtype
    xt = torch.from_numpy(batch).to(dtype)
    opt = make_optimizer(model.train(), optimizer)
    with relu() as seen:
        LOSSES[loss](model, xt, xt, {k: torch.from_numpy(v).to(dtype) for k, v in noise.items()}).backward()
    grads = {name: p.grad.numpy().copy() for name, p in model.named_parameters()}
    opt.step()
    return state_dict(model), seen, grads


def _float32_step_rows(spec, seed, batch, noise, loss, optimizer, after, torch_sides, torch_grads) -> list[Row]:
    """float32 step rows against float64 steps from the same weights and batch: JAX's trainer against the
    step that follows its ReLU kinks; torch's error the largest over its trainer's step and steps on
    ``batch_orders`` of the batch, each against its own reference (ae_parity.reference)."""
    import jax.numpy as jnp

    import ae_jax
    import ae_torch
    from ae_core import init_state_dict
    from ae_jax.train import loss_grad_and_relu_inputs

    start = init_state_dict(spec, seed, "float32")
    jm = ae_jax.build(spec, dtype="float32", seed=seed)
    jm.train()
    jax_sides = loss_grad_and_relu_inputs(jm, jnp.asarray(batch), loss=loss,
                                          noise={k: jnp.asarray(v) for k, v in noise.items()})[2]

    def reference(xb, noise_b, sides):
        return _one_step(float64_reference(spec, start), xb, noise_b, loss, optimizer, lambda: follow_kinks(sides))

    ref_jax, jax_kinks, ref_grads = reference(batch, noise, jax_sides)
    torch_ref, torch_kinks, torch_ref_grads = reference(batch, noise, torch_sides)
    pairs = [(after["torch"], torch_ref, torch_grads, torch_ref_grads)]
    for order in batch_orders(len(batch)):
        xo, no = batch[order], {k: v[order] for k, v in noise.items()}
        t, sides, g = _one_step(ae_torch.build(spec, dtype="float32", seed=seed), xo, no, loss, optimizer,
                                record_relu_inputs)
        r, _, rg = reference(xo, no, sides)
        pairs.append((t, r, g, rg))
    scales = module_scales(ref_grads)
    rows = []
    for name, w in after["torch"].items():
        row = make_row(f"step {name}", "step", after["jax"][name], w, "float32", reference=ref_jax[name],
                       torch_refs=[(t[name], r[name]) for t, r, _, _ in pairs])
        if optimizer.name in ("adam", "adamw") and name in ref_grads:
            row = adam_reference_row(row, after["jax"][name], ref_jax[name], ref_grads[name],
                                      max(diff(g[name], rg[name])[0] for _, _, g, rg in pairs),
                                      scales[name.rsplit(".", 1)[0]], optimizer)
        rows.append(row)
    note = " ".join(kink_notes(jax_kinks, torch_kinks))
    return [dataclasses.replace(rows[0], note=note)] + rows[1:] if note else rows


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
            target = f"ref<={r.tol:g}x" + ("*" if r.elementwise_ok is not None else "")
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
                     f"{REFERENCE_K:g} x torch err + {REFERENCE_FLOOR_ULPS} ulps ({REFERENCE_FLOOR_ULPS * FLOAT32_EPS:.1e}); "
                     f"gradients and steps: each run's reference follows its own side of a ReLU kink within rounding of 0")
    lines += [f"note ({r.quantity}): {r.note}" for r in rows if r.note]
    if any(r.kind.endswith("*") or (r.kind == "ref" and r.elementwise_ok is not None) for r in rows):
        lines.append("* Adam's first step lr*g/(|g|+eps): per element, the target plus what the gradient target "
                     "admits where |g| is near eps (ae_parity.verdict: adam_first_step_bound, adam_reference_row)")
    return "\n".join(lines)


def summarize(rows: list[Row]) -> dict[str, float]:
    """Worst value per group: float64 the max abs / rel difference to torch of the group's target; float32
    JAX's error against the float64 reference, keyed "<group> vs float64"."""
    out: dict[str, float] = {}
    for r in rows:
        key = f"{r.group} vs float64" if r.kind == "ref" else r.group
        out[key] = max(out.get(key, 0.0), r.value)
    return out
