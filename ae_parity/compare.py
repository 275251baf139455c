"""Where does a Flax port diverge from its PyTorch original? Value by value, gradient by gradient.

:func:`compare` takes any torch module and any NNX module whose trees mirror each other (user-written,
nested, not only presets), moves the torch weights across with the project's rule table
(``ae_jax.convert.RULES``, plus ``rules`` for the user's own NNX classes, passed down, never written into
the table), and reports, in this order (``stages.py``):

1. ``dtype``: flax parameters or statistics whose dtype is not the comparison's (a plain
   ``nnx.Linear(...)`` in a float64 run) -- named with the fix, before any layer is blamed;
2. ``random``: the torch forward gives other values under another seed (it samples): named at the
   first op or module that differs, with how to supply the noise;
3. ``forward``: every compared value in execution order (``forward.py``): each call of each module that
   exists at the same path on both sides (``pool``, ``pool#2``), the functional code between them (traced
   with torch.fx: ``interpolate``, ``leaky_relu``, ``exp``...; ``trace.py``), the model's output arrays
   (``<output>``, ``<output>[0]``, ``<output>['mu']``); flax arrays moved from channels-last where their
   module's type says so (``nnx_record.py``), never guessed from shapes;
4. ``buffer`` (BatchNorm running statistics after the forward), ``grad`` (every parameter's gradient of
   an MSE loss on the first output array) and ``step`` (one optimizer step);

and the FIRST row past its tolerance, with a hint from the module's or op's own arguments (``hints.py``).

Relative differences are max|jax - torch| / max|torch| of the tensor. float64 rows pass at 1e-10
relative (far above rounding, far below any real porting bug, >= 1e-6). float32 rows are judged like the
parity tables, against a float64 reference (the same torch model and float32 weights, upcast; same input):
JAX passes when its error against the reference is at most ``REFERENCE_K`` times torch's own float32
error plus ``REFERENCE_FLOOR_ULPS`` ulps (``ae_parity.verdict``). Gradients and steps: each run against a
reference that follows its own ReLU kinks (``ae_parity.reference``; the NNX port's ReLU inputs come from
the same compiled computation as its gradients), torch's error the largest over the batch's orders.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Callable, Mapping

import numpy as np

from ae_core.optim import OptimizerConfig

from .hints import hints
from .stages import (
    Entry,
    Pair,
    buffer_stage,
    cast_inputs,
    dtype_stage,
    forward_stage,
    grad_stage,
    random_stage,
    rename,
    step_stage,
)
from .reference import REFERENCE_ORDERS, kink_notes
from .verdict import REFERENCE_FLOOR_ULPS, REFERENCE_K

# float64: every row; float32: only rows with no float64 reference (integer buffers, compared exactly anyway)
DEFAULT_TOL = {"float32": 1e-5, "float64": 1e-10}
LAYOUTS = ("nchw", "nhwc")

__all__ = ["DEFAULT_TOL", "Divergence", "Entry", "PortMismatchError", "Report", "compare", "first_divergence",
           "hints", "transfer"]


class PortMismatchError(ValueError):
    """The two module trees do not mirror each other: lists what is only on each side (and hints)."""

    def __init__(self, only_torch: list[str], only_flax: list[str], other: list[str], hints: list[str] = ()):
        self.only_torch, self.only_flax, self.other, self.hints = only_torch, only_flax, other, list(hints)
        lines = [f"  only in torch: {n}" for n in only_torch] + [f"  only in flax:  {n}" for n in only_flax]
        lines += [f"  {p}" for p in other]
        super().__init__("the torch and flax models do not mirror each other "
                         f"({len(lines)} problem(s)):\n" + "\n".join(lines + [f"hint: {h}" for h in self.hints]))


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
        ref = any(e.kind == "ref" for e in self.entries)
        head = (f"{'#':>3} {'stage':<7} {'name':<28} {'torch':<16} {'flax':<16} {'shape':<14} {'max abs':>9} "
                f"{'max rel':>9}" + (f" {'jax err':>9} {'torch err':>9}" if ref else "") + "  ok")
        lines = [f"dtype {self.dtype}, {self.mode} mode; relative = max|jax - torch| / max|torch|", head, "-" * len(head)]
        for i, e in enumerate(self.entries):
            shape = "x".join(map(str, e.shape)) or "scalar"
            errs = (f" {e.jax_err:>9.2e} {e.torch_err:>9.2e}" if e.kind == "ref" else " " * 20) if ref else ""
            lines.append(f"{i:>3} {e.stage:<7} {e.name:<28.28} {e.torch_type:<16.16} {e.flax_type:<16.16} "
                         f"{shape:<14.14} {e.max_abs:>9.2e} {e.max_rel:>9.2e}{errs}  {'yes' if e.ok else 'NO'}"
                         + (f"  ({e.note})" if e.note else ""))
        lines += [f"note: {n}" for n in self.notes]
        if self.first is None:
            lines.append("no divergence: every dtype, layer output, buffer, gradient and stepped parameter agrees")
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


def first_divergence(entries: list[Entry]) -> Divergence | None:
    """The first entry past its tolerance, with its hint."""
    for e in entries:
        if not e.ok:
            return Divergence(e.stage, e.name, e.torch_type, e.max_rel, e.hint)
    return None


# --------------------------------------------------------------------------------- weights ----
def _mismatch_hints(torch_model, only_torch: list[str], only_flax: list[str]) -> list[str]:
    """Structural differences with a known cause: a BatchNorm's affine (weight / bias) on one side only."""
    modules = dict(torch_model.named_modules())
    out = []
    for side, names in (("flax", only_flax), ("torch", only_torch)):
        for n in names:
            module, _, leaf = n.split(" ")[0].rpartition(".")
            m = modules.get(module)
            if leaf in ("weight", "bias") and type(m).__name__.startswith("BatchNorm"):
                fix = ("use_scale=False, use_bias=False" if not m.affine else "use_scale=True, use_bias=True")
                out.append(f"{module}: torch {type(m).__name__}(affine={m.affine}) has "
                           f"{'no' if not m.affine else 'a'} weight and bias, the flax one "
                           f"{'has' if side == 'flax' else 'has not'}: nnx.BatchNorm(..., {fix})")
    return list(dict.fromkeys(out))


def transfer(torch_model, flax_model, names: Mapping[str, str] | None = None, rules: Mapping | None = None) -> list[str]:
    """Copy torch's state dict into the NNX model via the rule table (and ``rules`` for your own NNX
    classes); return notes. On any mismatch raise :class:`PortMismatchError` listing the unmatched names
    on each side (nothing is loaded)."""
    from ae_jax.convert import bindings
    from ae_jax.weights import load_state_dict

    torch_sd = {rename(k, names): v.detach().cpu().numpy() for k, v in torch_model.state_dict().items()}
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
        raise PortMismatchError(only_torch, only_flax, other, _mismatch_hints(torch_model, only_torch, only_flax))
    load_state_dict(flax_model, torch_sd, strict=True, rules=rules)
    return notes


def _layout(name: str | None, what: str) -> bool | None:
    if name is None:
        return None
    if name not in LAYOUTS:
        raise ValueError(f"{what} must be one of {LAYOUTS}, got {name!r}")
    return name == "nhwc"


def _input_channels_last(x: np.ndarray, flax_x, given: bool | None) -> bool:
    """Whether the NNX model takes channels-last images: as given, else read from the values ``flax_input``
    made (x with its channel axis moved last), never from shapes alone."""
    if given is not None:
        return given
    fx = np.asarray(flax_x)
    if x.ndim < 3 or fx.shape != np.moveaxis(x, 1, -1).shape or (fx.shape == x.shape and np.array_equal(fx, x)):
        return False
    return bool(np.array_equal(fx, np.moveaxis(x, 1, -1)))


# --------------------------------------------------------------------------------------- compare ----
def compare(torch_model, flax_model, x, *, target=None, dtype: str = "float64", mode: str = "eval",
            tol: float | None = None, names: Mapping[str, str] | None = None, rules: Mapping | None = None,
            optimizer: OptimizerConfig | None = None, flax_input: Callable | None = None,
            forward_kwargs: Mapping[str, np.ndarray] | None = None, flax_layout: str | None = None,
            flax_output_layout: str | None = None) -> Report:
    """Transfer weights torch -> flax, then check dtypes and randomness and compare every forward value,
    buffer, gradient and one step (see the module docstring).

    ``x``: one batch (numpy) in torch's layout; ``flax_input`` maps it to the NNX model's input (e.g.
    NCHW -> NHWC) when the NNX model does not take torch's layout. ``flax_layout`` ("nchw" / "nhwc"): the
    layout of the NNX model's image input (default: read from what ``flax_input`` made of ``x``);
    ``flax_output_layout``: that of its image outputs (default: as the modules that made them say, else
    the input's). ``forward_kwargs``: further forward arguments given to both models, e.g. the VAE noise
    ``{"eps": array}`` (same values, cast to ``dtype``). ``target``: the MSE target for the gradients
    (default: ``x`` when the first output array has its shape, else a fixed random array). ``mode``:
    "eval" or "train" (BatchNorm on batch statistics and running-statistic updates). ``tol``: a fixed
    relative tolerance for every row (default: 1e-10 in float64; in float32 the float64 reference). ``names``: torch-name prefix renames,
    ``rules``: conversion rules for your own NNX layer classes (``{cls: (ParamRule, ...)}``, see
    ae_jax.convert), used for this comparison only. The torch model is not changed. Runs at matmul
    precision "highest", TF32 off (``parity_numerics``).
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
    given_cl, output_cl = _layout(flax_layout, "flax_layout"), _layout(flax_output_layout, "flax_output_layout")
    torch_dtypes = sorted({str(p.dtype).replace("torch.", "") for p in torch_model.parameters()})
    tm = copy.deepcopy(torch_model).to({"float32": torch.float32, "float64": torch.float64}[dtype]).train(mode == "train")
    getattr(flax_model, mode)()
    x = np.asarray(x, dtype=dtype)
    flax_x = jnp.asarray(flax_input(x) if flax_input else x)
    pair = Pair(tm, flax_model, x, flax_x, dtype, DEFAULT_TOL[dtype] if tol is None else tol, names, rules,
                cast_inputs(forward_kwargs or {}, dtype), _input_channels_last(x, flax_x, given_cl), output_cl,
                use_reference=dtype == "float32" and tol is None)
    notes = [f"the torch model is {', '.join(torch_dtypes)}: compared as a {dtype} copy"] \
        if torch_dtypes and torch_dtypes != [dtype] else []
    with parity_numerics("highest"):
        notes += transfer(tm, flax_model, names, rules)
        start = state_dict(flax_model, rules)
        fresh = copy.deepcopy(tm)  # before any forward: for the randomness check
        if pair.use_reference:
            pair.reference = copy.deepcopy(tm).double()
            notes.append("float32: jax err / torch err = each side's error against a float64 reference (the same "
                         "weights upcast), relative to its scale; passes when jax err <= "
                         f"{REFERENCE_K:g} x torch err + {REFERENCE_FLOOR_ULPS} ulps (ae_parity.verdict); gradients "
                         f"and steps: each run's reference follows its own side of a ReLU kink within rounding of 0, "
                         f"torch's error the largest over {REFERENCE_ORDERS} batch orders")
        dtypes = dtype_stage(pair)
        forward, forward_notes, out, trace = forward_stage(pair)
        random = random_stage(pair, fresh, trace)
        buffers = buffer_stage(pair)
        grads, gradients = grad_stage(pair, out, target)
        steps = step_stage(pair, start, gradients, optimizer or OptimizerConfig("sgd", lr=0.1)) if gradients else []
    if gradients is None:
        notes.append("gradients and the step not compared: the first output arrays differ in shape")
    elif gradients.kinks:
        notes += kink_notes(*gradients.kinks)
    entries = dtypes + random + forward + buffers + grads + steps
    return Report(dtype, mode, entries, first_divergence(entries), notes + forward_notes)
