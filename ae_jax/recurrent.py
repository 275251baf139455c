"""torch's ``nn.LSTM`` and ``nn.GRU`` as NNX modules: torch's gate orders, both of torch's biases, torch's
arithmetic order, ``batch_first`` either way, stacked layers, an optional initial state.

Kernels are stored (in, G*H) like ``nnx.Linear``'s (torch's weight transposed); BOTH torch biases are
kept (``bias_ih``, ``bias_hh``), so conversion is exact both ways and each bias gets its own gradient --
Flax's cells keep one bias per gate, which can take the sum but never give the two back. Layer 0's
variables are ``kernel_ih``, ``kernel_hh``, ``bias_ih``, ``bias_hh`` (the LSTM preset's names); layer
``l`` > 0 adds ``_l<l>``. Every step's input projection is computed at once, then each step adds
``h W_hh^T + b_hh`` as torch's CPU cell does.
"""

from __future__ import annotations

import functools
from typing import Callable

import jax
import jax.numpy as jnp
from flax import nnx

from ae_core.layers.recurrent import MAX_LAYERS

from .convert import TRANSPOSE, ParamRule
from .modules import torch_uniform


def suffix(layer: int) -> str:
    return "" if layer == 0 else f"_l{layer}"


def recurrent_rules(gates: str) -> tuple[ParamRule, ...]:
    """The conversion rules of a recurrent module of up to MAX_LAYERS layers (absent ones are skipped)."""
    rules = []
    for l in range(MAX_LAYERS):
        s = suffix(l)
        rules += [ParamRule(f"kernel_ih{s}", f"weight_ih_l{l}", *TRANSPOSE, f"kernel_ih{s} = weight_ih_l{l}.T, {gates}"),
                  ParamRule(f"kernel_hh{s}", f"weight_hh_l{l}", *TRANSPOSE, f"kernel_hh{s} = weight_hh_l{l}.T, {gates}"),
                  ParamRule(f"bias_ih{s}", f"bias_ih_l{l}"), ParamRule(f"bias_hh{s}", f"bias_hh_l{l}")]
    return tuple(rules)


def _hidden(k_hh, b_hh, h):
    """``h W_hh^T + b_hh``: a step's hidden part."""
    return h @ k_hh if b_hh is None else h @ k_hh + b_hh


@functools.partial(jax.jit, static_argnums=0)
def _scan(step: Callable, carry, proj, k_hh, b_hh):
    """One layer over time: ``step(k_hh, b_hh, carry, x_proj)``. Jitted with the weights as arguments, so a
    layer run eagerly (``ae_parity.compare``) compiles once per shape, not at every call."""
    return jax.lax.scan(functools.partial(step, k_hh, b_hh), carry, proj)


class _Recurrent(nnx.Module):
    """What LSTM and GRU share: the parameters, the layers, the layouts; a subclass gives its step."""

    gates: int
    channels_last = False  # torch's layout in and out (ae_parity.nnx_record)

    def __init__(self, input_size: int, hidden_size: int, *, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = True, returns_state: bool = False, dtype, rngs: nnx.Rngs):
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.batch_first, self.returns_state = batch_first, returns_state
        init, g = torch_uniform(hidden_size), self.gates * hidden_size
        for l in range(num_layers):
            s = suffix(l)
            setattr(self, f"kernel_ih{s}", nnx.Param(init(rngs.params(), (input_size if l == 0 else hidden_size, g),
                                                          dtype)))
            setattr(self, f"kernel_hh{s}", nnx.Param(init(rngs.params(), (hidden_size, g), dtype)))
            setattr(self, f"bias_ih{s}", nnx.Param(init(rngs.params(), (g,), dtype)) if bias else None)
            setattr(self, f"bias_hh{s}", nnx.Param(init(rngs.params(), (g,), dtype)) if bias else None)

    def _get(self, name: str, layer: int):
        v = getattr(self, f"{name}{suffix(layer)}")
        return None if v is None else v.get_value()

    def __call__(self, x: jax.Array, hx=None):
        """torch's forward: ``x`` (N, steps, in) if batch_first else (steps, N, in), or unbatched (steps,
        in); ``hx`` the initial state (zeros if None). The output sequence, or torch's (output, state)."""
        unbatched = x.ndim == 2
        if unbatched:
            x = x[None] if self.batch_first else x[:, None]
        n = x.shape[0] if self.batch_first else x.shape[1]
        states = self.initial_state(hx, n, jnp.result_type(x, self._get("kernel_ih", 0)), unbatched)
        h, finals = x, []
        for l in range(self.num_layers):
            proj = h @ self._get("kernel_ih", l)
            b_ih = self._get("bias_ih", l)
            proj = proj if b_ih is None else proj + b_ih  # every step's input part at once
            if l == 0 and self.batch_first:
                proj = jnp.swapaxes(proj, 0, 1)  # time-major for the scan
            carry, h = _scan(self.step, states[l], proj, self._get("kernel_hh", l), self._get("bias_hh", l))
            finals.append(carry)
        out = jnp.swapaxes(h, 0, 1) if self.batch_first else h
        if unbatched:
            out = out[0] if self.batch_first else out[:, 0]
        return (out, self.final_state(finals, unbatched)) if self.returns_state else out

    @staticmethod
    def _layers(v, unbatched: bool) -> jax.Array:
        """A torch state tensor (num_layers, N, H) -- (num_layers, H) unbatched -- as (num_layers, N, H)."""
        return v[:, None] if unbatched else v

    @staticmethod
    def _stack(vs, unbatched: bool) -> jax.Array:
        out = jnp.stack(vs)
        return out[:, 0] if unbatched else out


class LSTM(_Recurrent):
    """torch's ``nn.LSTM`` (unidirectional): gates i, f, g, o; state (h, c); torch's return value
    ``(output, (h_n, c_n))`` with ``returns_state``, else the output sequence (the LSTM preset)."""

    gates = 4

    def initial_state(self, hx, n: int, dtype, unbatched: bool) -> list:
        if hx is None:
            zeros = jnp.zeros((n, self.hidden_size), dtype)
            return [(zeros, zeros)] * self.num_layers
        h0, c0 = (self._layers(v, unbatched) for v in hx)
        return [(h0[l], c0[l]) for l in range(self.num_layers)]

    @staticmethod
    def step(k_hh, b_hh, carry, xp):
        h, c = carry
        i, f, g, o = jnp.split(xp + _hidden(k_hh, b_hh, h), 4, axis=-1)
        c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
        h = jax.nn.sigmoid(o) * jnp.tanh(c)
        return (h, c), h

    def final_state(self, finals: list, unbatched: bool):
        return self._stack([h for h, _ in finals], unbatched), self._stack([c for _, c in finals], unbatched)


class GRU(_Recurrent):
    """torch's ``nn.GRU`` (unidirectional): gates r, z, n with ``n = tanh(x W_in + b_in + r * (h W_hn + b_hn))``
    and ``h = n + z * (h - n)`` (torch's order of operations); torch's ``(output, h_n)`` with
    ``returns_state``, else the output sequence."""

    gates = 3

    def initial_state(self, hx, n: int, dtype, unbatched: bool) -> list:
        if hx is None:
            return [jnp.zeros((n, self.hidden_size), dtype)] * self.num_layers
        h0 = self._layers(hx, unbatched)
        return [h0[l] for l in range(self.num_layers)]

    @staticmethod
    def step(k_hh, b_hh, h, xp):
        i_r, i_z, i_n = jnp.split(xp, 3, axis=-1)
        h_r, h_z, h_n = jnp.split(_hidden(k_hh, b_hh, h), 3, axis=-1)
        r, z = jax.nn.sigmoid(i_r + h_r), jax.nn.sigmoid(i_z + h_z)
        n = jnp.tanh(i_n + r * h_n)
        h = (h - n) * z + n
        return h, h

    def final_state(self, finals: list, unbatched: bool):
        return self._stack(finals, unbatched)
