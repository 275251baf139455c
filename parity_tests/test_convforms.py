"""The GEMM forms of the convolutions (``ae_jax.convforms``, issue 17): the same convolution as
``lax.conv_general_dilated`` -- forward and both gradients, float64 within 1e-12 -- over random shapes,
strides, dilations and paddings in 1, 2 and 3 dimensions; torch's Conv2d / ConvTranspose2d as the
independent reference; the plain form wherever a GEMM form does not apply; and the presets trained either
way reaching the same weights."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch
from flax import nnx
from jax import lax

import ae_jax
import jax
import jax.numpy as jnp
from ae_jax.convforms import ConvForm, conv_forms

DN = {1: ("NHC", "HIO", "NHC"), 2: ("NHWC", "HWIO", "NHWC"), 3: ("NHWDC", "HWDIO", "NHWDC")}
GEMM = ConvForm("gemm")


def rel(a, b) -> float:
    a, b = np.asarray(a), np.asarray(b)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300))


def primitives(fn, *args) -> set[str]:
    return {e.primitive.name for e in jax.make_jaxpr(fn)(*args).jaxpr.eqns}


def draw_case(rng, nd: int):
    """A random convolution: kernel 1-4, input 3-8, 1-3 channels; half of them transposed (input dilation
    1-3), the others with window strides 1-3 and dilation 1-2; explicit padding -1..3 per side (negative:
    a crop) or SAME / VALID."""
    k, size = tuple(rng.integers(1, 5, nd)), tuple(rng.integers(3, 9 if nd < 3 else 6, nd))
    c, o = (int(v) for v in rng.integers(1, 4, 2))
    one = (1,) * nd
    if rng.random() < 0.5:
        lhs, strides, rhs = tuple(rng.integers(1, 4, nd)), one, one
    else:
        lhs, strides, rhs = one, tuple(rng.integers(1, 4, nd)), tuple(rng.integers(1, 3, nd))
    padding = (str(rng.choice(["SAME", "VALID"])) if rng.random() < 0.2 else
               [tuple(int(v) for v in rng.integers(-1, 4, 2)) for _ in range(nd)])
    x, w = rng.standard_normal((2, *size, c)), rng.standard_normal((*k, c, o))
    return x, w, dict(window_strides=strides, padding=padding, lhs_dilation=lhs, rhs_dilation=rhs,
                      dimension_numbers=DN[nd])


def check_case(x, w, kw: dict, g) -> None:
    """The GEMM form of one convolution against lax's: no convolution left in it; the output and the
    gradients of <output, g> for x and w (one compilation each) within 1e-12."""
    gemm, plain = functools.partial(GEMM, **kw), functools.partial(lax.conv_general_dilated, **kw)
    assert "conv_general_dilated" not in primitives(gemm, x, w), kw

    def value_and_grads(f):
        def dot(x, w):
            y = f(x, w)
            return jnp.sum(y * g), y
        return jax.jit(jax.grad(dot, argnums=(0, 1), has_aux=True))(x, w)

    (got_g, got), (want_g, want) = value_and_grads(gemm), value_and_grads(plain)
    assert got.shape == want.shape and rel(got, want) <= 1e-12, (x.shape, w.shape, kw)
    for a, b in zip(got_g, want_g):
        assert rel(a, b) <= 1e-12, kw


@pytest.mark.parametrize("nd", [1, 2, 3])
def test_the_gemm_form_is_the_convolution_forward_and_backward(nd):
    rng = np.random.default_rng(17 + nd)
    checked = 0
    while checked < (16 if nd < 3 else 6):
        x, w, kw = draw_case(rng, nd)
        try:
            want = lax.conv_general_dilated(x, w, **kw)
        except (ValueError, TypeError):  # a padding that crops more than there is
            continue
        if 0 in want.shape:
            continue
        check_case(x, w, kw, rng.standard_normal(want.shape))
        checked += 1


@pytest.mark.parametrize("form", ["phase", "scatter"])
def test_both_forms_of_the_transposed_convolution(form):
    """The phase and the scatter form of a transposed convolution, each forced (the layer picks the one
    that moves fewer numbers), against lax in 1 and 2 dimensions, input dilation 1-3, padding -1..3."""
    from ae_jax.convforms import conv_transpose_gemm

    rng = np.random.default_rng(5)
    checked = 0
    while checked < 12:
        nd = int(rng.integers(1, 3))
        k, size, s = tuple(rng.integers(1, 5, nd)), tuple(rng.integers(3, 8, nd)), tuple(rng.integers(1, 4, nd))
        pads = [tuple(int(v) for v in rng.integers(-1, 4, 2)) for _ in range(nd)]
        x, w = rng.standard_normal((2, *size, 2)), rng.standard_normal((*k, 2, 3))
        try:
            want = lax.conv_general_dilated(x, w, (1,) * nd, pads, s, None, DN[nd])
        except (ValueError, TypeError):
            continue
        if 0 in want.shape:
            continue
        got = jax.jit(functools.partial(conv_transpose_gemm, lhs_dilation=s, padding=pads, form=form))(x, w)
        assert got.shape == want.shape and rel(got, want) <= 1e-12, (k, size, s, pads)
        checked += 1


@pytest.mark.parametrize("stride,padding,output_padding,size", [(2, 1, 1, 7), (2, 1, 1, 14), (2, 0, 1, 5), (3, 2, 1, 6),
                                                                  (2, 1, 0, 5), (1, 1, 0, 6)])
def test_torch_conv_layers_against_the_gemm_form(stride, padding, output_padding, size):
    """torch's own Conv2d and ConvTranspose2d (NCHW, its weight layouts) against the NNX layers built in
    the GEMM form from the same weights: the independent reference."""
    torch.manual_seed(stride * 10 + size)
    conv = torch.nn.Conv2d(3, 4, 3, stride=stride, padding=padding).double()
    convt = torch.nn.ConvTranspose2d(4, 3, 3, stride=stride, padding=padding, output_padding=output_padding).double()
    x = torch.randn(2, 3, size, size, dtype=torch.float64)
    with conv_forms("gemm"):
        from ae_core import layers as L
        jconv = ae_jax.layers.make_layer(L.Conv2d(3, 4, 3, stride=stride, padding=padding), rngs=nnx.Rngs(0),
                                         dtype=jnp.float64)
        jconvt = ae_jax.layers.make_layer(L.ConvTranspose2d(4, 3, 3, stride=stride, padding=padding,
                                                            output_padding=output_padding), rngs=nnx.Rngs(0),
                                          dtype=jnp.float64)
    ae_jax.load_state_dict(jconv, {k: v.numpy() for k, v in conv.state_dict().items()})
    ae_jax.load_state_dict(jconvt, {k: v.numpy() for k, v in convt.state_dict().items()})
    h = conv(x)
    xj = jnp.asarray(x.numpy().transpose(0, 2, 3, 1))
    hj = jconv(xj)
    assert rel(hj, h.detach().numpy().transpose(0, 2, 3, 1)) <= 1e-12
    y, yj = convt(h), jconvt(hj)
    assert yj.shape == (2, *y.shape[2:], 3) and rel(yj, y.detach().numpy().transpose(0, 2, 3, 1)) <= 1e-12


def test_where_no_gemm_form_applies_the_plain_convolution_runs():
    """Feature groups, a strided transposed convolution, channels-first dimension numbers: lax itself."""
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal((2, 6, 6, 4)), rng.standard_normal((3, 3, 2, 4))
    grouped = dict(window_strides=(2, 2), padding=[(1, 1)] * 2, dimension_numbers=DN[2], feature_group_count=2)
    strided_t = dict(window_strides=(2, 1), padding=[(1, 1)] * 2, lhs_dilation=(2, 2), dimension_numbers=DN[2])
    nchw = dict(window_strides=(2, 2), padding=[(1, 1)] * 2, dimension_numbers=("NCHW", "OIHW", "NCHW"))
    w4 = rng.standard_normal((3, 3, 4, 2))
    for kw, (xs, ws) in ((grouped, (x, w)), (strided_t, (x, w4)), (nchw, (x.transpose(0, 3, 1, 2), w4.transpose(3, 2, 0, 1)))):
        assert "conv_general_dilated" in primitives(lambda a, b, kw=kw: GEMM(a, b, **kw), xs, ws)
        np.testing.assert_array_equal(GEMM(xs, ws, **kw), lax.conv_general_dilated(xs, ws, **kw))


def test_auto_takes_the_gemm_form_on_the_cpu():
    """The CPU backend here: "auto" computes a strided, a window-dilated, a transposed and an undilated
    convolution as GEMMs (inside a scan, XLA:CPU's own convolution is slow even undilated); "plain" never
    changes anything."""
    assert jax.default_backend() == "cpu"
    rng = np.random.default_rng(1)
    x, w = rng.standard_normal((2, 8, 8, 3)), rng.standard_normal((3, 3, 3, 5))
    auto, plain = ConvForm("auto"), ConvForm("plain")
    for kw in (dict(window_strides=(2, 2)), dict(window_strides=(1, 1), rhs_dilation=(2, 2)),
               dict(window_strides=(1, 1), lhs_dilation=(2, 2)), dict(window_strides=(1, 1))):
        kw = dict(kw, padding=[(1, 1)] * 2, dimension_numbers=DN[2])
        a, p = functools.partial(auto, **kw), functools.partial(plain, **kw)
        assert "conv_general_dilated" not in primitives(a, x, w) and "conv_general_dilated" in primitives(p, x, w)
        np.testing.assert_allclose(a(x, w), p(x, w), rtol=1e-12, atol=1e-12)


def test_a_bad_form_is_refused_by_name():
    with pytest.raises(ValueError, match="conv form must be one of auto, plain, gemm, got 'fast'"):
        ConvForm("fast")
    with pytest.raises(ValueError, match="got 'GEMM'"):
        ae_jax.build("conv", seed=0, conv_form="GEMM")
    assert ConvForm("gemm") == ConvForm("gemm") != ConvForm("auto") and len({ConvForm("gemm"), GEMM}) == 1


@pytest.mark.parametrize("preset", ["conv", "conv_bn"])
def test_a_preset_trains_to_the_same_weights_in_either_form(preset, train):
    """Two Adam epochs (float64, the real digits) of the model built plain and built in the GEMM form, from
    the same seed: every step's loss and the final weights within 1e-12 (relative to the largest)."""
    from ae_core import get_spec, model_inputs
    from ae_core.training import TrainConfig, default_loss
    from ae_jax.train import Trainer

    config = TrainConfig(epochs=2, batch_size=64, dtype="float64", seed=3, loss=default_loss(get_spec(preset)))
    x = model_inputs(get_spec(preset), train.images[:256], "float64")
    runs = {}
    for form in ("plain", "gemm"):
        trainer = Trainer(preset, config, x, mode="step", conv_form=form)
        hlo = trainer.lower("step").as_text()
        assert ("convolution" in hlo) == (form == "plain"), form  # the trainer computes in the form asked for
        losses = np.concatenate([trainer.train_epoch(epoch) for epoch in range(2)])
        runs[form] = (losses, trainer.model_state())
    (lp, sp), (lg, sg) = runs["plain"], runs["gemm"]
    assert rel(lg, lp) <= 1e-12
    assert sorted(sg) == sorted(sp)
    for k in sp:
        assert np.max(np.abs(sg[k] - sp[k])) <= 1e-12 * max(1.0, np.max(np.abs(sp[k]))), k
