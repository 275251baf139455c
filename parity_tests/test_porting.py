"""The divergence finder on planted porting bugs: each pitfall of docs/porting.md, wrong and right.

For every pitfall a small user-style torch model and two hand-written Flax ports: the wrong mapping
must be reported at the planted layer, with the pitfall's hint, by a measured amount far above
rounding; the right mapping must pass every row (float64, tolerance 1e-10 relative).
"""

import functools
from dataclasses import dataclass
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx
from torch import nn

from ae_jax import layers as M
from ae_jax.convert import RULES, ParamRule
from ae_parity.compare import PortMismatchError, compare

jax.config.update("jax_enable_x64", True)
F64 = jnp.float64


def rngs():
    return nnx.Rngs(0)


class MyDense(nnx.Module):  # a user's own dense layer: y = x @ w + b with w (in, out)
    def __init__(self, n_in, n_out):
        self.w = nnx.Param(jnp.zeros((n_in, n_out), F64))
        self.b = nnx.Param(jnp.zeros((n_out,), F64))

    def __call__(self, x):
        return x @ self.w.get_value() + self.b.get_value()


WRONG_DENSE_RULE = {MyDense: (ParamRule("w", "weight"), ParamRule("b", "bias"))}  # no transpose
RIGHT_DENSE_RULE = {MyDense: (ParamRule("w", "weight", lambda a: a.T, lambda a: a.T), ParamRule("b", "bias"))}


class FlattenNHWC(nnx.Module):  # the classic bug: reshape channels-last activations as they are
    def __call__(self, x):
        return x.reshape(x.shape[0], -1)


class Gelu(nnx.Module):
    def __init__(self, approximate):
        self.approximate = approximate

    def __call__(self, x):
        return jax.nn.gelu(x, approximate=self.approximate)


class LSTMForgetsSecondBias(M.LSTM):  # converts both biases, but the step only uses b_ih
    def __call__(self, x):
        saved = self.bias_hh.get_value()
        self.bias_hh.set_value(jnp.zeros_like(saved))
        try:
            return super().__call__(x)
        finally:
            self.bias_hh.set_value(saved)


def nhwc(x):
    return x.transpose(0, 2, 3, 1)


@dataclass
class Case:
    torch_model: Callable
    wrong: Callable
    right: Callable
    shape: tuple
    first: str  # the torch name of the planted layer (or buffer)
    stage: str
    hint: str  # a word the hint must contain
    min_rel: float  # the wrong mapping's measured divergence is at least this
    kwargs: dict | None = None
    wrong_kwargs: dict | None = None
    right_kwargs: dict | None = None


def _seq(*layers):
    return nnx.Sequential(*layers)


CASES = {
    # 1. Linear: kernel (in, out) = weight.T; a square layer loads either way, so only numbers tell
    "linear transpose": Case(
        lambda: nn.Sequential(nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 8)),
        lambda: _seq(MyDense(8, 8), jnp.tanh, MyDense(8, 8)),
        lambda: _seq(MyDense(8, 8), jnp.tanh, MyDense(8, 8)),
        (16, 8), "0", "forward", "weight.T", 1e-2,
        wrong_kwargs=dict(rules=WRONG_DENSE_RULE), right_kwargs=dict(rules=RIGHT_DENSE_RULE)),
    # 2. Conv2d stride 2: 'SAME' pads (0, 1), torch padding=1 pads (1, 1)
    "conv padding": Case(
        lambda: nn.Sequential(nn.Conv2d(1, 2, 3, stride=2, padding=1)),
        lambda: _seq(nnx.Conv(1, 2, (3, 3), strides=2, padding="SAME", dtype=F64, param_dtype=F64, rngs=rngs())),
        lambda: _seq(nnx.Conv(1, 2, (3, 3), strides=2, padding=((1, 1), (1, 1)), dtype=F64, param_dtype=F64,
                              rngs=rngs())),
        (4, 1, 8, 8), "0", "forward", "padding", 1e-2, kwargs=dict(flax_input=nhwc)),
    # 4. ConvTranspose2d: torch flips the kernel spatially
    "transposed-conv flip": Case(
        # (2 -> 2 channels: with in != out the unflipped kernel does not even have the right shape)
        lambda: nn.Sequential(nn.ConvTranspose2d(2, 2, 3, stride=2, padding=1, output_padding=1)),
        lambda: _seq(nnx.ConvTranspose(2, 2, (3, 3), strides=2, padding=((1, 2), (1, 2)), dtype=F64,
                                       param_dtype=F64, rngs=rngs())),
        lambda: _seq(nnx.ConvTranspose(2, 2, (3, 3), strides=2, padding=((1, 2), (1, 2)), transpose_kernel=True,
                                       dtype=F64, param_dtype=F64, rngs=rngs())),
        (4, 2, 5, 5), "0", "forward", "kernel flip", 1e-2, kwargs=dict(flax_input=nhwc)),
    # 3. Flatten after a conv: NHWC must go back to NCHW before the reshape
    "flatten order": Case(
        lambda: nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.Flatten(), nn.Linear(50, 3)),
        lambda: _seq(nnx.Conv(1, 2, (3, 3), padding=((1, 1), (1, 1)), dtype=F64, param_dtype=F64, rngs=rngs()),
                     FlattenNHWC(), nnx.Linear(50, 3, dtype=F64, param_dtype=F64, rngs=rngs())),
        lambda: _seq(nnx.Conv(1, 2, (3, 3), padding=((1, 1), (1, 1)), dtype=F64, param_dtype=F64, rngs=rngs()),
                     M.Flatten(), nnx.Linear(50, 3, dtype=F64, param_dtype=F64, rngs=rngs())),
        (4, 1, 5, 5), "1", "forward", "NHWC -> NCHW", 1e-2, kwargs=dict(flax_input=nhwc)),
    # 5. BatchNorm in training mode: the outputs agree, the running statistics do not (Flax's momentum
    #    number, 0.9, given to a layer with torch's convention; nnx.BatchNorm's own float32 statistics are
    #    a dtype finding of their own, test_naive_nnx_batchnorm_in_float64_is_a_dtype_finding)
    "batchnorm momentum": Case(
        lambda: nn.Sequential(nn.Linear(6, 4), nn.BatchNorm1d(4)),
        lambda: _seq(nnx.Linear(6, 4, dtype=F64, param_dtype=F64, rngs=rngs()), M.BatchNorm(4, momentum=0.9, dtype=F64)),
        lambda: _seq(nnx.Linear(6, 4, dtype=F64, param_dtype=F64, rngs=rngs()), M.BatchNorm(4, dtype=F64)),
        (16, 6), "1.running_mean", "buffer", "momentum", 1e-2, kwargs=dict(mode="train")),
    # 6. LayerNorm eps: 1e-6 (Flax) vs 1e-5 (torch), visible on low-variance features
    "layernorm eps": Case(
        lambda: nn.Sequential(nn.Linear(8, 8), nn.LayerNorm(8)),
        lambda: _seq(nnx.Linear(8, 8, dtype=F64, param_dtype=F64, rngs=rngs()),
                     nnx.LayerNorm(8, dtype=F64, param_dtype=F64, rngs=rngs())),
        lambda: _seq(nnx.Linear(8, 8, dtype=F64, param_dtype=F64, rngs=rngs()),
                     nnx.LayerNorm(8, epsilon=1e-5, dtype=F64, param_dtype=F64, rngs=rngs())),
        (16, 8), "1", "forward", "epsilon", 1e-6),
    # 7. GELU approximation; here GELU is a plain function in the NNX Sequential (no module to record), so
    #    torch's nn.GELU "1" is compared where the flax side has its value: at the input of the next Linear
    "gelu approximation": Case(
        lambda: nn.Sequential(nn.Linear(8, 8), nn.GELU(), nn.Linear(8, 8)),
        lambda: _seq(nnx.Linear(8, 8, dtype=F64, param_dtype=F64, rngs=rngs()), jax.nn.gelu,
                     nnx.Linear(8, 8, dtype=F64, param_dtype=F64, rngs=rngs())),
        lambda: _seq(nnx.Linear(8, 8, dtype=F64, param_dtype=F64, rngs=rngs()),
                     functools.partial(jax.nn.gelu, approximate=False),
                     nnx.Linear(8, 8, dtype=F64, param_dtype=F64, rngs=rngs())),
        (16, 8), "1", "forward", "approximate=True", 1e-5),
    # 9. LSTM: torch has two biases, both must be used
    "lstm bias": Case(
        lambda: nn.Sequential(nn.LSTM(4, 3, batch_first=True)),
        lambda: _seq(LSTMForgetsSecondBias(4, 3, dtype=F64, rngs=rngs())),
        lambda: _seq(M.LSTM(4, 3, dtype=F64, rngs=rngs())),
        (5, 6, 4), "0", "forward", "TWO biases", 1e-2,
        wrong_kwargs=dict(rules={LSTMForgetsSecondBias: RULES[M.LSTM]})),
}


def run(case: Case, which: str):
    torch.manual_seed(0)
    tm = case.torch_model().double()
    x = np.random.default_rng(0).normal(size=case.shape)
    if case.first == "1" and case.hint == "epsilon":  # low-variance features make eps matter
        x = 1.0 + 1e-3 * x
    fm = case.wrong() if which == "wrong" else case.right()
    kwargs = {**(case.kwargs or {}), **((case.wrong_kwargs if which == "wrong" else case.right_kwargs) or {})}
    return compare(tm, fm, x, dtype="float64", **kwargs)


# nnx.BatchNorm keeps its statistics in float32 whatever the dtype, and its float64 update warns
WRONG = [pytest.param(n, marks=pytest.mark.filterwarnings("ignore:scatter inputs have incompatible types"))
         if n == "batchnorm momentum" else n for n in sorted(CASES)]


@pytest.mark.parametrize("name", WRONG)
def test_the_wrong_mapping_is_found_at_the_planted_layer(name):
    case = CASES[name]
    report = run(case, "wrong")
    assert report.first is not None, report.table()
    assert (report.first.stage, report.first.name) == (case.stage, case.first), report.table()
    assert case.hint in report.first.hint, report.first.hint
    assert report.first.max_rel >= case.min_rel, report.table()
    # everything before the planted layer agrees: the finder points at the cause, not a consequence
    before = report.entries[:report.entries.index(next(e for e in report.entries if not e.ok))]
    assert all(e.ok for e in before)


@pytest.mark.parametrize("name", sorted(CASES))
def test_the_right_mapping_passes_every_row(name):
    report = run(CASES[name], "right")
    assert report.ok, report.table()
    assert {"forward", "grad", "step"} <= {e.stage for e in report.entries}


def test_unmatched_parameters_are_listed_on_both_sides():
    tm = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
    fm = nnx.Sequential(nnx.Linear(4, 4, rngs=rngs()), jax.nn.relu, nnx.Linear(4, 3, rngs=rngs()),
                        nnx.Linear(3, 2, rngs=rngs()))
    before = nnx.state(fm, nnx.Param)
    with pytest.raises(PortMismatchError) as info:
        compare(tm, fm, np.zeros((2, 4)))
    msg = str(info.value)
    assert "only in flax:  3.kernel" not in msg  # names are torch names
    assert "only in flax:  3.weight" in msg and "only in flax:  3.bias" in msg
    assert "2.weight: torch shape (2, 4) != flax (3, 4)" in msg
    after = nnx.state(fm, nnx.Param)
    assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(after)))


def test_nested_user_modules_are_compared_layer_by_layer():
    class TorchBlock(nn.Module):
        def __init__(self):
            super().__init__()
            self.proj = nn.Linear(6, 6)
            self.norm = nn.LayerNorm(6)

        def forward(self, x):
            return self.norm(torch.relu(self.proj(x)))

    class TorchNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.block = TorchBlock()
            self.head = nn.Linear(6, 2)

        def forward(self, x):
            return self.head(self.block(x))

    class FlaxBlock(nnx.Module):
        def __init__(self):
            self.proj = nnx.Linear(6, 6, dtype=F64, param_dtype=F64, rngs=rngs())
            self.norm = nnx.LayerNorm(6, epsilon=1e-5, dtype=F64, param_dtype=F64, rngs=rngs())

        def __call__(self, x):
            return self.norm(jax.nn.relu(self.proj(x)))

    class FlaxNet(nnx.Module):
        def __init__(self):
            self.block = FlaxBlock()
            self.head = nnx.Linear(6, 2, dtype=F64, param_dtype=F64, rngs=rngs())

        def __call__(self, x):
            return self.head(self.block(x))

    report = compare(TorchNet().double(), FlaxNet(), np.random.default_rng(0).normal(size=(5, 6)))
    assert report.ok, report.table()
    forward = [e.name for e in report.stage("forward")]
    # execution order; torch.relu between proj and norm is compared at norm's input
    assert forward == ["block.proj", "relu", "block.norm", "block", "head", "<output>"]
    assert [e.name for e in report.stage("grad")] == ["block.proj.weight", "block.proj.bias", "block.norm.weight",
                                                       "block.norm.bias", "head.weight", "head.bias"]
    assert "FIRST DIVERGENCE" not in report.table() and '"ok": true' in report.to_json()


def test_porting_guide_excerpts_match_the_source():
    """docs/porting.md's side-by-side table quotes ae_torch / ae_jax / the rule table: every quoted
    constructor and keyword must still be in the source it names, and every pitfall case is in the guide."""
    import pathlib
    import re

    root = pathlib.Path(__file__).resolve().parent.parent
    guide = (root / "docs" / "porting.md").read_text()
    sources = {0: (root / "ae_torch/layers.py").read_text(),
               1: "".join((root / f).read_text() for f in ("ae_jax/layers.py", "ae_jax/modules.py",
                                                          "ae_jax/recurrent.py"))}
    rules = (root / "ae_jax" / "convert.py").read_text() + (root / "ae_jax" / "layers.py").read_text()
    table = guide.split("## The layers side by side")[1]
    rows = [line.split("|")[1:4] for line in table.splitlines() if line.startswith("| `")]
    assert len(rows) >= 7
    for row in rows:
        for i in (0, 1):
            for code in re.findall(r"`([^`]+)`", row[i]):
                for token in re.findall(r"[A-Za-z_.]+\(|[a-z_]+=", code):  # constructors and keywords
                    name = token.rstrip("(")
                    keyword = f'"{name.rstrip("=")}":'  # a keyword the builder passes through a dict
                    assert name in sources[i] or name.split(".")[-1] in sources[i] or keyword in sources[i], \
                        (token, row[i])
        for part in re.findall(r"weight[_a-z0-9]*(?:\.T|\.transpose\([0-9, ]+\))", row[2]):
            assert part.split(".", 1)[1] in rules, part  # e.g. "transpose(2, 3, 1, 0)" is what the rules do
    for name in CASES:
        assert f"`{name}`" in guide, name
