"""Where does a Flax port diverge from its PyTorch original? Layer by layer, gradient by gradient.

:func:`compare` takes any torch module and any NNX module whose trees mirror each other (user-written,
nested, not only presets), moves the torch weights across with the project's rule table
(``ae_jax.convert.RULES``, plus ``rules`` for the user's own NNX classes, passed down, never written into
the table), runs both on one batch while capturing every layer's output (torch forward hooks; on the
NNX side each submodule INSTANCE is given a recording subclass of its own class for the duration of
the run -- no library class is patched), and reports in execution order: shapes, max abs / relative difference, and the FIRST layer past the
tolerance with a hint from the known pitfalls (docs/porting.md). Then the buffers after the forward
(BatchNorm running statistics), every parameter's gradient of an MSE loss, and one optimizer step.

Relative differences are max|jax - torch| / max|torch| of the tensor. The default tolerances sit far
above rounding (float64 1e-10, float32 1e-5) and far below any real porting bug (>= 1e-6 in float64).
"""

from __future__ import annotations

import contextvars
import json
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Mapping

import numpy as np

from ae_core.optim import OptimizerConfig

from .parity import diff, module_scales

DEFAULT_TOL = {"float32": 1e-5, "float64": 1e-10}



def hints() -> dict[str, str]:
    """torch module type -> what usually goes wrong there (numbers refer to docs/porting.md): each layer
    kind's hints from the registry (``ae_core.layers``), and those of torch layers that have no kind yet."""
    from ae_core import LAYER_KINDS

    out = {name: text for kind in LAYER_KINDS.values() for name, text in kind.hints.items()}
    out.setdefault("LayerNorm", "LayerNorm: epsilon differs, torch 1e-5 vs Flax 1e-6 (pitfall 6)")
    return out


class PortMismatchError(ValueError):
    """The two module trees do not mirror each other: lists what is only on each side."""

    def __init__(self, only_torch: list[str], only_flax: list[str], other: list[str]):
        self.only_torch, self.only_flax, self.other = only_torch, only_flax, other
        lines = [f"  only in torch: {n}" for n in only_torch] + [f"  only in flax:  {n}" for n in only_flax]
        lines += [f"  {p}" for p in other]
        super().__init__("the torch and flax models do not mirror each other "
                         f"({len(lines)} problem(s)):\n" + "\n".join(lines))


@dataclass
class Entry:
    """One compared tensor: a layer output, a buffer, a gradient or a stepped parameter."""

    stage: str  # forward / buffer / grad / step
    name: str  # torch name
    torch_type: str
    flax_type: str
    shape: tuple[int, ...]
    max_abs: float
    max_rel: float
    tol: float
    note: str = ""
    hint: str = ""  # what to check if this is the first divergence (not part of the JSON report)

    @property
    def ok(self) -> bool:
        return self.max_rel <= self.tol


@dataclass
class Divergence:
    stage: str
    name: str
    torch_type: str
    max_rel: float
    hint: str


@dataclass
class Report:
    dtype: str
    mode: str
    entries: list[Entry]
    first: Divergence | None
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.first is None

    def stage(self, stage: str) -> list[Entry]:
        return [e for e in self.entries if e.stage == stage]

    def table(self) -> str:
        head = f"{'#':>3} {'stage':<7} {'name':<28} {'torch':<16} {'flax':<16} {'shape':<14} {'max abs':>9} {'max rel':>9}  ok"
        lines = [f"dtype {self.dtype}, {self.mode} mode; relative = max|jax - torch| / max|torch|", head, "-" * len(head)]
        for i, e in enumerate(self.entries):
            shape = "x".join(map(str, e.shape)) or "scalar"
            lines.append(f"{i:>3} {e.stage:<7} {e.name:<28.28} {e.torch_type:<16.16} {e.flax_type:<16.16} "
                         f"{shape:<14.14} {e.max_abs:>9.2e} {e.max_rel:>9.2e}  {'yes' if e.ok else 'NO'}"
                         + (f"  ({e.note})" if e.note else ""))
        lines += [f"note: {n}" for n in self.notes]
        if self.first is None:
            lines.append("no divergence: every layer output, buffer, gradient and stepped parameter within tolerance")
        else:
            f = self.first
            lines.append(f"FIRST DIVERGENCE: {f.stage} {f.name} ({f.torch_type}), max rel {f.max_rel:.2e}")
            lines.append(f"hint: {f.hint}")
        return "\n".join(lines)

    def to_json(self) -> str:
        d = {"dtype": self.dtype, "mode": self.mode, "ok": self.ok, "notes": self.notes,
             "first_divergence": asdict(self.first) if self.first else None,
             "entries": [{**{k: v for k, v in asdict(e).items() if k != "hint"}, "ok": e.ok} for e in self.entries]}
        return json.dumps(d, indent=1)


# --------------------------------------------------------------------------------- weights ----
def _rename(name: str, names: Mapping[str, str] | None) -> str:
    for src, dst in (names or {}).items():  # prefix renames, torch -> flax side's canonical names
        if name == src or name.startswith(src + "."):
            return dst + name[len(src):]
    return name


def transfer(torch_model, flax_model, names: Mapping[str, str] | None = None, rules: Mapping | None = None) -> list[str]:
    """Copy torch's state dict into the NNX model via the rule table (and ``rules`` for your own NNX
    classes); return notes. On any mismatch raise :class:`PortMismatchError` listing the unmatched names
    on each side (nothing is loaded)."""
    from ae_jax.convert import bindings
    from ae_jax.weights import load_state_dict

    torch_sd = {_rename(k, names): v.detach().cpu().numpy() for k, v in torch_model.state_dict().items()}
    binds = bindings(flax_model, rules)
    expected = {b.name: b.torch_shape() for b in binds}
    notes = []
    for k in list(torch_sd):  # Flax's own BatchNorm has no counter: not a porting error
        if k.endswith(".num_batches_tracked") and k not in expected:
            del torch_sd[k]
            notes.append(f"{k}: the flax module has no counter (dropped)")
    only_torch = [k for k in torch_sd if k not in expected]
    only_flax = [f"{b.name} (flax path {b.nnx_path})" for b in binds if b.name not in torch_sd]
    other = [f"{k}: torch shape {tuple(v.shape)} != flax {expected[k]} (in torch layout)"
             for k, v in torch_sd.items() if k in expected and tuple(v.shape) != tuple(expected[k])]
    if only_torch or only_flax or other:
        raise PortMismatchError(only_torch, only_flax, other)
    load_state_dict(flax_model, torch_sd, strict=True, rules=rules)
    return notes


# ------------------------------------------------------------------------------------- capture ----
def _first_array(out):
    if isinstance(out, (tuple, list)):
        return _first_array(out[0]) if out else None
    if isinstance(out, dict):
        return _first_array(next(iter(out.values()))) if out else None
    return out


def torch_outputs(model, x) -> tuple[Any, list[tuple[str, str, np.ndarray]]]:
    """Run the torch model with a forward hook on every submodule: (output, [(name, type, first output
    array)] in execution order)."""
    records = []
    hooks = []
    for name, module in model.named_modules():
        if not name:
            continue

        def hook(mod, inputs, output, name=name):
            arr = _first_array(output)
            if arr is not None and hasattr(arr, "detach"):
                records.append((name, type(mod).__name__, arr.detach().cpu().numpy().copy()))

        hooks.append(module.register_forward_hook(hook))
    try:
        out = model(x)
    finally:
        for h in hooks:
            h.remove()
    return out, records


# The records of the capture in progress: {id(module): (torch name, records dict)}; None outside one.
_CAPTURE: contextvars.ContextVar = contextvars.ContextVar("ae_parity_capture", default=None)
_RECORDING: dict[type, type] = {}


def _recording_class(cls: type) -> type:
    """A subclass of ``cls`` whose ``__call__`` records its output while a capture is running. Only
    instances are switched to it (and back); ``cls`` itself is never modified."""
    if cls not in _RECORDING:
        def __call__(self, *args, **kwargs):
            out = cls.__call__(self, *args, **kwargs)
            capture = _CAPTURE.get()
            if capture is not None and id(self) in capture[0]:
                arr = _first_array(out)
                if arr is not None:
                    capture[1][capture[0][id(self)]] = (cls.__name__, np.asarray(arr))
            return out

        _RECORDING[cls] = type(cls)(cls.__name__, (cls,), {"__call__": __call__, "__module__": cls.__module__,
                                                           "__qualname__": cls.__qualname__})
    return _RECORDING[cls]


def flax_outputs(model, x) -> tuple[Any, dict[str, tuple[str, np.ndarray]]]:
    """Run the NNX model eagerly, recording every callable submodule's output: (output, {torch name:
    (type, first output array)})."""
    from ae_jax.convert import module_names

    named = {name: m for name, m in module_names(model).items() if callable(m)}
    records: dict[str, tuple[str, np.ndarray]] = {}
    originals = {name: type(m) for name, m in named.items()}
    token = _CAPTURE.set(({id(m): name for name, m in named.items()}, records))
    try:
        for name, m in named.items():
            object.__setattr__(m, "__class__", _recording_class(originals[name]))
        out = model(x)
    finally:
        for name, m in named.items():
            object.__setattr__(m, "__class__", originals[name])
        _CAPTURE.reset(token)
    return out, records


def _align(flax_value: np.ndarray, torch_shape: tuple[int, ...]) -> tuple[np.ndarray, str]:
    """The flax value in torch's layout: NHWC activations are compared as NCHW."""
    if flax_value.shape == torch_shape:
        return flax_value, ""
    if flax_value.ndim == 4 and flax_value.transpose(0, 3, 1, 2).shape == torch_shape:
        return flax_value.transpose(0, 3, 1, 2), "NHWC"
    return flax_value, "shape differs"


def _hint(types: list[str]) -> str:
    table = hints()
    found = [table[t] for t in dict.fromkeys(reversed(types)) if t in table]
    return " | ".join(found) if found else "no known pitfall for these layer types: check the layer's own code"


# ---------------------------------------------------------------------------------------- stages ----
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

    def __post_init__(self) -> None:
        from ae_jax.convert import module_names

        self.torch_modules = dict(self.torch_model.named_modules())
        self.flax_types = {name: type(m).__name__ for name, m in module_names(self.flax_model).items()}

    def torch_type(self, module: str) -> str:
        return type(self.torch_modules[module]).__name__ if module in self.torch_modules else "?"

    def flax_type(self, name: str) -> str:
        return self.flax_types.get(name.rsplit(".", 1)[0], "?")

    def entry(self, stage, name, ttype, ftype, jv, tv, *, note="", scale=None, hint="") -> Entry:
        aligned, layout = _align(np.asarray(jv), tuple(np.shape(tv)))
        if layout == "shape differs":
            return Entry(stage, name, ttype, ftype, tuple(np.shape(tv)), float("inf"), float("inf"), self.tol,
                         f"flax shape {tuple(np.shape(jv))}", hint)
        max_abs, max_rel = diff(aligned, tv, scale)
        return Entry(stage, name, ttype, ftype, tuple(np.shape(tv)), max_abs, max_rel, self.tol,
                     "; ".join(n for n in (note, layout and f"flax {layout}") if n), hint)


def forward_stage(pair: Pair) -> tuple[list[Entry], list[str], tuple[tuple[int, ...], tuple[int, ...]]]:
    """Every layer output in torch's execution order, then the model output; notes on torch modules
    that have no NNX module at the same path; the output shapes (torch, flax). An entry's hint names the
    layer types since the last agreeing output."""
    import torch

    with torch.no_grad():
        out_t, t_records = torch_outputs(pair.torch_model, torch.from_numpy(pair.x))
    out_j, j_records = flax_outputs(pair.flax_model, pair.flax_x)
    entries, since_ok = [], []
    for name, ttype, tv in t_records:
        since_ok.append(ttype)
        if name not in j_records:
            continue  # e.g. a parameter-free torch module that is a plain function on the flax side
        ftype, jv = j_records[name]
        entries.append(pair.entry("forward", name, ttype, ftype, jv, tv, hint=_hint(since_ok)))
        if entries[-1].ok:
            since_ok = []
    notes = []
    uncaptured = [name for name, _, _ in t_records if name not in j_records]
    if uncaptured:
        notes.append("torch modules with no flax module at the same path (not compared on their own): "
                     + ", ".join(uncaptured))
    out_t, out_j = _first_array(out_t).detach().numpy(), np.asarray(out_j)
    entries.append(pair.entry("forward", "<output>", type(pair.torch_model).__name__, type(pair.flax_model).__name__,
                              out_j, out_t, hint=_hint(since_ok)))
    return entries, notes, (out_t.shape, out_j.shape)


def buffer_stage(pair: Pair) -> list[Entry]:
    """The buffers after the forward (train mode: running statistics were updated on both sides)."""
    from ae_jax.weights import state_dict

    flax_sd = state_dict(pair.flax_model, pair.rules)
    entries = []
    for name, buf in pair.torch_model.named_buffers():
        name = _rename(name, pair.names)
        if name in flax_sd:
            ttype = pair.torch_type(name.rsplit(".", 1)[0])
            entries.append(pair.entry("buffer", name, ttype, pair.flax_type(name), flax_sd[name], buf.numpy(),
                                      hint=_hint([ttype])))
    return entries


def _mse_target(pair: Pair, target, out_shape) -> np.ndarray:
    if target is None:
        target = pair.x if out_shape == pair.x.shape else np.random.default_rng(0).uniform(size=out_shape)
    return np.asarray(target, dtype=pair.dtype)


def grad_stage(pair: Pair, out_shapes, target=None) -> tuple[list[Entry], dict[str, np.ndarray]]:
    """Every parameter's gradient of MSE(output, target), relative to its module's largest gradient;
    also the NNX gradients in canonical form (for :func:`step_stage`). ``out_shapes``: the (torch, flax)
    output shapes from :func:`forward_stage`."""
    import jax
    import jax.numpy as jnp
    import torch
    from flax import nnx

    from ae_jax.weights import to_torch_layout

    tm, x = pair.torch_model, torch.from_numpy(pair.x)
    out_shape, out_j_shape = out_shapes
    target = _mse_target(pair, target, out_shape)
    tm.zero_grad(set_to_none=True)
    torch.nn.functional.mse_loss(_first_array(tm(x)), torch.from_numpy(target)).backward()
    graphdef, params, rest = nnx.split(nnx.clone(pair.flax_model), nnx.Param, ...)
    if out_j_shape != target.shape and target.ndim == 4 and target.transpose(0, 2, 3, 1).shape == out_j_shape:
        ftarget = jnp.asarray(target.transpose(0, 2, 3, 1))  # the flax model answers channels-last
    else:
        ftarget = jnp.asarray(target)

    def loss_fn(p, r):
        out = _first_array(nnx.merge(graphdef, p, r, copy=True)(pair.flax_x))
        return jnp.mean(jnp.square(out - ftarget))

    grads_j = to_torch_layout(pair.flax_model, jax.grad(loss_fn)(params, rest), pair.rules)
    scale = module_scales({tname: p.grad.numpy() for tname, p in tm.named_parameters()})
    entries = []
    for tname, p in tm.named_parameters():
        name, module = _rename(tname, pair.names), tname.rsplit(".", 1)[0]
        ttype = pair.torch_type(module)
        entries.append(pair.entry("grad", name, ttype, pair.flax_type(name), grads_j[name], p.grad.numpy(),
                                  scale=scale[module], hint=_hint([ttype])))
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
    return [pair.entry("step", _rename(tname, pair.names), pair.torch_type(tname.rsplit(".", 1)[0]),
                       pair.flax_type(_rename(tname, pair.names)), stepped[_rename(tname, pair.names)],
                       p.detach().numpy(), hint=hint)
            for tname, p in tm.named_parameters()]


def first_divergence(entries: list[Entry]) -> Divergence | None:
    """The first entry past its tolerance, with its hint."""
    for e in entries:
        if not e.ok:
            return Divergence(e.stage, e.name, e.torch_type, e.max_rel, e.hint)
    return None


# --------------------------------------------------------------------------------------- compare ----
def compare(torch_model, flax_model, x, *, target=None, dtype: str = "float64", mode: str = "eval",
            tol: float | None = None, names: Mapping[str, str] | None = None, rules: Mapping | None = None,
            optimizer: OptimizerConfig | None = None, flax_input: Callable | None = None) -> Report:
    """Transfer weights torch -> flax, then compare every layer output, buffer, gradient and one step.

    ``x``: one batch (numpy) in torch's layout; ``flax_input`` maps it to the NNX model's input (e.g.
    NCHW -> NHWC) when the NNX model does not take torch's layout. ``target``: the MSE target for the
    gradients (default: ``x`` when the output has its shape, else a fixed random array). ``mode``:
    "eval" or "train" (BatchNorm on batch statistics and running-statistic updates; dropout must then
    be absent or off). ``names``: torch-name prefix renames, ``rules``: conversion rules for your own
    NNX layer classes (``{cls: (ParamRule, ...)}``, see ae_jax.convert), used for this comparison only.
    The torch model is not changed. Runs at matmul precision "highest", TF32 off (``parity_numerics``).
    """
    import copy

    import jax.numpy as jnp
    import torch

    from ae_jax.numerics import enable_x64
    from ae_jax.weights import state_dict

    from .parity import parity_numerics

    if mode not in ("eval", "train"):
        raise ValueError(f"mode must be 'eval' or 'train', got {mode!r}")
    if dtype not in DEFAULT_TOL:
        raise ValueError(f"dtype must be one of {sorted(DEFAULT_TOL)}, got {dtype!r}")
    if dtype == "float64":
        enable_x64()
    tm = copy.deepcopy(torch_model).to({"float32": torch.float32, "float64": torch.float64}[dtype]).train(mode == "train")
    getattr(flax_model, mode)()
    x = np.asarray(x, dtype=dtype)
    pair = Pair(tm, flax_model, x, jnp.asarray(flax_input(x) if flax_input else x), dtype,
                DEFAULT_TOL[dtype] if tol is None else tol, names, rules)
    with parity_numerics("highest"):
        notes = transfer(tm, flax_model, names, rules)
        start = state_dict(flax_model, rules)
        forward, forward_notes, out_shapes = forward_stage(pair)
        buffers = buffer_stage(pair)
        grads, grads_j = grad_stage(pair, out_shapes, target)
        steps = step_stage(pair, start, grads_j, optimizer or OptimizerConfig("sgd", lr=0.1))
    entries = forward + buffers + grads + steps
    return Report(dtype, mode, entries, first_divergence(entries), notes + forward_notes)
