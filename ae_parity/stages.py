"""The stages of the divergence finder, each returning typed :class:`Entry` rows (see ``compare.py``).

In order: ``dtype_stage`` (the flax parameters' dtypes, before anything is blamed on a layer),
``random_stage`` (does the torch forward draw random numbers?), ``forward_stage`` (every compared value
in execution order, ``forward.py``), ``buffer_stage``, ``grad_stage``, ``step_stage``. Every torch
forward runs under a fixed seed in a forked RNG (the caller's stream is left alone): the same call gives
the same numbers and verdict.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from ae_core.optim import OptimizerConfig

from .forward import OutputInfo, first_output, forward_rows
from .hints import RANDOM_HINT, module_hint
from .parity import FLOAT32_EPS, REFERENCE_FLOOR_ULPS, REFERENCE_K, diff, module_scales
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

    @property
    def ok(self) -> bool:
        if self.kind == "check":
            return False
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

    def entry(self, stage, name, ttype, ftype, jv, tv, *, note="", scale=None, hint="", ref=None) -> Entry:
        jv, tv = np.asarray(jv), np.asarray(tv)
        if jv.shape != tv.shape:
            return Entry(stage, name, ttype, ftype, tuple(tv.shape), float("inf"), float("inf"), self.tol,
                         "; ".join(p for p in (note, f"shape mismatch: flax {tuple(jv.shape)} in torch's layout") if p),
                         hint)
        max_abs, max_rel = diff(jv, tv, scale)
        if ref is None or not self.use_reference:
            return Entry(stage, name, ttype, ftype, tuple(tv.shape), max_abs, max_rel, self.tol, note, hint)
        jax_err, torch_err = diff(jv, ref)[1], diff(tv, ref)[1]
        return Entry(stage, name, ttype, ftype, tuple(tv.shape), max_abs, max_rel, REFERENCE_K, note, hint,
                     "ref", jax_err, torch_err)

    def check(self, stage, name, ttype, ftype, note, *, hint, shape=()) -> Entry:
        return Entry(stage, name, ttype, ftype, tuple(shape), float("inf"), float("inf"), 0.0, note, hint, "check")


def cast_inputs(kwargs: Mapping, dtype: str) -> dict:
    """Further forward arguments: floating arrays (and lists of numbers) in ``dtype``, anything else as it is."""
    out = {}
    for k, v in kwargs.items():
        a = np.asarray(v) if isinstance(v, (np.ndarray, list)) or hasattr(v, "__array__") else None
        out[k] = a.astype(dtype) if a is not None and a.dtype.kind == "f" else (a if a is not None else v)
    return out


def rename(name: str, names: Mapping[str, str] | None) -> str:
    """Prefix renames, torch -> the flax side's canonical names."""
    for src, dst in (names or {}).items():
        if name == src or name.startswith(src + "."):
            return dst + name[len(src):]
    return name


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


def grad_stage(pair: Pair, out: OutputInfo, target=None) -> tuple[list[Entry], dict[str, np.ndarray]]:
    """Every parameter's gradient of MSE(first output array, target), relative to its module's largest
    gradient; also the NNX gradients in canonical form (for :func:`step_stage`). The first array of a
    tuple / list / dict output is the reconstruction; the others (mu, logvar, z...) do not enter the loss."""
    import jax
    import jax.numpy as jnp
    import torch
    from flax import nnx

    from ae_jax.weights import to_torch_layout

    tm = pair.torch_model
    x, kwargs = pair.torch_inputs()
    target = _mse_target(pair, target, out.torch_shape)
    if out.flax_torch_shape != target.shape:  # already a shape mismatch of the forward stage
        return [], {}
    tm.zero_grad(set_to_none=True)
    with seeded(RANDOM_SEEDS[0]):
        recon = leaves(tm(x, **kwargs), is_array)[0][1]
        torch.nn.functional.mse_loss(recon, torch.from_numpy(target)).backward()
    graphdef, params, rest = nnx.split(nnx.clone(pair.flax_model), nnx.Param, ...)
    ftarget = jnp.asarray(np.moveaxis(target, 1, -1) if out.flax_channels_last and target.ndim >= 3 else target)
    fkwargs = pair.flax_kwargs()

    def loss_fn(p):  # eager: its ops are compiled once per shape and reused by every later comparison
        first = leaves(nnx.merge(graphdef, p, rest, copy=True)(pair.flax_x, **fkwargs), is_array)[0][1]
        return jnp.mean(jnp.square(first - ftarget))

    grads = jax.grad(loss_fn)(params)
    grads_j = to_torch_layout(pair.flax_model, grads, pair.rules)
    scale = module_scales({tname: p.grad.numpy() for tname, p in tm.named_parameters() if p.grad is not None})
    entries = []
    for tname, p in tm.named_parameters():
        name, module = rename(tname, pair.names), tname.rsplit(".", 1)[0]
        g = p.grad.numpy() if p.grad is not None else np.zeros(tuple(p.shape), pair.dtype)
        hint = module_hint(pair.torch_modules[module]) if module in pair.torch_modules else ""
        entries.append(pair.entry("grad", name, pair.torch_type(module), pair.flax_type(name), grads_j[name], g,
                                  scale=scale.get(module, 0.0), hint=hint))
    return entries, grads_j


def step_stage(pair: Pair, start: dict[str, np.ndarray], grads_j: dict[str, np.ndarray],
               optimizer: OptimizerConfig) -> list[Entry]:
    """One optimizer step on the gradients of :func:`grad_stage`, from the transferred weights ``start``."""
    import optax

    from ae_jax.optim import make_optimizer as make_optax
    from ae_jax.weights import from_torch_layout, to_torch_layout
    from ae_torch.optim import make_optimizer as make_torch_opt

    tm, fm, rules = pair.torch_model, pair.flax_model, pair.rules
    make_torch_opt(tm, optimizer).step()
    tx = make_optax(optimizer)
    params = from_torch_layout(fm, {k: start[k] for k in grads_j}, rules)
    updates, _ = tx.update(from_torch_layout(fm, grads_j, rules), tx.init(params), params)
    stepped = to_torch_layout(fm, optax.apply_updates(params, updates), rules)
    hint = (f"the gradients agree but the step does not: check the optimizer mapping ({optimizer.name}; "
            f"pitfall 10)")
    return [pair.entry("step", rename(tname, pair.names), pair.torch_type(tname.rsplit(".", 1)[0]),
                       pair.flax_type(rename(tname, pair.names)), stepped[rename(tname, pair.names)],
                       p.detach().numpy(), hint=hint)
            for tname, p in tm.named_parameters()]
