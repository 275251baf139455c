"""Convolutions as GEMMs: exact reformulations for XLA:CPU, selectable per model (issue 17).

Two things make XLA:CPU's own convolutions slow for training (measured, docs/benchmarks.md):
- its fast path (Eigen) is only for undilated convolutions. A strided convolution is fast forward, but
  its gradients are dilated convolutions (the kernel gradient dilates the window, the input gradient the
  input), and a transposed convolution is dilated forward and backward: those run a generic loop (the
  conv preset's first transposed convolution: 5.6 ms of backward against 1.5 ms here, batch 32);
- inside a while loop -- the compiled whole-epoch ``lax.scan`` -- even an undilated convolution runs
  about 10x slower than at top level (16 -> 16 channels, 14x14, batch 32: 23 ms against 2.5 ms).

:class:`ConvForm` is a drop-in for ``jax.lax.conv_general_dilated`` (``nnx.Conv(...,
conv_general_dilated=ConvForm("auto"))``, ``TorchConvTranspose(..., conv_general_dilated=...)``) that
computes the same convolution from slices, pads and one matrix product, whose gradients are slices, pads
and matrix products too, and run as fast inside a loop as outside:

- no input dilation (``nn.Conv*d``): im2col -- one strided slice of the padded input per kernel tap,
  concatenated on the channel axis -- times the kernel as a (taps * in, out) matrix;
- input dilation ``s`` with stride 1 (``nn.ConvTranspose*d``): the sub-pixel (phase) form. The output
  position ``s * q + r`` only ever meets the kernel taps ``r, r + s, ...``, so every phase ``r`` is an
  undilated correlation of the input with those taps: one im2col GEMM gives all ``s**d`` phases at once
  (taps past the kernel's end are zero), then they are interleaved and cropped to the output. Where the
  layer has few output channels, the scatter form (col2im) moves fewer numbers: one GEMM to every tap's
  contribution, each placed with interior padding, summed.

The sums are the same products added in another order, so the forms agree to rounding (float64: ~1e-16
relative; ``parity_tests/test_convforms.py`` holds them to 1e-12 against the plain form and torch).

``form``: ``"plain"`` always calls ``lax.conv_general_dilated``; ``"gemm"`` uses the GEMM form wherever it
applies (channels-last dimension numbers, one feature and batch group, and for input dilation no stride
nor window dilation), else the plain one; ``"auto"`` (the default) is ``"gemm"`` when the computation is
traced for the CPU backend (``jax.default_backend()``) and ``"plain"`` otherwise: accelerators keep
cuDNN / the TPU's convolution units, for which nothing here was measured.
"""

from __future__ import annotations

import contextlib
import contextvars
import itertools
import math
from typing import Sequence

import jax
import jax.numpy as jnp
from jax import lax

FORMS = ("auto", "plain", "gemm")
_BUILD_FORM: contextvars.ContextVar = contextvars.ContextVar("ae_jax_conv_form", default="auto")


def check_form(form: str) -> str:
    if form not in FORMS:
        raise ValueError(f"conv form must be one of {', '.join(FORMS)}, got {form!r}")
    return form


@contextlib.contextmanager
def conv_forms(form: str):
    """Models built inside take ``ConvForm(form)`` for their convolutions (``ae_jax.build(...,
    conv_form=...)`` does this)."""
    token = _BUILD_FORM.set(check_form(form))
    try:
        yield
    finally:
        _BUILD_FORM.reset(token)


def build_form() -> "ConvForm":
    """The convolution form of a layer built now (see :func:`conv_forms`)."""
    return ConvForm(_BUILD_FORM.get())


class ConvForm:
    """``jax.lax.conv_general_dilated`` computed as the module docstring says. Instances with the same
    form are equal (a module's graph, and so a compiled step, depends only on the form)."""

    __slots__ = ("form",)

    def __init__(self, form: str = "auto"):
        self.form = check_form(form)

    def __eq__(self, other) -> bool:
        return isinstance(other, ConvForm) and other.form == self.form

    def __hash__(self) -> int:
        return hash(("ConvForm", self.form))

    def __repr__(self) -> str:
        return f"ConvForm({self.form!r})"

    def __call__(self, lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None,
                 dimension_numbers=None, feature_group_count=1, batch_group_count=1, precision=None,
                 preferred_element_type=None, out_sharding=None):
        nd = lhs.ndim - 2
        strides, lhs_dil = tuple(window_strides), tuple(lhs_dilation or (1,) * nd)
        rhs_dil = tuple(rhs_dilation or (1,) * nd)
        kwargs = dict(lhs_dilation=lhs_dilation, rhs_dilation=rhs_dilation, dimension_numbers=dimension_numbers,
                      feature_group_count=feature_group_count, batch_group_count=batch_group_count,
                      precision=precision, preferred_element_type=preferred_element_type)
        if out_sharding is not None:
            kwargs["out_sharding"] = out_sharding
        pads = _gemm_pads(lhs, rhs, strides, padding, lhs_dil, rhs_dil, dimension_numbers, feature_group_count,
                          batch_group_count, out_sharding)
        if pads is None or not self.uses_gemm():
            return lax.conv_general_dilated(lhs, rhs, window_strides, padding, **kwargs)
        dot = dict(precision=precision, preferred_element_type=preferred_element_type)
        if set(lhs_dil) == {1}:
            return conv_gemm(lhs, rhs, strides, pads, rhs_dil, **dot)
        return conv_transpose_gemm(lhs, rhs, lhs_dil, pads, **dot)

    def uses_gemm(self) -> bool:
        """Whether this form computes a convolution traced now as GEMMs (where a GEMM form applies)."""
        return self.form == "gemm" or (self.form == "auto" and jax.default_backend() == "cpu")


def _gemm_pads(lhs, rhs, strides, padding, lhs_dil, rhs_dil, dimension_numbers, groups, batch_groups,
               out_sharding) -> list[tuple[int, int]] | None:
    """The explicit padding of a convolution the GEMM forms compute, or None where they do not apply."""
    nd = lhs.ndim - 2
    if nd < 1 or groups != 1 or batch_groups != 1 or out_sharding is not None:
        return None
    dn = lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers)
    channels_last = (0, nd + 1, *range(1, nd + 1))
    if tuple(dn.lhs_spec) != channels_last or tuple(dn.out_spec) != channels_last \
            or tuple(dn.rhs_spec) != (nd + 1, nd, *range(nd)):
        return None
    if set(lhs_dil) != {1} and {*strides, *rhs_dil} != {1}:
        return None  # a strided or window-dilated transposed convolution: not a phase form
    if isinstance(padding, str):
        dilated_in = [(n - 1) * d + 1 for n, d in zip(lhs.shape[1:-1], lhs_dil)]
        window = [(k - 1) * d + 1 for k, d in zip(rhs.shape[:nd], rhs_dil)]
        return [tuple(p) for p in lax.padtype_to_pads(dilated_in, window, strides, padding)]
    return [(int(lo), int(hi)) for lo, hi in padding]


def _pad(x, pads: Sequence[tuple[int, int]]):
    """Pad (or, for negative amounts, crop) the spatial axes of a channels-last array."""
    zero = jnp.zeros((), x.dtype)
    return lax.pad(x, zero, [(0, 0, 0), *((lo, hi, 0) for lo, hi in pads), (0, 0, 0)])


def _im2col(x, kernel_size, strides, dilation, out_size):
    """(N, *out, taps * C): for every kernel tap (row-major), the input elements it meets."""
    cols = []
    for taps in itertools.product(*(range(k) for k in kernel_size)):
        index = tuple(slice(t * d, t * d + s * (o - 1) + 1, s)
                      for t, d, s, o in zip(taps, dilation, strides, out_size))
        cols.append(x[(slice(None), *index, slice(None))])
    return cols[0] if len(cols) == 1 else jnp.concatenate(cols, axis=-1)


def _matmul(patches, matrix, precision, preferred_element_type):
    return lax.dot_general(patches, matrix, (((patches.ndim - 1,), (0,)), ((), ())), precision=precision,
                           preferred_element_type=preferred_element_type)


def conv_gemm(x, kernel, strides, padding, dilation, *, precision=None, preferred_element_type=None):
    """``lax.conv_general_dilated`` of a channels-last ``x`` (N, *S, C) with a kernel (*k, C, O), explicit
    padding per side, window strides and dilation: im2col, then one GEMM."""
    nd = kernel.ndim - 2
    ks = kernel.shape[:nd]
    x = _pad(x, padding)
    out = [(x.shape[1 + d] - dilation[d] * (ks[d] - 1) - 1) // strides[d] + 1 for d in range(nd)]
    if min(out) <= 0:
        raise ValueError(f"convolution output would be empty: input {x.shape[1:-1]} (padded), kernel {ks}")
    patches = _im2col(x, ks, strides, dilation, out)
    return _matmul(patches, kernel.reshape(-1, kernel.shape[-1]), precision, preferred_element_type)


def conv_transpose_gemm(x, kernel, lhs_dilation, padding, *, precision=None, preferred_element_type=None,
                        form: str | None = None):
    """``lax.conv_general_dilated`` with input dilation ``s`` (stride 1, no window dilation): the
    transposed convolution, from one GEMM.

    In 1-d: the plain form is ``y[o] = sum_t xd[o + t - lo] k[t]`` on the dilated input ``xd``; with
    ``w[t'] = k[K - 1 - t']`` this is ``F[o + K - 1 - lo]`` of the full transposed convolution
    ``F[s * i + t'] += x[i] w[t']`` (zero outside its length). ``F`` comes in one of two forms, whichever
    moves fewer numbers through its GEMM (measured per layer, docs/benchmarks.md):

    - phase: ``F[s * q + r] = sum_m x[q - m] w[r + m s]``, a correlation over ``M = ceil(K / s)`` taps;
      one im2col GEMM gives every phase ``r``, then they are interleaved. Its patches hold
      ``positions * M**d * C`` numbers.
    - scatter (col2im, torch's own algorithm): one GEMM gives ``x[i] w[t']`` for every tap, each tap's
      plane is placed at ``s * i + t'`` (interior padding) and the planes are summed. Its product holds
      ``positions * K**d * O`` numbers: far fewer where the layer has few output channels (the last
      layer of an image decoder). ``form`` ("phase" / "scatter") forces one."""
    nd = kernel.ndim - 2
    ks, c, o = kernel.shape[:nd], kernel.shape[nd], kernel.shape[nd + 1]
    s = tuple(lhs_dilation)
    w = jnp.flip(kernel, tuple(range(nd)))  # w[t'] = k[K - 1 - t']
    spatial = x.shape[1:-1]
    if form is None:
        form = transposed_form(spatial, ks, s, c, o)[0]
    full = {"phase": _phases, "scatter": _scatter}[form](x, w, s, precision, preferred_element_type)
    # output o = F[o + K - 1 - lo], length (n - 1) s + 1 + lo + hi - K + 1
    crop = []
    for d in range(nd):
        start = ks[d] - 1 - padding[d][0]
        length = (spatial[d] - 1) * s[d] + 1 + padding[d][0] + padding[d][1] - ks[d] + 1
        crop.append((-start, start + length - full.shape[1 + d]))
    return _pad(full, crop)


def transposed_form(spatial, kernel_size, lhs_dilation, c: int, o: int) -> tuple[str, int]:
    """The form :func:`conv_transpose_gemm` takes for one example of (*spatial, c) and a (*kernel, c, o)
    kernel, and how many numbers its GEMM operand holds (patches or product): the smaller one, scatter
    only where it is under half."""
    m = [-(-k // st) for k, st in zip(kernel_size, lhs_dilation)]
    phase = math.prod(n + mm - 1 for n, mm in zip(spatial, m)) * math.prod(m) * c
    scatter = math.prod(spatial) * math.prod(kernel_size) * o
    return ("scatter", scatter) if 2 * scatter < phase else ("phase", phase)


def gemm_numbers(kind: str, in_spatial, out_spatial, kernel_size, strides, c: int, o: int) -> int:
    """Numbers per example in the GEMM operand a layer's GEMM form builds (kept for its backward pass):
    ``kind`` "conv" (im2col patches) or "conv_transpose" (:func:`transposed_form`)."""
    if kind == "conv":
        return math.prod(out_spatial) * math.prod(kernel_size) * c
    return transposed_form(in_spatial, kernel_size, strides, c, o)[1]


def _phases(x, w, s, precision, preferred_element_type):
    """``F`` (N, *(n + M - 1) s, O) of :func:`conv_transpose_gemm`, in the phase form."""
    nd = w.ndim - 2
    ks, c, o = w.shape[:nd], w.shape[nd], w.shape[nd + 1]
    m = tuple(-(-k // st) for k, st in zip(ks, s))
    # taps past K zero, each axis split into (M, s) and read back to front in M: the index [j, r] holds
    # the tap r + (M - 1 - j) s of w
    w = jnp.pad(w, [(0, mm * st - k) for mm, st, k in zip(m, s, ks)] + [(0, 0), (0, 0)])
    w = w.reshape(*itertools.chain.from_iterable(zip(m, s)), c, o)
    w = jnp.flip(w, tuple(range(0, 2 * nd, 2)))  # j -> M - 1 - j
    # (M1, s1, M2, s2, ..., C, O) -> (M1, M2, ..., C, s1, s2, ..., O)
    order = (*range(0, 2 * nd, 2), 2 * nd, *range(1, 2 * nd, 2), 2 * nd + 1)
    w = jnp.transpose(w, order).reshape(-1, math.prod(s) * o)
    spatial = x.shape[1:-1]
    x = _pad(x, [(mm - 1, mm - 1) for mm in m])
    q = [n + mm - 1 for n, mm in zip(spatial, m)]
    g = _matmul(_im2col(x, m, (1,) * nd, (1,) * nd, q), w, precision, preferred_element_type)
    # (N, *q, *s, O) -> (N, q1 s1, q2 s2, ..., O): interleave the phases
    g = g.reshape(g.shape[0], *q, *s, o)
    inter = [0] + list(itertools.chain.from_iterable((1 + d, 1 + nd + d) for d in range(nd))) + [1 + 2 * nd]
    return jnp.transpose(g, inter).reshape(g.shape[0], *(qq * st for qq, st in zip(q, s)), o)


def _scatter(x, w, s, precision, preferred_element_type):
    """``F`` (N, *(n - 1) s + K, O) of :func:`conv_transpose_gemm`, in the scatter form."""
    nd = w.ndim - 2
    ks, c, o = w.shape[:nd], w.shape[nd], w.shape[nd + 1]
    # (*K, C, O) -> (C, *K, O): one GEMM to every tap's contribution
    y = _matmul(x, jnp.moveaxis(w, nd, 0).reshape(c, -1), precision, preferred_element_type)
    y = y.reshape(*x.shape[:-1], *ks, o)
    zero = jnp.zeros((), y.dtype)
    full = None
    for taps in itertools.product(*(range(k) for k in ks)):
        plane = y[(Ellipsis, *taps, slice(None))]
        plane = lax.pad(plane, zero, [(0, 0, 0), *((t, k - 1 - t, st - 1) for t, k, st in zip(taps, ks, s)),
                                      (0, 0, 0)])
        full = plane if full is None else full + plane
    return full


__all__ = ["FORMS", "ConvForm", "build_form", "check_form", "conv_forms", "conv_gemm", "conv_transpose_gemm",
           "gemm_numbers", "transposed_form"]
