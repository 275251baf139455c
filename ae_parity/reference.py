"""The float64 reference of a float32 computation, and the ReLU kinks in it.

A float32 result is judged against float64 torch on the same float32 weights, inputs and noise
(upcast): the two computations then differ only in arithmetic precision. One thing float64 cannot
settle for a float32 run is a ReLU input within rounding of 0: float32 may land on the other side of
the kink than float64 did. Its forward value barely moves (ReLU is continuous), but its GRADIENT there
is 1 instead of 0 (or back), and behind a BatchNorm that one element shifts a whole channel's gradient
(measured: conv_bn, one element of 100,352 at x = -3.2e-7 moved the decoder BatchNorm's bias gradient by
7.3e-6, relative 1e-3 after the BatchNorm backward). Such a float32 gradient is exact for an input
within rounding of the true one: not a porting error, and which framework's rounding lands where is
chance (machine, threads, batch order).

So each float32 run is judged against its OWN reference: float64 everywhere, except that where the
float64 ReLU input lies within ``KINK_ULPS`` float32 ulps of that tensor's scale of 0 the reference
takes the side of the kink the float32 run took (:func:`follow_kinks`). Elsewhere the float64 side
stands, so a port that moves pre-activations further than rounding is judged against the true kinks.
The ReLU inputs of a float32 run come from :func:`record_relu_inputs` (torch: every ReLU-family call,
modules and functional code alike, through a TorchFunctionMode) and, for JAX, from the same compiled
computation as the gradients: ``ae_jax.train.loss_grad_and_relu_inputs`` for ae_jax models,
:func:`jax_grad_and_relu_inputs` for any JAX code (a user's NNX port, paired with torch's calls by
:func:`pair_sides`).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import numpy as np

# Where |float64 ReLU input| <= KINK_ULPS * eps32 * max|that input|, the reference follows the float32
# run's side of the kink. From measurement (docs/porting.md, "float32 verdicts"): the float32 ReLU inputs
# of every preset lie within 20 ulps of the tensor's scale of float64 (JAX and torch alike; the largest
# measured, conv_bn in train mode at batch 16), so no element further from 0 than 64 ulps can change
# sides by rounding; every flip measured was within 4 ulps.
KINK_ULPS = 64
# The seeded batch orders in which torch's float32 error is also measured (see ae_parity.parity).
REFERENCE_ORDERS = 4


def batch_orders(n: int) -> list[np.ndarray]:
    """The ``REFERENCE_ORDERS - 1`` other orders of a batch of ``n`` in which torch's float32 error is
    also measured (seeded: the same verdict every run)."""
    rng = np.random.default_rng(0x0DE5)
    return [rng.permutation(n) for _ in range(REFERENCE_ORDERS - 1)]


def unpermute(values: np.ndarray, order: np.ndarray) -> np.ndarray:
    """Per-example ``values`` computed on ``batch[order]``, back in the batch's order."""
    out = np.empty_like(values)
    out[order] = values
    return out


def float64_reference(spec, state: dict[str, np.ndarray]):
    """A float64 torch model holding exactly ``state`` (float32 weights, upcast): the reference of a
    float32 computation differs from it only in arithmetic precision."""
    import ae_torch
    from ae_torch.weights import load_state_dict

    ref = ae_torch.build(spec, dtype="float64")
    load_state_dict(ref, {k: (v.astype(np.float64) if v.dtype.kind == "f" else v) for k, v in state.items()})
    return ref


def _relu_family() -> dict:
    """The torch callables with a kink at 0 whose side a float32 run may round to differently than float64:
    ``{callable: (argument names, in place)}``. ``nn.ReLU`` and ``nn.LeakyReLU`` call ``F.relu`` /
    ``F.leaky_relu``, so modules and functional code are seen alike."""
    import torch
    import torch.nn.functional as F

    relu, leaky = ("input", "inplace"), ("input", "negative_slope", "inplace")
    return {F.relu: (relu, False), torch.relu: (relu, False), torch.Tensor.relu: (relu, False),
            torch.relu_: (relu, True), torch.Tensor.relu_: (relu, True),
            F.leaky_relu: (leaky, False), F.leaky_relu_: (leaky, True)}


def _relu_call(family: dict, func, args, kwargs):
    """(input, negative slope, in place) of a ReLU-family call."""
    names, inplace = family[func]
    bound = {**dict(zip(names, args)), **kwargs}
    slope = bound.get("negative_slope", 0.01) if "negative_slope" in names else 0.0
    return bound["input"], float(slope), bool(bound.get("inplace", False) or inplace)


def _relu_mode(on_call):
    """A TorchFunctionMode calling ``on_call(func, args, kwargs, input, slope, inplace)`` for every
    ReLU-family call (:func:`_relu_family`) made inside it, and passing every other call through."""
    from torch.overrides import TorchFunctionMode

    family = _relu_family()

    class ReluMode(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            if func in family:
                return on_call(func, args, kwargs, *_relu_call(family, func, args, kwargs))
            return func(*args, **kwargs)

    return ReluMode()


@contextlib.contextmanager
def record_relu_inputs():
    """Yield a list that receives the input of every ReLU-family call made in the block (``nn.ReLU``,
    ``F.relu``, ``torch.relu``, ``x.relu()``, ``nn.LeakyReLU``, ``F.leaky_relu``, in-place variants;
    numpy, call order)."""
    seen: list[np.ndarray] = []

    def on_call(func, args, kwargs, x, _slope, _inplace):
        seen.append(x.detach().cpu().numpy().copy())
        return func(*args, **kwargs)

    with _relu_mode(on_call):
        yield seen


@dataclass
class Kinks:
    """What :func:`follow_kinks` did: ReLU calls made, elements near the kink, and how many of those the
    float32 run put on the other side of 0 than float64 (the reference followed it there)."""

    calls: int = 0
    near: int = 0
    flipped: int = 0
    # the largest |float32 - float64| ReLU input, in float32 ulps of that input's scale (max |float64|)
    max_ulps: float = 0.0
    unpaired: int = 0  # calls without the float32 run's side (None in ``sides``): float64's side stands


def kink_notes(jax_kinks: Kinks, torch_kinks: Kinks) -> list[str]:
    """Where the references followed a float32 run across a ReLU kink, and ReLU calls whose float32 side
    was not known (none when neither happened)."""
    out = []
    if jax_kinks.flipped or torch_kinks.flipped:
        out.append(f"ReLU inputs within {KINK_ULPS} ulps of 0 on the other side of the kink than float64 (each "
                   f"run's reference follows it there): JAX {jax_kinks.flipped}, torch {torch_kinks.flipped} "
                   f"of {jax_kinks.near} near the kink")
    if jax_kinks.unpaired:
        out.append(f"{jax_kinks.unpaired} of {jax_kinks.calls} torch ReLU calls have no recorded partner on the "
                   f"JAX side (a ReLU the port computes otherwise, or in another layout): JAX's reference keeps "
                   f"float64's side of their kinks")
    return out


@contextlib.contextmanager
def follow_kinks(sides: list, ulps: float = KINK_ULPS):
    """Within the block, the ReLU-family calls (:func:`record_relu_inputs`) of a float64 reference follow
    ``sides`` -- a float32 run's inputs to the same calls, in call order -- where their own input is within
    ``ulps`` of the kink (see the module docstring): output ``x * factor`` with the float32 run's side
    there (factor 1 or the negative slope), the float64 side elsewhere, so the gradient follows too. A
    ``None`` side (a call the float32 run's recording could not pair, see :func:`pair_sides`) keeps the
    float64 side. Yields a :class:`Kinks`; raises if the call sequence differs."""
    import torch

    eps = float(np.finfo(np.float32).eps)
    kinks = Kinks()

    def on_call(_func, _args, _kwargs, x, slope, inplace):
        if kinks.calls >= len(sides):
            raise RuntimeError(f"the reference calls ReLU more often than the float32 run ({len(sides)})")
        side = sides[kinks.calls]
        kinks.calls += 1
        x64 = x.detach().cpu().numpy()
        if side is None:
            kinks.unpaired += 1
            side = x64
        if tuple(side.shape) != tuple(x.shape):
            raise RuntimeError(f"ReLU call {kinks.calls}: float32 input {side.shape}, reference {tuple(x.shape)}")
        scale = float(np.max(np.abs(x64), initial=0.0))
        near = np.abs(x64) <= ulps * eps * scale
        if scale > 0:
            kinks.max_ulps = max(kinks.max_ulps, float(np.max(np.abs(side - x64))) / (eps * scale))
        mask = np.where(near, side > 0, x64 > 0)
        kinks.near += int(near.sum())
        kinks.flipped += int((near & ((side > 0) != (x64 > 0))).sum())
        factor = torch.from_numpy(np.where(mask, 1.0, slope).astype(x64.dtype))
        return x.mul_(factor) if inplace else x * factor

    with _relu_mode(on_call):
        yield kinks
    if kinks.calls != len(sides):
        raise RuntimeError(f"the reference called ReLU {kinks.calls} times, the float32 run {len(sides)}")


# --------------------------------------------------------------------- an arbitrary NNX port ----
# ReLU-family operations in a jaxpr: jax.nn.relu / nnx.relu (a custom_jvp call of a jit named "relu"),
# jax.nn.leaky_relu / nnx.leaky_relu (a jit named "leaky_relu"), jnp.maximum(x, 0) written by hand (a ``max``
# with a literal 0).
_JAX_CALLS = ("jit", "pjit")
_JAX_INLINED = _JAX_CALLS + ("closed_call",)  # calls whose bodies are interpreted, to see the ReLUs inside


def _is_zero(atom) -> bool:
    from jax.extend.core import Literal

    return isinstance(atom, Literal) and np.ndim(atom.val) == 0 and atom.val == 0


def _relu_input(eqn) -> int | None:
    """The position of the ReLU input among ``eqn``'s inputs if it is a ReLU-family operation, else None."""
    name, params = eqn.primitive.name, eqn.params
    if name == "custom_jvp_call":
        body = params["call_jaxpr"].jaxpr.eqns
        if len(body) == 1 and (body[0].primitive.name in _JAX_CALLS and body[0].params.get("name") == "relu"
                               or _relu_input(body[0]) is not None):
            return params.get("num_consts", 0)
    elif name in _JAX_CALLS and params.get("name") == "leaky_relu":
        return 0
    elif name == "max" and len(eqn.invars) == 2:
        zero = [_is_zero(v) for v in eqn.invars]
        if any(zero):
            return zero.index(False) if not all(zero) else None
    return None


def _interpret(jaxpr, consts, args, seen: list) -> list:
    """Evaluate ``jaxpr`` (like ``jax.core.eval_jaxpr``), appending the input of every ReLU-family operation
    to ``seen``; jit calls are inlined so that the ReLUs inside them are seen (under an outer ``jax.jit``
    this is the same program)."""
    from jax.extend.core import Literal

    env = dict(zip(jaxpr.constvars, consts)) | dict(zip(jaxpr.invars, args))

    def read(v):
        return v.val if isinstance(v, Literal) else env[v]

    for eqn in jaxpr.eqns:
        name, params, ins = eqn.primitive.name, eqn.params, [read(v) for v in eqn.invars]
        at = _relu_input(eqn)
        if at is not None:
            seen.append(ins[at])
        if name in _JAX_INLINED and at is None:
            inner = params["jaxpr"] if "jaxpr" in params else params["call_jaxpr"]
            outs = _interpret(inner.jaxpr, inner.consts, ins, seen)
        else:
            with eqn.ctx.manager:
                outs = eqn.primitive.bind(*ins, **eqn.primitive.get_bind_params(params))
            outs = outs if eqn.primitive.multiple_results else [outs]
        env.update(zip(eqn.outvars, outs))
    return [read(v) for v in jaxpr.outvars]


def jax_grad_and_relu_inputs(loss_fn, params) -> tuple[object, list[np.ndarray]]:
    """``jax.grad(loss_fn)(params)`` for a scalar loss of any JAX code (a user's NNX port), and the inputs
    of its forward's ReLU-family operations (``jax.nn.relu`` / ``nnx.relu``, ``jax.nn.leaky_relu``,
    ``jnp.maximum(x, 0)``), in execution order and the port's own layout: both from ONE compiled
    computation (the loss's jaxpr interpreted under ``jax.jit(jax.grad(..., has_aux=True))``), so the
    recorded inputs are those the gradient saw. Other ``max(x, 0)`` (e.g. a variance clamped at 0) are
    recorded too: :func:`pair_sides` skips what pairs with no torch ReLU call."""
    import jax

    closed = jax.make_jaxpr(loss_fn)(params)

    def with_inputs(p):
        seen: list = []
        out = _interpret(closed.jaxpr, closed.consts, jax.tree.leaves(p), seen)
        return out[0], seen

    grads, seen = jax.jit(jax.grad(with_inputs, has_aux=True))(params)
    return grads, [np.asarray(s) for s in seen]


# The largest relative difference (to the torch value's scale) at which a recorded JAX ReLU input is taken
# for a torch call's: far above float32 rounding (the inputs measured are within 13.2 ulps), far below
# what another tensor of the same shape (or the same tensor in the other layout) differs by.
PAIR_REL = 1e-3


def pair_sides(torch_sides: list[np.ndarray], jax_sides: list[np.ndarray]) -> list[np.ndarray | None]:
    """The JAX run's ReLU inputs for each torch ReLU call, in torch's layout: in order, each torch call
    takes the next recorded JAX input that holds the same values (to :data:`PAIR_REL`) as it is or with
    its last axis moved to axis 1 (a channels-last port) -- the layout decided by the values, not the
    shape, so C == H == W is no guess; JAX inputs that pair with no torch call are skipped (a clamp at
    0 in a BatchNorm); a torch call with no partner gets ``None`` (its reference keeps float64's side)."""
    out: list[np.ndarray | None] = []
    cursor = 0
    for t in torch_sides:
        t64 = np.asarray(t, np.float64)
        scale = float(np.max(np.abs(t64), initial=0.0)) or 1.0
        found = None
        for j in range(cursor, len(jax_sides)):
            a = jax_sides[j]
            layouts = [a] + ([np.moveaxis(a, -1, 1)] if a.ndim >= 3 else [])
            fits = [(float(np.max(np.abs(c - t64), initial=0.0)) / scale, k) for k, c in enumerate(layouts)
                    if c.shape == t.shape]
            if fits and min(fits)[0] <= PAIR_REL:
                found, cursor = layouts[min(fits)[1]], j + 1
                break
        out.append(found)
    return out
