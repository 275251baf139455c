"""The stages of the divergence finder, each returning typed :class:`Entry` rows (see ``compare.py``).

In order: ``dtype_stage`` (the flax parameters' dtypes, before anything is blamed on a layer),
``random_stage`` (does the torch forward draw random numbers?), ``forward_stage`` (every compared value
in execution order, ``forward.py``), ``buffer_stage``, ``grad_stage``, ``step_stage``. Every torch
forward runs under a fixed seed in a forked RNG (the caller's stream is left alone): the same call gives
the same numbers and verdict.
"""

from __future__ import annotations

import contextlib
import functools
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from ae_core.optim import OptimizerConfig
from ae_core.weights import rename  # prefix renames, torch -> the flax side's canonical names

from .forward import OutputInfo, first_output, forward_rows
from .hints import RANDOM_HINT, module_hint
from .reference import Kinks, batch_orders, follow_kinks, jax_grad_and_relu_inputs, pair_sides, record_relu_inputs
from .verdict import (FLOAT32_EPS, REFERENCE_FLOOR_ULPS, adam_reference_row, diff, make_row,
                      module_scales)
from .trace import is_array, leaves, structure, trace_torch

RANDOM_SEEDS = (0, 1)  # the torch forward under each; outputs that differ mean it draws random numbers
RANDOM_REL = 1e-6  # ... by more than this, relative to the value's scale (not rounding: same input, same machine)


@dataclass
class Entry:
    """One compared tensor (a layer output, functional code's output, a buffer, a gradient, a stepped
    parameter) or one failed check (kind "check": a dtype, randomness, an output structure)."""

    stage: str  # dtype / random / forward / buffer / grad / step
    name: str  # torch name (module, op, parameter)
    torch_type: str
    flax_type: str
    shape: tuple[int, ...]
    max_abs: float  # max |jax - torch|
    max_rel: float  # max_abs / max |torch| (gradients: / the module's largest gradient)
    tol: float
    note: str = ""
    hint: str = ""  # what to check if this is the first divergence (not part of the JSON report)
    kind: str = "rel"  # rel: max_rel <= tol; ref: the float32 reference criterion; check: a failed check
    jax_err: float | None = None  # kind ref: each side's error against the float64 reference (relative)
    torch_err: float | None = None
    elementwise_ok: bool | None = None  # an Adam step judged per element (ae_parity.verdict.adam_reference_row)

    @property
    def ok(self) -> bool:
        if self.kind == "check":
            return False
        if self.elementwise_ok is not None:
            return self.elementwise_ok
        if self.kind == "ref":
            return bool(self.jax_err <= self.tol * self.torch_err + REFERENCE_FLOOR_ULPS * FLOAT32_EPS)
        return bool(self.max_rel <= self.tol)


@contextlib.contextmanager
def seeded(seed: int = 0):
    """torch's RNG seeded for a block, the caller's state restored after it."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


@dataclass
class Pair:
    """The torch model (a float-cast copy) and the NNX model under comparison, and what every stage needs."""

    torch_model: Any
    flax_model: Any
    x: np.ndarray  # the batch, torch layout
    flax_x: Any  # the batch as the NNX model takes it
    dtype: str
    tol: float
    names: Mapping[str, str] | None = None
    rules: Mapping | None = None
    kwargs: Mapping[str, np.ndarray] = field(default_factory=dict)  # further forward arguments (noise)
    input_cl: bool = False  # the NNX model takes channels-last images
    output_cl: bool | None = None  # its outputs are channels-last (None: known from the modules, see nnx_record)
    reference: Any = None  # float32: the float64 reference torch model (same weights, upcast)
    use_reference: bool = False

    def __post_init__(self) -> None:
        from ae_jax.convert import module_names

        self.torch_modules = dict(self.torch_model.named_modules())
        self.flax_types = {name: type(m).__name__ for name, m in module_names(self.flax_model).items()}
        self.ref_trace = None

    def torch_type(self, module: str) -> str:
        return type(self.torch_modules[module]).__name__ if module in self.torch_modules else "?"

    def flax_type(self, name: str) -> str:
        return self.flax_types.get(name.rsplit(".", 1)[0], "?")

    def torch_inputs(self, model_dtype=None):
        """The batch and the further forward arguments as torch takes them; floating arrays in the
        comparison dtype (upcast from it for the float64 reference), others as they are."""
        import torch

        def cast(v):
            if not isinstance(v, np.ndarray):
                return v
            return torch.from_numpy(v.astype(model_dtype) if model_dtype and v.dtype.kind == "f" else v.copy())

        return cast(self.x), {k: cast(v) for k, v in self.kwargs.items()}

    def flax_kwargs(self):
        import jax.numpy as jnp

        return {k: jnp.asarray(v) if isinstance(v, np.ndarray) else v for k, v in self.kwargs.items()}

    def entry(self, stage, name, ttype, ftype, jv, tv, *, note="", scale=None, hint="", ref=None,
              ref_scale=None, torch_refs=(), judge=None) -> Entry:
        """One compared tensor: with a float64 ``ref`` (and :attr:`use_reference`), judged by the reference
        criterion (``ae_parity.verdict.make_row``: errors relative to ``ref_scale``, default max |ref|;
        torch's the largest over ``torch_refs``, pairs (a torch float32 value, its reference), default
        ``tv`` against ``ref``; ``judge`` maps that row to the final one, e.g. an Adam step judged per
        element), else at the fixed :attr:`tol`."""
        jv, tv = np.asarray(jv), np.asarray(tv)
        if jv.shape != tv.shape:
            return Entry(stage, name, ttype, ftype, tuple(tv.shape), float("inf"), float("inf"), self.tol,
                         "; ".join(p for p in (note, f"shape mismatch: flax {tuple(jv.shape)} in torch's layout") if p),
                         hint)
        if ref is None or not self.use_reference:
            max_abs, max_rel = diff(jv, tv, scale)
            return Entry(stage, name, ttype, ftype, tuple(tv.shape), max_abs, max_rel, self.tol, note, hint)
        row = make_row(name, stage, jv, tv, self.dtype, scale, ref, ref_scale, torch_refs)
        row = judge(row) if judge else row
        return Entry(stage, name, ttype, ftype, row.shape, row.max_abs, row.max_rel, row.tol, note, hint,
                     "ref", row.jax_err, row.torch_err, row.elementwise_ok)

    def check(self, stage, name, ttype, ftype, note, *, hint, shape=()) -> Entry:
        return Entry(stage, name, ttype, ftype, tuple(shape), float("inf"), float("inf"), 0.0, note, hint, "check")


def cast_inputs(kwargs: Mapping, dtype: str) -> dict:
    """Further forward arguments: floating arrays (and lists of numbers) in ``dtype``, anything else as it is."""
    out = {}
    for k, v in kwargs.items():
        a = np.asarray(v) if isinstance(v, (np.ndarray, list)) or hasattr(v, "__array__") else None
        out[k] = a.astype(dtype) if a is not None and a.dtype.kind == "f" else (a if a is not None else v)
    return out


# ---------------------------------------------------------------------------------- checks ----
def dtype_stage(pair: Pair) -> list[Entry]:
    """Every flax parameter / statistic whose dtype is not the comparison's: one entry each, the hint
    naming all of them and the fix."""
    from flax import nnx

    from ae_jax.convert import bindings

    order = {rename(k, pair.names): i for i, k in enumerate(pair.torch_model.state_dict())}
    bad = sorted((b for b in bindings(pair.flax_model, pair.rules)
                  if not b.rule.integer and np.dtype(b.variable.dtype).name != pair.dtype),
                 key=lambda b: order.get(b.name, len(order)))  # in torch's order
    if not bad:
        return []
    want = f"jnp.{pair.dtype}"
    stats = [b.name for b in bad if isinstance(b.module, nnx.BatchNorm) and not isinstance(b.variable, nnx.Param)]
    params = [b.name for b in bad if b.name not in stats]
    hint = []
    if params:
        hint.append(f"flax parameters in {np.dtype(bad[0].variable.dtype).name} in a {pair.dtype} comparison "
                    f"({', '.join(params)}): build these layers with param_dtype={want} (and dtype={want} for the "
                    f"computation); a plain nnx.Linear(...) / nnx.Conv(...) makes float32 parameters")
    if stats:
        hint.append(f"nnx.BatchNorm keeps its running statistics in float32 whatever param_dtype ({', '.join(stats)}): "
                    f"in a float64 comparison use a BatchNorm with float64 statistics (ae_jax.layers.BatchNorm, "
                    f"torch's semantics)")
    return [pair.check("dtype", b.name, pair.torch_type(b.name.rsplit(".", 1)[0]), type(b.module).__name__,
                       f"flax {np.dtype(b.variable.dtype).name}, compared in {pair.dtype}", hint=" | ".join(hint),
                       shape=b.torch_shape()) for b in bad]


def random_stage(pair: Pair, fresh, trace) -> list[Entry]:
    """Run the torch forward again (on ``fresh``, a copy of the model before the first forward) under
    another seed: values that differ mean the forward samples; reported at the first node that differs."""
    import torch

    x, kwargs = pair.torch_inputs()
    with torch.no_grad(), seeded(RANDOM_SEEDS[1]):
        _, again = trace_torch(fresh, x, kwargs)
    for a, b in zip(trace.nodes, again.nodes):
        for path, v in a.leaves.items():
            w = b.leaves.get(path)
            if w is None or w.shape != v.shape or diff(w, v)[1] > RANDOM_REL:
                return [pair.check("random", a.key, a.label, "-", f"the torch forward gives other values under "
                                   f"another seed (seeds {RANDOM_SEEDS}), first at {a.key}{path}",
                                   hint=f"{a.key} ({a.label}) is random: {RANDOM_HINT}", shape=v.shape)]
    return []


# ---------------------------------------------------------------------------------- stages ----
def forward_stage(pair: Pair) -> tuple[list[Entry], list[str], OutputInfo, Any]:
    """Every compared value in torch's execution order (``forward.py``), then the model output; notes;
    what the gradient stage needs of the output; the torch trace."""
    import torch

    from .nnx_record import flax_record

    x, kwargs = pair.torch_inputs()
    if pair.reference is not None:  # its own copy: its forward must not change the reference's buffers twice
        xr, kr = pair.torch_inputs("float64")
        with torch.no_grad(), seeded(RANDOM_SEEDS[0]):
            _, pair.ref_trace = trace_torch(pair.reference, xr, kr)
    with torch.no_grad(), seeded(RANDOM_SEEDS[0]):
        _, trace = trace_torch(pair.torch_model, x, kwargs)
    out_j, records, outputs = flax_record(pair.flax_model, pair.flax_x, pair.input_cl, pair.flax_kwargs(),
                                          pair.output_cl)
    entries, notes = forward_rows(pair, trace, records, outputs, structure(out_j), pair.ref_trace)
    return entries, notes, first_output(trace, outputs), trace


def buffer_stage(pair: Pair) -> list[Entry]:
    """The buffers after the forward (train mode: running statistics were updated on both sides)."""
    from ae_jax.weights import state_dict

    flax_sd = state_dict(pair.flax_model, pair.rules)
    ref = dict(pair.reference.named_buffers()) if pair.reference is not None else {}
    entries = []
    for tname, buf in pair.torch_model.named_buffers():
        name = rename(tname, pair.names)
        if name in flax_sd:
            module = tname.rsplit(".", 1)[0]
            hint = module_hint(pair.torch_modules[module]) if module in pair.torch_modules else ""
            r = ref[tname].numpy() if tname in ref and buf.dtype.is_floating_point else None
            entries.append(pair.entry("buffer", name, pair.torch_type(module), pair.flax_type(name), flax_sd[name],
                                      buf.numpy(), hint=hint, ref=r))
    return entries


def _mse_target(pair: Pair, target, out_shape) -> np.ndarray:
    if target is None:
        target = pair.x if out_shape == pair.x.shape else np.random.default_rng(0).uniform(size=out_shape)
    return np.asarray(target, dtype=pair.dtype)


@dataclass
class Gradients:
    """What :func:`grad_stage` computed, for :func:`step_stage`. float32 (the reference criterion) also
    keeps JAX's float64 reference gradients and each torch float32 run's gradients with their own
    reference: the batch in its order, then in ``batch_orders``'."""

    jax: dict[str, np.ndarray]  # the NNX gradients, canonical names, torch layout
    torch: dict[str, np.ndarray]  # torch's, torch names
    jax_ref: dict[str, np.ndarray] | None = None  # torch names
    torch_runs: list[tuple[dict, dict]] = field(default_factory=list)
    kinks: tuple[Kinks, Kinks] | None = None  # what JAX's and torch's references did at ReLU kinks


def _batch_inputs(pair: Pair, target: np.ndarray, model_dtype=None, order=None):
    """The batch, the further forward arguments and the MSE target as torch takes them, optionally in
    ``order`` (arrays whose first axis is the batch's are reordered, others passed as they are)."""
    import torch

    x, kwargs = pair.torch_inputs(model_dtype)
    t = torch.from_numpy(target.astype(model_dtype) if model_dtype else target.copy())
    if order is None:
        return x, kwargs, t
    n, idx = len(pair.x), torch.from_numpy(order)

    def take(v):
        return v[idx] if isinstance(v, torch.Tensor) and v.ndim and v.shape[0] == n else v

    return take(x), {k: take(v) for k, v in kwargs.items()}, take(t)


def _torch_grads(model, inputs, relu=None) -> tuple[dict[str, np.ndarray], Any]:
    """Every parameter's gradient (numpy, torch names) of MSE(the first output array, the target), the
    forward under the fixed seed; and what the context manager ``relu`` yielded around it."""
    import torch

    x, kwargs, target = inputs
    model.zero_grad(set_to_none=True)
    with relu or contextlib.nullcontext() as seen, seeded(RANDOM_SEEDS[0]):
        recon = leaves(model(x, **kwargs), is_array)[0][1]
        torch.nn.functional.mse_loss(recon, target).backward()
    return {n: (p.grad.numpy().copy() if p.grad is not None else np.zeros_like(p.detach().numpy()))
            for n, p in model.named_parameters()}, seen


def _jax_grads(pair: Pair, out: OutputInfo, target: np.ndarray, relu: bool):
    """The NNX gradients (canonical names, torch layout) of MSE(the first output array, the target), and
    with ``relu`` the inputs of its ReLU-family operations, from the same compiled computation
    (``ae_parity.reference.jax_grad_and_relu_inputs``; without: eager, its ops compiled once per shape and
    reused by every later comparison)."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from ae_jax.weights import to_torch_layout

    graphdef, params, rest = nnx.split(nnx.clone(pair.flax_model), nnx.Param, ...)
    ftarget = jnp.asarray(np.moveaxis(target, 1, -1) if out.flax_channels_last and target.ndim >= 3 else target)
    fkwargs = pair.flax_kwargs()

    def loss_fn(p):
        first = leaves(nnx.merge(graphdef, p, rest, copy=True)(pair.flax_x, **fkwargs), is_array)[0][1]
        return jnp.mean(jnp.square(first - ftarget))

    grads, sides = jax_grad_and_relu_inputs(loss_fn, params) if relu else (jax.grad(loss_fn)(params), [])
    return to_torch_layout(pair.flax_model, grads, pair.rules), sides


def grad_stage(pair: Pair, out: OutputInfo, target=None) -> tuple[list[Entry], Gradients | None]:
    """Every parameter's gradient of MSE(first output array, target), relative to its module's largest
    gradient; the first array of a tuple / list / dict output is the reconstruction, the others (mu,
    logvar, z...) do not enter the loss. float32: judged against float64 references that follow each
    run's own ReLU kinks (``ae_parity.reference``): JAX's from the NNX port's ReLU inputs paired with
    torch's calls (:func:`~ae_parity.reference.pair_sides`), torch's error the largest over the batch in
    its order and in ``batch_orders``'."""
    target = _mse_target(pair, target, out.torch_shape)
    if out.flax_torch_shape != target.shape:  # already a shape mismatch of the forward stage
        return [], None
    tm = pair.torch_model
    refs = pair.use_reference and pair.reference is not None
    torch_grads, torch_sides = _torch_grads(tm, _batch_inputs(pair, target), record_relu_inputs() if refs else None)
    grads_j, jax_sides = _jax_grads(pair, out, target, refs)
    grads = Gradients(grads_j, torch_grads)
    scale = module_scales(torch_grads)
    if refs:
        inputs64 = _batch_inputs(pair, target, "float64")
        with follow_kinks(pair_sides(torch_sides, jax_sides)) as jax_kinks:
            grads.jax_ref = _torch_grads(pair.reference, inputs64)[0]
        with follow_kinks(torch_sides) as torch_kinks:
            grads.torch_runs.append((torch_grads, _torch_grads(pair.reference, inputs64)[0]))
        grads.kinks = (jax_kinks, torch_kinks)
        if len(pair.x) > 1 and target.shape[:1] == pair.x.shape[:1]:
            for order in batch_orders(len(pair.x)):
                g, sides = _torch_grads(tm, _batch_inputs(pair, target, order=order), record_relu_inputs())
                with follow_kinks(sides):
                    grads.torch_runs.append((g, _torch_grads(pair.reference, _batch_inputs(pair, target, "float64",
                                                                                           order))[0]))
        ref_scale = module_scales(grads.jax_ref)
    entries = []
    for tname, g in torch_grads.items():
        name, module = rename(tname, pair.names), tname.rsplit(".", 1)[0]
        hint = module_hint(pair.torch_modules[module]) if module in pair.torch_modules else ""
        ref = dict(ref=grads.jax_ref[tname], ref_scale=ref_scale.get(module, 0.0),
                   torch_refs=[(t[tname], r[tname]) for t, r in grads.torch_runs]) if refs else {}
        entries.append(pair.entry("grad", name, pair.torch_type(module), pair.flax_type(name), grads_j[name], g,
                                  scale=scale.get(module, 0.0), hint=hint, **ref))
    return entries, grads


def _stepped(model, grads: Mapping[str, np.ndarray], optimizer: OptimizerConfig) -> dict[str, np.ndarray]:
    """The parameters (torch names) of a copy of ``model`` after one torch optimizer step on ``grads``."""
    import copy

    import torch

    from ae_torch.optim import make_optimizer

    m = copy.deepcopy(model)
    for n, p in m.named_parameters():
        p.grad = torch.from_numpy(np.asarray(grads[n])).to(p.dtype)
    make_optimizer(m, optimizer).step()
    return {n: p.detach().numpy().copy() for n, p in m.named_parameters()}


def step_stage(pair: Pair, start: dict[str, np.ndarray], grads: Gradients, optimizer: OptimizerConfig) -> list[Entry]:
    """One optimizer step on the gradients of :func:`grad_stage`, from the transferred weights ``start``.
    float32: JAX's step against the float64 step on its reference gradients, torch's error the largest
    over its runs, each against the step on its own reference; an Adam / AdamW step per element
    (``ae_parity.verdict.adam_reference_row``)."""
    import optax

    from ae_jax.optim import make_optimizer as make_optax
    from ae_jax.weights import from_torch_layout, to_torch_layout

    fm, rules = pair.flax_model, pair.rules
    tx = make_optax(optimizer)
    params = from_torch_layout(fm, {k: start[k] for k in grads.jax}, rules)
    updates, _ = tx.update(from_torch_layout(fm, grads.jax, rules), tx.init(params), params)
    stepped_j = to_torch_layout(fm, optax.apply_updates(params, updates), rules)
    stepped_t = _stepped(pair.torch_model, grads.torch, optimizer)
    hint = (f"the gradients agree but the step does not: check the optimizer mapping ({optimizer.name}; "
            f"pitfall 10)")
    if grads.jax_ref is not None:
        ref_j = _stepped(pair.reference, grads.jax_ref, optimizer)
        runs = [(stepped_t if i == 0 else _stepped(pair.torch_model, t, optimizer), _stepped(pair.reference, r, optimizer))
                for i, (t, r) in enumerate(grads.torch_runs)]
        grad_scales = module_scales(grads.jax_ref)
    entries = []
    for tname, w in stepped_t.items():
        name, module = rename(tname, pair.names), tname.rsplit(".", 1)[0]
        ref = {}
        if grads.jax_ref is not None:
            ref = dict(ref=ref_j[tname], torch_refs=[(t[tname], r[tname]) for t, r in runs])
            if optimizer.name in ("adam", "adamw"):
                ref["judge"] = functools.partial(
                    adam_reference_row, jax_value=stepped_j[name], reference=ref_j[tname],
                    ref_grad=grads.jax_ref[tname], scale=grad_scales[module], optimizer=optimizer,
                    torch_grad_err=max(diff(t[tname], r[tname])[0] for t, r in grads.torch_runs))
        entries.append(pair.entry("step", name, pair.torch_type(module), pair.flax_type(name), stepped_j[name], w,
                                  hint=hint, **ref))
    return entries
