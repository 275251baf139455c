"""Where does a Flax port diverge from its PyTorch original? Layer by layer, gradient by gradient.

:func:`compare` takes any torch module and any NNX module whose trees mirror each other (user-written,
nested, not only presets), moves the torch weights across with the project's rule table
(``ae_jax.convert.RULES``), runs both on one batch while capturing every layer's output (torch forward
hooks; on the NNX side every submodule's ``__call__`` is wrapped for the duration of the run), and
reports in execution order: shapes, max abs / relative difference, and the FIRST layer past the
tolerance with a hint from the known pitfalls (docs/porting.md). Then the buffers after the forward
(BatchNorm running statistics), every parameter's gradient of an MSE loss, and one optimizer step.

Relative differences are max|jax - torch| / max|torch| of the tensor. The default tolerances sit far
above rounding (float64 1e-10, float32 1e-5) and far below any real porting bug (>= 1e-6 in float64).
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Mapping

import numpy as np

from ae_core.optim import OptimizerConfig

from .parity import diff, module_scales

DEFAULT_TOL = {"float32": 1e-5, "float64": 1e-10}

# torch module type -> what usually goes wrong there (numbers refer to docs/porting.md)
HINTS = {
    "Linear": "Linear: the Flax kernel is (in, out) = torch weight.T (pitfall 1)",
    "Conv2d": "Conv2d: pass explicit padding ((p, p), (p, p)), never 'SAME' (asymmetric at stride 2), and the "
              "kernel as weight.transpose(2, 3, 1, 0) (pitfall 2)",
    "ConvTranspose2d": "ConvTranspose2d: check the kernel flip (transpose_kernel=True) and the padding "
                       "(k - 1 - p, k - 1 - p + output_padding) (pitfall 4)",
    "Flatten": "Flatten after convolutions: transpose NHWC -> NCHW before reshaping, or the next Linear's "
               "weights meet the features in another order (pitfall 3)",
    "Unflatten": "Unflatten: reshape to NCHW first, then transpose to NHWC (pitfall 3)",
    "BatchNorm1d": "BatchNorm in training mode: Flax momentum = 1 - torch momentum, torch's running_var is the "
                   "UNBIASED variance, eps; eval() <-> use_running_average=True (pitfall 5)",
    "LayerNorm": "LayerNorm: epsilon differs, torch 1e-5 vs Flax 1e-6 (pitfall 6)",
    "GELU": "GELU: torch's nn.GELU is the exact erf form; jax.nn.gelu defaults to approximate=True (pitfall 7)",
    "LSTM": "LSTM: gate order i, f, g, o, and torch's TWO biases b_ih + b_hh (Flax cells have one) (pitfall 9)",
    "Dropout": "Dropout: compare in eval mode, or give both sides the same masks (pitfall 14)",
}
HINTS["BatchNorm2d"] = HINTS["BatchNorm1d"]


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
             "entries": [{**asdict(e), "ok": e.ok} for e in self.entries]}
        return json.dumps(d, indent=1)


# --------------------------------------------------------------------------------- weights ----
@contextlib.contextmanager
def extra_rules(rules: Mapping | None):
    """Temporarily add conversion rules for user NNX layer classes to ``ae_jax.convert.RULES``."""
    from ae_jax import convert

    saved = dict(convert.RULES)
    convert.RULES.update(rules or {})
    try:
        yield
    finally:
        convert.RULES.clear()
        convert.RULES.update(saved)


def _rename(name: str, names: Mapping[str, str] | None) -> str:
    for src, dst in (names or {}).items():  # prefix renames, torch -> flax side's canonical names
        if name == src or name.startswith(src + "."):
            return dst + name[len(src):]
    return name


def transfer(torch_model, flax_model, names: Mapping[str, str] | None = None) -> list[str]:
    """Copy torch's state dict into the NNX model via the rule table; return notes. On any mismatch
    raise :class:`PortMismatchError` listing the unmatched names on each side (nothing is loaded)."""
    from ae_jax import convert

    torch_sd = {_rename(k, names): v.detach().cpu().numpy() for k, v in torch_model.state_dict().items()}
    binds = convert.bindings(flax_model)
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
    convert.load_state_dict(flax_model, torch_sd, strict=True)
    return notes


# ------------------------------------------------------------------------------------- capture ----
def _first_array(out):
    if isinstance(out, (tuple, list)):
        return _first_array(out[0]) if out else None
    if isinstance(out, dict):
        return _first_array(next(iter(out.values()))) if out else None
    return out


def _torch_outputs(model, x) -> tuple[Any, list[tuple[str, str, np.ndarray]]]:
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


def _flax_outputs(model, x) -> tuple[Any, dict[str, tuple[str, np.ndarray]]]:
    """Run the NNX model eagerly with every submodule's ``__call__`` wrapped to record its output."""
    from flax import nnx

    from ae_jax.convert import _torch_path

    paths = {id(m): ".".join(_torch_path(model, p)) for p, m in nnx.iter_modules(model) if p}
    records: dict[str, tuple[str, np.ndarray]] = {}
    active: set[int] = set()
    patched = {}
    for cls in {type(m) for _, m in nnx.iter_modules(model)}:
        if "__call__" not in dir(cls):  # instances that cannot be called produce no outputs
            continue
        original = cls.__call__

        def wrapper(self, *args, __original=original, **kwargs):
            key = id(self)
            if key in active or key not in paths:
                return __original(self, *args, **kwargs)
            active.add(key)
            try:
                out = __original(self, *args, **kwargs)
            finally:
                active.discard(key)
            arr = _first_array(out)
            if arr is not None:
                records[paths[key]] = (type(self).__name__, np.asarray(arr))
            return out

        patched[cls] = vars(cls).get("__call__")
        cls.__call__ = wrapper
    try:
        out = model(x)
    finally:
        for cls, original in patched.items():
            if original is None:
                del cls.__call__
            else:
                cls.__call__ = original
    return out, records


def _align(flax_value: np.ndarray, torch_shape: tuple[int, ...]) -> tuple[np.ndarray, str]:
    """The flax value in torch's layout: NHWC activations are compared as NCHW."""
    if flax_value.shape == torch_shape:
        return flax_value, ""
    if flax_value.ndim == 4 and flax_value.transpose(0, 3, 1, 2).shape == torch_shape:
        return flax_value.transpose(0, 3, 1, 2), "NHWC"
    return flax_value, "shape differs"


def _hint(types: list[str]) -> str:
    hints = [HINTS[t] for t in dict.fromkeys(reversed(types)) if t in HINTS]
    return " | ".join(hints) if hints else "no known pitfall for these layer types: check the layer's own code"


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
    NNX layer classes (``{cls: (ParamRule, ...)}``, see ae_jax.convert). The torch model is not changed.
    """
    import copy

    import jax
    import jax.numpy as jnp
    import optax
    import torch
    from flax import nnx

    from ae_jax import convert
    from ae_jax.optim import make_optimizer as make_optax
    from ae_torch.optim import make_optimizer as make_torch_opt

    from ae_jax.numerics import enable_x64

    from .parity import parity_numerics

    if mode not in ("eval", "train"):
        raise ValueError(f"mode must be 'eval' or 'train', got {mode!r}")
    if dtype not in DEFAULT_TOL:
        raise ValueError(f"dtype must be one of {sorted(DEFAULT_TOL)}, got {dtype!r}")
    if dtype == "float64":
        enable_x64()
    tol = DEFAULT_TOL[dtype] if tol is None else tol
    tdtype = {"float32": torch.float32, "float64": torch.float64}[dtype]
    tm = copy.deepcopy(torch_model).to(tdtype).train(mode == "train")
    getattr(flax_model, mode)()
    x = np.asarray(x, dtype=dtype)
    fx = jnp.asarray(flax_input(x) if flax_input else x)
    with extra_rules(rules), parity_numerics("highest"):
        notes = transfer(tm, flax_model, names)
        p0 = convert.state_dict(flax_model)
        flax_types = {".".join(convert._torch_path(flax_model, p)): type(m).__name__
                      for p, m in nnx.iter_modules(flax_model) if p}
        torch_modules = dict(tm.named_modules())

        def torch_type(module: str) -> str:
            return type(torch_modules[module]).__name__ if module in torch_modules else "?"
        entries: list[Entry] = []
        first: Divergence | None = None

        def add(stage, name, ttype, ftype, jv, tv, note="", scale=None):
            nonlocal first
            aligned, layout = _align(np.asarray(jv), tuple(np.shape(tv)))
            if layout == "shape differs":
                e = Entry(stage, name, ttype, ftype, tuple(np.shape(tv)), float("inf"), float("inf"), tol,
                          f"flax shape {tuple(np.shape(jv))}")
            else:
                max_abs, max_rel = diff(aligned, tv, scale)
                e = Entry(stage, name, ttype, ftype, tuple(np.shape(tv)), max_abs, max_rel, tol,
                          "; ".join(n for n in (note, layout and f"flax {layout}") if n))
            entries.append(e)
            return e

        # 1. forward, layer by layer in torch's execution order
        with torch.no_grad():
            out_t, t_records = _torch_outputs(tm, torch.from_numpy(x))
        out_j, j_records = _flax_outputs(flax_model, fx)
        since_ok: list[str] = []
        for name, ttype, tv in t_records:
            since_ok.append(ttype)
            if name not in j_records:
                continue  # e.g. a parameter-free torch module that is a plain function on the flax side
            ftype, jv = j_records[name]
            e = add("forward", name, ttype, ftype, jv, tv)
            if e.ok:
                since_ok = []
            elif first is None:
                first = Divergence("forward", name, ttype, e.max_rel, _hint(since_ok))
        uncaptured = [name for name, _, _ in t_records if name not in j_records]
        if uncaptured:
            notes.append("torch modules with no flax module at the same path (not compared on their own): "
                         + ", ".join(uncaptured))
        e = add("forward", "<output>", type(tm).__name__, type(flax_model).__name__, np.asarray(out_j),
                _first_array(out_t).detach().numpy())
        if not e.ok and first is None:
            first = Divergence("forward", "<output>", type(tm).__name__, e.max_rel, _hint(since_ok))

        # 2. buffers after the forward (train mode: running statistics were updated on both sides)
        flax_sd = convert.state_dict(flax_model)
        for name, buf in tm.named_buffers():
            name = _rename(name, names)
            if name in flax_sd:
                module = name.rsplit(".", 1)[0]
                ttype = torch_type(module)
                e = add("buffer", name, ttype, flax_types.get(module, "?"), flax_sd[name], buf.numpy())
                if not e.ok and first is None:
                    first = Divergence("buffer", name, ttype, e.max_rel, _hint([ttype]))

        # 3. gradients of MSE(output, target)
        out_np = _first_array(out_t).detach().numpy()
        if target is None:
            target = x if out_np.shape == x.shape else np.random.default_rng(0).uniform(size=out_np.shape)
        target = np.asarray(target, dtype=dtype)
        tm.zero_grad(set_to_none=True)
        torch.nn.functional.mse_loss(_first_array(tm(torch.from_numpy(x))), torch.from_numpy(target)).backward()
        graphdef, params, rest = nnx.split(nnx.clone(flax_model), nnx.Param, ...)
        out_j_shape = np.shape(np.asarray(out_j))
        if out_j_shape != target.shape and target.ndim == 4 and target.transpose(0, 2, 3, 1).shape == out_j_shape:
            ftarget = jnp.asarray(target.transpose(0, 2, 3, 1))  # the flax model answers channels-last
        else:
            ftarget = jnp.asarray(target)

        def loss_fn(p, r):
            out = _first_array(nnx.merge(graphdef, p, r, copy=True)(fx))
            return jnp.mean(jnp.square(out - ftarget))

        grads_state = jax.grad(loss_fn)(params, rest)
        grads_j = convert.to_torch_layout(flax_model, grads_state)
        scale = module_scales({tname: p.grad.numpy() for tname, p in tm.named_parameters()})
        for tname, p in tm.named_parameters():
            name = _rename(tname, names)
            module = tname.rsplit(".", 1)[0]
            ttype = torch_type(module)
            e = add("grad", name, ttype, flax_types.get(name.rsplit(".", 1)[0], "?"), grads_j[name],
                    p.grad.numpy(), scale=scale[module])
            if not e.ok and first is None:
                first = Divergence("grad", name, ttype, e.max_rel, _hint([ttype]))

        # 4. one optimizer step on those gradients
        optimizer = optimizer or OptimizerConfig("sgd", lr=0.1)
        make_torch_opt(tm, optimizer).step()
        tx = make_optax(optimizer)
        start = convert.from_torch_layout(flax_model, {k: p0[k] for k in grads_j})
        grads_state = convert.from_torch_layout(flax_model, grads_j)
        updates, _ = tx.update(grads_state, tx.init(start), start)
        stepped_sd = convert.to_torch_layout(flax_model, optax.apply_updates(start, updates))
        for tname, p in tm.named_parameters():
            name = _rename(tname, names)
            ttype = torch_type(tname.rsplit(".", 1)[0])
            e = add("step", name, ttype, flax_types.get(name.rsplit(".", 1)[0], "?"), stepped_sd[name],
                    p.detach().numpy())
            if not e.ok and first is None:
                first = Divergence("step", name, ttype, e.max_rel,
                                   f"the gradients agree but the step does not: check the optimizer mapping "
                                   f"({optimizer.name}; pitfall 10)")
    return Report(dtype, mode, entries, first, notes)

