"""The divergence finder on models written the way people publish them (parity_tests/thirdparty_models.py).

Each correct hand-written port passes in float32 (against the float64 reference) and float64, in eval and,
with BatchNorm, train mode; each planted bug is reported at its place with its hint: a transposed or
unflipped kernel, a wrong padding, interpolation mode or leaky slope, exp(logvar) for exp(0.5 * logvar),
float32 parameters in a float64 run, BatchNorm eps / momentum / affine, and sampling inside the forward.
"""

import functools
import json

import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx
from torch import nn

from ae_jax.numerics import enable_x64
from ae_parity.compare import PortMismatchError, compare
from parity_tests import thirdparty_models as T

enable_x64()
N = 4  # batch


def nhwc(x):
    return x.transpose(0, 2, 3, 1)


def torch_model(cls, **kwargs):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return cls(**kwargs)


def run(torch_cls, flax_model, *, dtype="float64", mode="eval", latent=None, torch_kwargs=None, **kwargs):
    tm = torch_model(torch_cls, **(torch_kwargs or {}))
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(N, *torch_cls.input_shape))
    if latent:
        kwargs["forward_kwargs"] = {"eps": rng.standard_normal((N, latent))}
    return compare(tm, flax_model, x, dtype=dtype, mode=mode, flax_input=nhwc, **kwargs)


def jdt(dtype):
    return {"float32": jnp.float32, "float64": jnp.float64}[dtype]


def named(dtype="float64", **kw):
    return T.NamedConvAEFlax(nnx.Rngs(0), jdt(dtype), **kw)


def lenet(dtype="float64", **kw):
    return T.LeNetAEFlax(nnx.Rngs(0), jdt(dtype), **kw)


def vae(dtype="float64", **kw):
    return T.ConvVAEFlax(nnx.Rngs(0), jdt(dtype), **kw)


CORRECT = {
    "named": lambda dtype, mode: run(T.NamedConvAE, named(dtype), dtype=dtype, mode=mode),
    "lenet": lambda dtype, mode: run(T.LeNetAE, lenet(dtype), dtype=dtype, mode=mode, rules=T.BN_STATS_RULES),
    "vae": lambda dtype, mode: run(T.ConvVAE, vae(dtype), dtype=dtype, mode=mode, latent=4),
}
GRID = [("named", d, "eval") for d in ("float32", "float64")]
GRID += [(m, d, mode) for m in ("lenet", "vae") for d in ("float32", "float64") for mode in ("eval", "train")]


@functools.cache
def correct(model, dtype="float64", mode="eval"):  # each comparison runs once, whichever tests read it
    return CORRECT[model](dtype, mode)


@pytest.mark.parametrize("model,dtype,mode", GRID)
def test_the_correct_ports_pass(model, dtype, mode):
    report = correct(model, dtype, mode)
    assert report.ok, report.table()
    assert {"forward", "grad", "step"} <= {e.stage for e in report.entries}
    if dtype == "float32":  # every float row judged against the float64 reference, each side's error reported
        for stage in ("forward", "grad", "step"):
            rows = report.stage(stage)
            assert rows and all(e.kind == "ref" and e.torch_err is not None and e.jax_err is not None for e in rows)


def test_a_shared_module_is_compared_call_by_call_and_square_activations_in_their_layout():
    report = correct("named")
    rows = {e.name: e for e in report.stage("forward")}
    assert rows["pool"].shape == (N, 4, 4, 4) and rows["t_conv1"].shape == (N, 4, 4, 4)  # C == H == W
    assert rows["pool"].ok and rows["pool#2"].ok and rows["pool#2"].shape == (N, 4, 2, 2)
    assert rows["relu"].note == "= the input of pool; flax channels-last"  # F.relu, compared where flax has it
    assert rows["relu#2"].note.startswith("= the input of pool#2")
    assert "calls differ" not in " ".join(report.notes)


def _first(report):
    assert report.first is not None, report.table()
    return report.first


PLANTED = {
    # name: (report, stage, where (the reported name or one of its ops), hint text)
    "transposed-conv flip": (lambda: run(T.NamedConvAE, named(flip=False)), "forward", "t_conv1",
                             "transpose_kernel=True"),
    "conv padding": (lambda: run(T.NamedConvAE, named(conv2_padding="VALID")), "forward", "conv2",
                     "padding=((1, 1), (1, 1))"),
    "leaky slope": (lambda: run(T.LeNetAE, lenet(slope=0.01), rules=T.BN_STATS_RULES), "forward", "leaky_relu",
                    "negative_slope=0.2"),
    "interpolate mode": (lambda: run(T.LeNetAE, lenet(upsample=T.upsample_bilinear), rules=T.BN_STATS_RULES),
                         "forward", "interpolate", "mode='nearest'"),
    "batchnorm eps": (lambda: run(T.LeNetAE, lenet(eps=1e-5), rules=T.BN_STATS_RULES), "forward", "bn1",
                      "epsilon=0.0001"),
    "batchnorm momentum": (lambda: run(T.LeNetAE, lenet(momentum=0.9), mode="train", rules=T.BN_STATS_RULES),
                           "buffer", "bn1.running_mean", "momentum=0.9"),
    "exp(logvar)": (lambda: run(T.ConvVAE, vae(std_scale=1.0), latent=4), "forward", "exp", "exp(0.5 * logvar)"),
    "float32 parameters": (lambda: run(T.ConvVAE, vae(linear=lambda i, o: nnx.Linear(i, o, rngs=nnx.Rngs(0))),
                                       latent=4), "dtype", "fc_mu.weight", "param_dtype=jnp.float64"),
    "linear transpose": (lambda: run(T.ConvVAE, vae(latent_dim=64, linear=lambda i, o: T.Dense(i, o)), latent=64,
                                     torch_kwargs=dict(latent_dim=64), rules=T.DENSE_RULES_NO_TRANSPOSE),
                         "forward", "fc_mu", "weight.T"),
    "sampling in forward": (lambda: run(T.SamplingConvVAE, T.SamplingConvVAEFlax(nnx.Rngs(0))), "random",
                            "randn_like", "supply the noise"),
}


@functools.cache
def planted(name):
    return PLANTED[name][0]()


@pytest.mark.parametrize("name", sorted(PLANTED))
def test_a_planted_bug_is_reported_at_its_place_with_its_hint(name):
    _, stage, where, hint = PLANTED[name]
    report = planted(name)
    first = _first(report)
    assert first.stage == stage and where in first.name.split(", "), report.table()
    assert hint in first.hint, first.hint
    if name == "conv padding":  # 'VALID' makes 6x6 where torch has 8x8: a shape mismatch, said as such
        assert "shape mismatch" in next(e for e in report.entries if not e.ok).note
    before = report.entries[:report.entries.index(next(e for e in report.entries if not e.ok))]
    assert all(e.ok for e in before)  # nothing before the planted place is blamed


def test_functional_code_is_blamed_not_the_next_linear():
    """exp(logvar): the divergence appears in reparameterize's ops; decoder_input (4 -> 32, whose transposed
    kernel could not even have loaded) is not blamed, and no non-square Linear is told about weight.T."""
    report = planted("exp(logvar)")
    first = _first(report)
    assert first.name == "mul, exp, mul#2, add" and "decoder_input" not in first.name
    for e in report.entries:
        if e.torch_type == "Linear":
            assert "weight.T" not in e.hint, (e.name, e.hint)


def test_a_float64_run_with_naive_nnx_batchnorm_reports_its_float32_statistics():
    bn = lambda c: nnx.BatchNorm(c, use_scale=False, use_bias=False, epsilon=1e-4, momentum=0.9,  # noqa: E731
                                 rngs=nnx.Rngs(0), dtype=jnp.float64, param_dtype=jnp.float64)
    first = _first(run(T.LeNetAE, lenet(batchnorm=bn)))
    assert (first.stage, first.name) == ("dtype", "bn1.running_mean") and "nnx.BatchNorm keeps" in first.hint


def test_nnx_batchnorm_without_scale_and_bias_ports_affine_false():
    """The rule table handles affine=False as it is: nnx.BatchNorm(use_scale=False, use_bias=False) has no
    scale / bias, and its bindings skip them (float32, eval mode: its statistics are float32 anyway)."""
    bn = lambda c: nnx.BatchNorm(c, use_scale=False, use_bias=False, epsilon=1e-4, rngs=nnx.Rngs(0))  # noqa: E731
    report = run(T.LeNetAE, lenet("float32", batchnorm=bn), dtype="float32")
    assert report.ok, report.table()


def test_a_batchnorm_with_affine_on_one_side_only_is_named_with_the_fix():
    bn = lambda c: nnx.BatchNorm(c, epsilon=1e-4, momentum=0.9, rngs=nnx.Rngs(0))  # noqa: E731  (scale and bias)
    with pytest.raises(PortMismatchError) as info:
        run(T.LeNetAE, lenet("float32", batchnorm=bn), dtype="float32")
    assert "only in flax:  bn1.weight" in str(info.value)
    assert "BatchNorm2d(affine=False)" in str(info.value) and "use_scale=False, use_bias=False" in str(info.value)


class ThreeOutputs(T.ConvVAEFlax):
    def __call__(self, x, eps):
        recon, _, mu, log_var, _ = super().__call__(x, eps)
        return recon, mu, log_var


def test_list_outputs_are_compared_leaf_by_leaf_and_another_structure_is_one_entry():
    report = correct("vae")
    names = [e.name for e in report.stage("forward") if e.name.startswith("<output>")]
    assert names == [f"<output>[{i}]" for i in range(5)]
    other = run(T.ConvVAE, ThreeOutputs(nnx.Rngs(0)), latent=4)
    bad = [e for e in other.entries if not e.ok]
    assert [(e.name, e.kind) for e in bad] == [("<output>", "check")], other.table()
    assert "torch list[5]" in bad[0].note and "flax tuple[3]" in bad[0].note
    assert any(e.name == "<output>[0]" and e.ok for e in other.entries)  # the reconstructions still compared


class Gated(nn.Module):  # data-dependent control flow: torch.fx cannot trace it
    input_shape = (5,)

    def __init__(self):
        super().__init__()
        self.enc, self.dec = nn.Linear(5, 4), nn.Linear(4, 5)

    def forward(self, x):
        h = self.enc(x)
        if h.sum() > -1e9:
            h = torch.tanh(h)
        return {"recon": self.dec(h), "code": h}


class GatedFlax(nnx.Module):
    def __init__(self, tanh=True):
        f64 = dict(dtype=jnp.float64, param_dtype=jnp.float64, rngs=nnx.Rngs(0))
        self.enc, self.dec, self.tanh = nnx.Linear(5, 4, **f64), nnx.Linear(4, 5, **f64), tanh

    def __call__(self, x):
        h = self.enc(x)
        h = jnp.tanh(h) if self.tanh else h
        return {"recon": self.dec(h), "code": h}


def test_untraceable_forwards_fall_back_to_module_hooks():
    tm = torch_model(Gated).double()
    x = np.random.default_rng(0).normal(size=(N, 5))
    report = compare(tm, GatedFlax(), x)
    assert report.ok, report.table()
    assert any("torch.fx cannot trace" in n for n in report.notes)
    assert [e.name for e in report.stage("forward")][-2:] == ["<output>['recon']", "<output>['code']"]
    first = _first(compare(tm, GatedFlax(tanh=False), x))
    assert first.name == "(code before dec)", first  # the code between modules, unnamed but placed


def test_diagnose_gives_the_same_json_every_time(capsys):
    from ae_parity import cli

    args = ["diagnose", "--torch", f"{T.__file__}:NamedConvAE", "--flax", f"{T.__file__}:NamedConvAEFlaxNoFlip32",
            "--flax-layout", "nhwc", "--batch-size", "4", "--dtype", "float32", "--json"]
    outputs = []
    for i in range(5):
        torch.manual_seed(100 + i)  # the caller's RNG state does not matter
        np.random.seed(100 + i)
        assert cli.main(args) == 1
        outputs.append(capsys.readouterr().out)
    assert all(o == outputs[0] for o in outputs)
    report = json.loads(outputs[0])
    assert report["first_divergence"]["name"] == "t_conv1"


class TwoLinears(nn.Module):
    input_shape = (5,)

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(5, 4), nn.Linear(4, 5)

    def forward(self, x):
        return self.b(self.a(x))


class TwoLinearsFlax(nnx.Module):  # planted: an activation torch does not have
    def __init__(self):
        f64 = dict(dtype=jnp.float64, param_dtype=jnp.float64, rngs=nnx.Rngs(0))
        self.a, self.b = nnx.Linear(5, 4, **f64), nnx.Linear(4, 5, **f64)

    def __call__(self, x):
        return self.b(jnp.tanh(self.a(x)))


def test_flax_code_where_torch_has_none_is_named():
    report = compare(torch_model(TwoLinears).double(), TwoLinearsFlax(), np.random.default_rng(0).normal(size=(N, 5)))
    first = _first(report)
    assert first.name == "(flax code before b)" and "check the flax code between them" in first.hint


def test_diagnose_supplies_the_vaes_noise_and_names_it_when_missing(capsys):
    """A VAE port whose forward takes its sampling noise: ``--noise eps=4`` gives both models the same seeded
    standard normal array and the correct port agrees; without it, one usage line (exit 2) says how."""
    from ae_parity import cli

    args = ["diagnose", "--torch", f"{T.__file__}:ConvVAE", "--flax", f"{T.__file__}:ConvVAEFlax",
            "--flax-layout", "nhwc", "--batch-size", "4", "--dtype", "float64"]
    assert cli.main(args + ["--noise", "eps=4"]) == 0, capsys.readouterr()
    assert "no divergence" in capsys.readouterr().out
    assert cli.main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "needs 'eps'" in err and "--noise eps=SHAPE" in err
    with pytest.raises(SystemExit):
        cli.main(args + ["--noise", "eps"])
    assert "expected NAME=SHAPE" in capsys.readouterr().err


class Kinked(nn.Module):
    """A ReLU input that float32 rounds onto the kink: (h + 1) - 1 is exactly 0 in float32 where h = 1e-9."""

    def __init__(self):
        super().__init__()
        self.lin, self.out = nn.Linear(3, 3), nn.Linear(3, 1)

    def forward(self, x):
        return self.out(torch.relu((self.lin(x) + 1.0) - 1.0))


class KinkedFlax(nnx.Module):
    def __init__(self):
        self.lin = nnx.Linear(3, 3, rngs=nnx.Rngs(0))
        self.out = nnx.Linear(3, 1, rngs=nnx.Rngs(0))

    def __call__(self, x):
        return self.out(nnx.relu((self.lin(x) + 1.0) - 1.0))


def test_float32_gradients_of_a_port_follow_its_own_relu_kinks():
    """An element whose ReLU input is 1e-9 in float64 and 0 in torch's float32 (its add and sub round
    separately), where the gradient is 0 instead of 1, and that unit's whole bias gradient with it. Measured
    here: XLA's compiled gradient keeps 1e-9 (its simplifier rewrites (h + 1) - 1 to h), so JAX's and
    torch's float32 gradients differ by 14% relative -- a fixed float32 tolerance calls that a divergence,
    and which side each framework lands on is the compiler's choice. The JAX port's ReLU inputs are recorded from its
    gradient's own computation and paired with torch's calls; each side's reference follows its run across
    the kink, so both are judged within rounding of their own reference and the verdict is about the port."""
    tm = torch_model(Kinked)
    with torch.no_grad():
        tm.lin.weight.copy_(torch.eye(3))
        tm.lin.bias.zero_()
        tm.out.weight.copy_(torch.tensor([[2.0, 3.0, 5.0]]))
    x = np.array([[1e-9, 0.5, -0.5], [-0.25, 0.5, 0.25]], np.float32)  # column 0: only the kink is positive
    report = compare(tm, KinkedFlax(), x, dtype="float32")
    assert report.ok, report.table()
    assert any("torch 1 of 1 near the kink" in n for n in report.notes), report.notes
    row = next(e for e in report.stage("grad") if e.name == "lin.bias")
    assert max(row.jax_err, row.torch_err) < 4 * np.finfo(np.float32).eps  # each against its own reference
    plain = torch_model(Kinked).double()  # float64's own kinks: that bias gradient is far from torch's 0
    plain.load_state_dict(tm.double().state_dict())
    out = plain(torch.from_numpy(x.astype(np.float64)))
    target = np.random.default_rng(0).uniform(size=(2, 1))  # compare()'s default target for this output
    torch.nn.functional.mse_loss(out, torch.from_numpy(target)).backward()
    assert abs(plain.lin.bias.grad[0].item()) > 0.1
