"""The automatic port (issue 15, first part): torch module -> graph (``ae_core.graph``) -> native NNX module.

On code written the way people publish it (parity_tests/thirdparty_models.py: named attributes and a
functional forward with one MaxPool called twice; a LeNet AE with BatchNorm2d(affine=False, eps=1e-4),
leaky_relu, max_pool2d, view and interpolate; a conv VAE with nested Sequential blocks, encode / decode,
a list output and randn_like), no hand-written Flax code: the port agrees in float64 to 1e-12 and in
float32 by the reference criterion (``compare``), eval and train mode, gradients and a step included.
Every functional op of the graph is checked on its own against torch, value and gradient.
"""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ae_core.graph import OPS, Graph, Method, Node, Ref
from ae_core.layers import SpecError
from ae_jax.numerics import enable_x64
from ae_parity.compare import compare
from ae_parity.port import port
from ae_torch.trace import PortError, trace
from ae_torch.graph import build as torch_build
from parity_tests import thirdparty_models as T

enable_x64()
MODELS = {"named": T.NamedConvAE, "lenet": T.LeNetAE, "vae": T.SamplingConvVAE}
TORCH_DTYPES = {"float32": torch.float32, "float64": torch.float64}


def make(cls, dtype="float64"):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return cls().to(TORCH_DTYPES[dtype])


def batch(cls, dtype="float64", n=4):
    return torch.from_numpy(np.random.default_rng(0).uniform(size=(n, *cls.input_shape))).to(TORCH_DTYPES[dtype])


def test_a_traced_graph_holds_the_torch_names_and_round_trips_through_json():
    tm = make(T.SamplingConvVAE)
    graph = trace(tm, batch(T.SamplingConvVAE))
    assert graph.state_shapes() == {k: tuple(v.shape) for k, v in tm.state_dict().items()}  # names, order, shapes
    assert set(graph.methods) == {"forward", "encode", "decode"}
    assert graph.noise_shapes() == {"randn_like": ("normal", (4,), 1.0)}  # the latent's shape, per example
    assert Graph.from_json(graph.to_json()) == graph
    ops = [n.op for n in graph.methods["forward"].nodes]
    assert ops.count("module") == 8 and "leaky_relu" in ops and "randn_like" in ops and "exp" in ops


@pytest.mark.parametrize("name", sorted(MODELS))
def test_the_torch_runtime_of_a_graph_is_the_model_itself(name):
    """The graph, run by torch with the model's weights, gives the model's own numbers bitwise (the same
    ops in the same order; a random draw is the same draw under the same seed), in both modes."""
    cls = MODELS[name]
    tm, x = make(cls), batch(cls)
    gm = torch_build(trace(tm, x), dtype="float64")
    gm.load_state_dict(tm.state_dict(), strict=True)
    for mode in (True, False):
        tm.train(mode), gm.train(mode)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(1)
            a = tm(x)
            torch.manual_seed(1)
            b = gm(x)
        a, b = (a[0], b[0]) if isinstance(a, list) else (a, b)
        assert torch.equal(a, b)


def _compare(name, dtype, mode):
    cls = MODELS[name]
    tm, x = make(cls, dtype), batch(cls, dtype)
    tm.train(mode == "train")
    jm = port(tm, x)
    if name == "vae":  # randn_like: both frameworks get the same supplied noise, via the torch runtime
        ref = torch_build(jm.graph, dtype=dtype)
        ref.load_state_dict(tm.state_dict(), strict=True)
        eps = np.random.default_rng(1).standard_normal((len(x), 4))
        return compare(ref, jm, x.numpy(), dtype=dtype, mode=mode, forward_kwargs={"noise": {"randn_like": eps}})
    return compare(tm, jm, x.numpy(), dtype=dtype, mode=mode)


@pytest.mark.parametrize("mode", ["eval", "train"])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name", sorted(MODELS))
def test_a_published_style_model_ports_with_no_hand_written_flax(name, dtype, mode):
    report = _compare(name, dtype, mode)
    assert report.ok, report.table()
    assert {"forward", "grad", "step"} <= {e.stage for e in report.entries}
    if dtype == "float64":
        assert max(e.max_abs for e in report.entries if e.stage == "forward") <= 1e-12
    else:
        assert all(e.kind == "ref" for e in report.entries if e.stage in ("forward", "grad", "step"))


def test_encode_and_decode_are_ported_too():
    tm, x = make(T.SamplingConvVAE), batch(T.SamplingConvVAE)
    jm = port(tm.eval(), x)
    mu, logvar = (np.array(v) for v in jm.encode(x.numpy()))
    tmu, tlogvar = (v.detach().numpy() for v in tm.encode(x))
    np.testing.assert_allclose(mu, tmu, rtol=0, atol=1e-12)
    np.testing.assert_allclose(logvar, tlogvar, rtol=0, atol=1e-12)
    np.testing.assert_allclose(np.asarray(jm.decode(mu)), tm.decode(torch.from_numpy(mu)).detach().numpy(),
                               rtol=0, atol=1e-12)


def test_a_random_draw_must_be_supplied_and_says_how():
    tm, x = make(T.SamplingConvVAE), batch(T.SamplingConvVAE)
    jm = port(tm, x)
    with pytest.raises(ValueError, match=r"noise=\{'randn_like': array of shape \(4, 4\)\}"):
        jm(x.numpy())


class ModeDependent(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(6, 6)

    def forward(self, x):
        return F.dropout(self.lin(x), 0.5, self.training) + (x if self.training else 2 * x)


def test_code_that_depends_on_the_mode_is_traced_in_both():
    tm = make(ModeDependent)
    x = torch.from_numpy(np.random.default_rng(0).normal(size=(3, 6)))
    graph = trace(tm, x)
    assert set(graph.methods) == {"forward", "forward@eval"}
    assert graph.noise_shapes() == {"dropout": ("bernoulli", (6,), 0.5)}
    jm = port(tm.eval(), x)
    np.testing.assert_allclose(np.asarray(jm(x.numpy())), tm(x).detach().numpy(), rtol=0, atol=1e-12)
    jm.train()
    mask = (np.random.default_rng(2).uniform(size=(3, 6)) < 0.5).astype(np.float64)
    out = np.asarray(jm(x.numpy(), noise={"dropout": mask}))
    expected = (tm.lin(x).detach().numpy() * mask / 0.5) + x.numpy()  # torch's dropout with that mask
    np.testing.assert_allclose(out, expected, rtol=0, atol=1e-12)


class Unsupported(nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn = nn.GRU(8, 4, batch_first=True, bidirectional=True)
        self.scale = nn.Parameter(torch.ones(4))
        self.conv = nn.Conv2d(1, 1, 3, dilation=2)
        self.act = nn.Hardswish()

    def forward(self, x):
        y = torch.sort(x, dim=-1).values
        h = self.rnn(y.view(-1, 8, 8))[0]
        return self.act(self.conv(h.reshape(-1, 1, 8, 8))) * self.scale


def test_everything_unsupported_is_listed_at_once_with_its_source_line():
    with pytest.raises(PortError) as info:
        port(make(Unsupported), torch.zeros(2, 64, dtype=torch.float64))
    problems = info.value.problems
    text = str(info.value)
    assert len(problems) == 5, text
    assert "torch.sort is not supported" in text and "the attribute .values" in text
    assert "nn.Hardswish is not supported" in text  # torch's own module: named, not traced into
    assert "GRU(bidirectional=True)" in text and "tensor attribute used directly (scale)" in text
    assert all("test_port.py:" in p for p in problems)  # each names the user's line


def test_a_malformed_graph_is_refused_with_its_reason():
    def method(*nodes):
        return {"forward": Method(("x",), tuple(nodes), Ref("a"))}

    with pytest.raises(SpecError, match="unknown op 'frobnicate'"):
        Graph("g", {}, method(Node("a", "frobnicate", kwargs={"input": Ref("x")})))
    with pytest.raises(SpecError, match="uses 'b' before it is computed"):
        Graph("g", {}, method(Node("a", "relu", kwargs={"input": Ref("b")})))
    with pytest.raises(SpecError, match="calls module 'enc'"):
        Graph("g", {}, method(Node("a", "module", "enc", (Ref("x"),))))
    with pytest.raises(SpecError, match="not a valid model graph"):
        Graph.from_json('{"name": "g"}')


# ------------------------------------------------------------------------- every op, on its own ----
class Fn(nn.Module):
    """A conv (so the op sees a computed, differentiable (N, C, H, W) value), then the op under test."""

    def __init__(self, fn):
        super().__init__()
        self.conv = nn.Conv2d(2, 4, 3, padding=1)
        self.fn = fn

    def forward(self, x):
        return self.fn(self.conv(x))


OP_CASES = {
    "relu": lambda h: F.relu(h) + torch.relu(h) + h.relu(),
    "leaky_relu": lambda h: F.leaky_relu(h, 0.2) + nn.functional.leaky_relu(h),
    "elu": lambda h: F.elu(h, 0.7),
    "selu": lambda h: F.selu(h),
    "gelu": lambda h: F.gelu(h) + F.gelu(h, approximate="tanh"),
    "silu": lambda h: F.silu(h),
    "sigmoid": lambda h: torch.sigmoid(h) * h.sigmoid(),
    "tanh": lambda h: torch.tanh(h) - h.tanh(),
    "softplus": lambda h: F.softplus(h, beta=2.0, threshold=1.0),
    "softmax": lambda h: F.softmax(h, dim=1) + torch.softmax(h, -1),
    "arithmetic": lambda h: (h + 1) * (h - 2) / (h.abs() + 1) - torch.sub(h, h * 2, alpha=3) + (-h) ** 2,
    "exp_log_sqrt": lambda h: torch.exp(h) + torch.log(h.abs() + 1) + torch.sqrt(h * h + 1),
    "matmul": lambda h: h @ h.transpose(2, 3),
    "shapes": lambda h: h.view(h.size(0), -1).reshape(-1, 4, 8, 8).flatten(2).unflatten(2, (8, 8))
    .permute(0, 2, 3, 1).contiguous().transpose(1, 3).unsqueeze(0).squeeze(0),
    "flatten_size": lambda h: torch.flatten(h, start_dim=1) * h.shape[1],
    "cat_stack_chunk": lambda h: torch.cat([h.chunk(3, dim=1)[1], torch.chunk(h, 2, 2)[1].repeat(1, 1, 2, 1),
                                            torch.stack([h[:, 0], h[:, 1]], dim=1)], dim=1),
    "getitem": lambda h: h[:, 1:3, ::2, None, ...][..., 0, :] * h[0, :2, ::2],
    "sum_mean": lambda h: h.sum(dim=(2, 3), keepdim=True) + torch.mean(h, 1, keepdim=True) + h.sum(),
    "max_pool2d": lambda h: F.max_pool2d(h, 3, 2, padding=1, ceil_mode=True).sum() + F.max_pool2d(h, 2).mean()
    + F.max_pool2d(h, 2, stride=1, dilation=2).sum(),
    "avg_pool2d": lambda h: F.avg_pool2d(h, 3, 2, 1, ceil_mode=True).sum() + F.avg_pool2d(h, 3, 2, 1,
                                                                                          count_include_pad=False).sum()
    + F.avg_pool2d(h, 2, divisor_override=3).sum(),
    "adaptive_avg_pool2d": lambda h: F.adaptive_avg_pool2d(h, (3, 5)),
    "interpolate": lambda h: F.interpolate(h, scale_factor=2).sum() + F.interpolate(h, size=(5, 11)).sum()
    + F.interpolate(h, scale_factor=1.5, mode="bilinear").sum()
    + F.interpolate(h, size=(13, 6), mode="bilinear", align_corners=True).sum(),
    "norms": lambda h: F.layer_norm(h, (8, 8)) + F.layer_norm(h, (4, 8, 8), h[0] + 1, h[1], eps=1e-3)
    + F.group_norm(h, 2) + F.group_norm(h, 4, h.mean((0, 2, 3)), h.sum((0, 2, 3)), 1e-2)
    + F.batch_norm(h, None, None, training=True) + F.batch_norm(h, None, None, h.sum((0, 2, 3)), h.mean((0, 2, 3)),
                                                                 True, 0.1, 1e-3),
}


def test_every_graph_op_is_implemented_by_both_frameworks():
    import ae_jax.graph as J
    import ae_torch.graph as TG

    assert set(J.OPS) == set(OPS)
    used = {op for case in OP_CASES.values() for op in _ops(case)}
    # the random draws are covered where their noise is supplied (test_port.py, test_port_export.py)
    draws = {"randn_like", "rand_like", "randn", "rand", "dropout"}
    assert used | draws | {"identity", "size"} >= set(OPS) - {"contiguous"}, \
        sorted(set(OPS) - used)
    assert set(TG.OPS) == set(OPS)


def _ops(fn):
    return {n.op for n in trace(Fn(fn).double(), torch.zeros(2, 2, 8, 8, dtype=torch.float64)).methods["forward"].nodes}


@pytest.mark.parametrize("case", sorted(OP_CASES))
def test_each_op_matches_torch_in_value_and_gradient(case):
    """float64: the port's output and its gradient with respect to the input (through a fixed random
    projection of the output) equal torch's to 1e-12."""
    import jax
    import jax.numpy as jnp

    tm = make(lambda: Fn(OP_CASES[case]))
    x = torch.from_numpy(np.random.default_rng(0).normal(size=(2, 2, 8, 8)))
    jm = port(tm.eval(), x)
    out = tm(x.requires_grad_(True))
    w = torch.from_numpy(np.random.default_rng(1).normal(size=tuple(out.shape)))
    (out * w).sum().backward()
    jout = jm(x.detach().numpy())
    np.testing.assert_allclose(np.asarray(jout), out.detach().numpy(), rtol=0, atol=1e-12)
    grad = jax.grad(lambda v: jnp.sum(jm(v) * w.numpy()))(jnp.asarray(x.detach().numpy()))
    np.testing.assert_allclose(np.asarray(grad), x.grad.numpy(), rtol=0, atol=1e-12)


# ------------------------------------------------------------------------ the generated source ----
def _generated(tmp_path, name):
    from ae_parity.codegen import source
    from ae_parity.port import load_source

    cls = MODELS[name]
    tm, x = make(cls), batch(cls)
    jm = port(tm.eval(), x)
    path = tmp_path / f"{name}_nnx.py"
    path.write_text(source(jm.graph, origin="parity_tests/thirdparty_models.py"))
    return tm, x, jm, path, load_source(path, cls.__name__)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_the_generated_source_is_the_port(tmp_path, name):
    """The written class holds the torch names (its state dict loads the torch model's strictly) and
    computes what the graph module computes, bitwise, in both modes; forward, encode and decode."""
    import jax.numpy as jnp

    from ae_jax.weights import load_state_dict, state_dict
    from ae_torch.weights import state_dict as torch_state_dict

    tm, x, jm, path, cls = _generated(tmp_path, name)
    gen = cls(dtype=jnp.float64)
    load_state_dict(gen, torch_state_dict(tm))  # strict
    assert list(state_dict(gen)) == list(state_dict(jm))
    noise = {"noise": {"randn_like": np.random.default_rng(0).standard_normal((len(x), 4))}} if name == "vae" else {}
    for mode in ("eval", "train"):
        getattr(gen, mode)(), getattr(jm, mode)()
        a, b = gen(x.numpy(), **noise), jm(x.numpy(), **noise)
        for u, v in zip(a if isinstance(a, list) else [a], b if isinstance(b, list) else [b]):
            np.testing.assert_array_equal(np.asarray(u), np.asarray(v))
    if name == "vae":
        np.testing.assert_array_equal(np.asarray(gen.decode(gen.encode(x.numpy())[0])),
                                      np.asarray(jm.decode(jm.encode(x.numpy())[0])))
    text = path.read_text()  # readable: the torch names as attributes, torch's ops, the torch lines
    expected = {"vae": ["self.fc_mu = nnx.Linear(", "self.encoder[0][1](", "                F.leaky_relu,\n",
                        "= self.encoder[0][2](encoder_0_1)"],
                "lenet": ["self.bn1 = BatchNorm(4, eps=0.0001, momentum=0.1, affine=False", "F.interpolate(",
                          "F.max_pool2d(leaky_relu, 2, stride=2)"],
                "named": ["self.pool = functools.partial(F.max_pool2d, kernel_size=2, stride=2)",
                          "pool_1 = self.pool(relu_1)"]}[name]  # one pool, called twice
    assert all(e in text for e in expected) and "thirdparty_models.py:" in text, text


def test_the_generated_source_imports_without_torch(tmp_path):
    import subprocess
    import sys

    *_, path, _ = _generated(tmp_path, "lenet")
    code = (f"import sys; sys.path.insert(0, {str(tmp_path)!r}); import lenet_nnx; "
            f"m = lenet_nnx.LeNetAE(); assert 'torch' not in sys.modules, 'torch was imported'")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr


def test_each_layer_source_builds_what_its_builder_builds():
    """``ae_jax.layers.SOURCES``: the source of every graph layer kind, run, gives the builder's module --
    the same variables, shapes and dtypes, and the same output on the same weights."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from ae_core import LAYER_KINDS
    from ae_jax import layers as JL
    from ae_jax.weights import load_state_dict, state_dict

    from ae_jax.layers import to_channels_last

    assert {L.spec for L in LAYER_KINDS.values() if L.spec in JL.SOURCES} >= set(LAYER_SPECS_OF_GRAPHS)
    for spec_cls, write in JL.SOURCES.items():
        kind = LAYER_KINDS[spec_cls.kind]
        spec = kind.example_layer()
        env = {"nnx": nnx, "dtype": jnp.float64, "rngs": nnx.Rngs(0),
               **{name: getattr(JL, name) for name in JL.SOURCE_NAMES}}
        written = eval(write(spec), env)  # noqa: S307 - our own generated source
        built = JL.make_layer(spec, rngs=nnx.Rngs(1), dtype=jnp.float64)
        sd = state_dict(built)
        load_state_dict(written, sd)  # strict: the same names and shapes
        assert {k: v.dtype for k, v in state_dict(written).items()} == {k: v.dtype for k, v in sd.items()}
        assert kind.example_input is not None, f"{spec_cls.kind}: register example_input= beside the example"
        shape = (2, *kind.example_input)  # torch's layout; an image layer's NNX module runs channels-last
        x = jax.random.randint(jax.random.key(0), shape, 0, 2) if spec.input_dtype == "int" else \
            jax.random.normal(jax.random.key(0), shape, jnp.float64)
        x = to_channels_last(x) if spec.image else x
        jax.tree.map(np.testing.assert_array_equal, written(x), built(x))


LAYER_SPECS_OF_GRAPHS = tuple({type(s) for s in (
    *trace(make(T.SamplingConvVAE), batch(T.SamplingConvVAE)).modules.values(),
    *trace(make(T.LeNetAE), batch(T.LeNetAE)).modules.values(), )})


def test_the_port_command_writes_the_source_and_certifies_it(tmp_path, capsys):
    from ae_parity import cli

    out = tmp_path / "named_nnx.py"
    code = cli.main(["port", f"{T.__file__}:NamedConvAE", "--out", str(out), "--batch", "random",
                     "--modes", "eval", "--graph-out", str(tmp_path / "g.json")])
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert out.exists() and Graph.from_json((tmp_path / "g.json").read_text()).name == "NamedConvAE"
    assert "float64  eval" in printed and "float32  eval" in printed and printed.count("agrees") == 2


def test_the_port_command_refuses_an_unsupported_model_and_writes_nothing(tmp_path, capsys):
    from ae_parity import cli

    out = tmp_path / "x_nnx.py"
    assert cli.main(["port", f"{__file__}:Unsupported", "--out", str(out), "--batch", "random",
                     "--input-shape", "64"]) == 2
    err = capsys.readouterr().err
    assert "cannot be ported (5 problem(s))" in err and "torch.sort is not supported" in err
    assert not out.exists()
