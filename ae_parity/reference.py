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
The ReLU inputs of a float32 run come from :func:`record_relu_inputs` (torch: forward hooks) and
``ae_jax.train.loss_grad_and_relu_inputs`` (JAX: returned by the same compiled computation as the
gradients).
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


def _relus(model):
    import torch

    return [m for m in model.modules() if isinstance(m, torch.nn.ReLU)]


@contextlib.contextmanager
def record_relu_inputs(model):
    """Yield a list that receives the input of every ``nn.ReLU`` call of ``model`` (numpy, call order)."""
    seen: list[np.ndarray] = []
    hooks = [m.register_forward_pre_hook(lambda _m, args: seen.append(args[0].detach().cpu().numpy().copy()))
             for m in _relus(model)]
    try:
        yield seen
    finally:
        for h in hooks:
            h.remove()


@dataclass
class Kinks:
    """What :func:`follow_kinks` did: ReLU calls made, elements near the kink, and how many of those the
    float32 run put on the other side of 0 than float64 (the reference followed it there)."""

    calls: int = 0
    near: int = 0
    flipped: int = 0
    # the largest |float32 - float64| ReLU input, in float32 ulps of that input's scale (max |float64|)
    max_ulps: float = 0.0


@contextlib.contextmanager
def follow_kinks(model, sides: list[np.ndarray], ulps: float = KINK_ULPS):
    """Within the block, ``model``'s ``nn.ReLU`` calls (a float64 reference) follow ``sides`` -- a float32
    run's ReLU inputs in call order -- where their own input is within ``ulps`` of the kink (see the
    module docstring): output ``x * mask`` with the float32 run's mask there, the float64 one elsewhere,
    so the gradient follows too. Yields a :class:`Kinks`; raises if the call sequence differs."""
    import torch

    eps = float(np.finfo(np.float32).eps)
    kinks = Kinks()

    def hook(_module, args, _output):
        x = args[0]
        if kinks.calls >= len(sides):
            raise RuntimeError(f"the reference calls ReLU more often than the float32 run ({len(sides)})")
        side = sides[kinks.calls]
        kinks.calls += 1
        if tuple(side.shape) != tuple(x.shape):
            raise RuntimeError(f"ReLU call {kinks.calls}: float32 input {side.shape}, reference {tuple(x.shape)}")
        x64 = x.detach().cpu().numpy()
        scale = float(np.max(np.abs(x64), initial=0.0))
        near = np.abs(x64) <= ulps * eps * scale
        if scale > 0:
            kinks.max_ulps = max(kinks.max_ulps, float(np.max(np.abs(side - x64))) / (eps * scale))
        mask = np.where(near, side > 0, x64 > 0)
        kinks.near += int(near.sum())
        kinks.flipped += int((near & ((side > 0) != (x64 > 0))).sum())
        return x * torch.from_numpy(mask.astype(x64.dtype))

    hooks = [m.register_forward_hook(hook) for m in _relus(model)]
    try:
        yield kinks
    finally:
        for h in hooks:
            h.remove()
    if kinks.calls != len(sides):
        raise RuntimeError(f"the reference called ReLU {kinks.calls} times, the float32 run {len(sides)}")
