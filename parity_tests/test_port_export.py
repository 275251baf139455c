"""The port where torch.fx stops: torch.export, random factories, defaulted arguments.

The models are written the way published code writes them: a forward that accepts flat or image input
(``if x.dim() == 2:``), a hand-written recurrent loop over a digit's rows (``for t in range(x.size(1))``,
one cell called 28 times), a VAE drawing ``torch.randn(x.size(0), latent, device=x.device)``, a forward
with an optional mask. fx cannot trace the first two (Python control flow on a traced value); torch.export
can, and the port is the same native NNX module, compared like every other (float64 within 1e-12,
float32 against the float64 reference).
"""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ae_jax.numerics import enable_x64
from ae_parity.compare import compare
from ae_parity.port import certificate, port
from ae_torch.trace import PortError, trace

from helpers import assert_port_agrees

enable_x64()
TORCH_DTYPES = {"float32": torch.float32, "float64": torch.float64}


class FlexibleConvAE(nn.Module):
    """Takes (N, 784) or (N, 1, 28, 28): the shape decides, which fx cannot trace."""

    def __init__(self):
        super().__init__()
        self.enc = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.LeakyReLU(0.2), nn.MaxPool2d(2))
        self.fc = nn.Linear(4 * 14 * 14, 8)
        self.defc = nn.Linear(8, 4 * 14 * 14)
        self.up = nn.Upsample(scale_factor=2)
        self.out = nn.Conv2d(4, 1, 3, padding=1)

    def forward(self, x):
        flat = x.dim() == 2
        if flat:
            x = x.view(-1, 1, 28, 28)
        z = self.fc(self.enc(x).flatten(1))
        h = F.relu(self.defc(z)).view(x.size(0), 4, 14, 14)
        y = torch.sigmoid(self.out(self.up(h)))
        return y.view(x.size(0), -1) if flat else y


class RowRNN(nn.Module):
    """A digit's rows through a hand-written tanh RNN cell: a Python loop over x.size(1), the same two
    Linears called at every step (shared modules)."""

    def __init__(self, hidden=16):
        super().__init__()
        self.i2h = nn.Linear(28, hidden)
        self.h2h = nn.Linear(hidden, hidden, bias=False)
        self.code = nn.Linear(hidden, 6)
        self.dec = nn.Linear(6, 784)

    def forward(self, x):
        h = torch.tanh(self.i2h(x[:, 0]))
        for t in range(1, x.size(1)):
            h = torch.tanh(self.i2h(x[:, t]) + self.h2h(h))
        return torch.sigmoid(self.dec(self.code(h))).view(-1, 28, 28)


class FactoryVAE(nn.Module):
    """The reparameterisation drawn with torch.randn(batch, latent, device=...), a dither of the code with
    torch.rand_like and a torch.rand output mask."""

    def __init__(self):
        super().__init__()
        self.enc = nn.Linear(784, 2 * 5)
        self.dec = nn.Linear(5, 784)

    def forward(self, x):
        mu, logvar = self.enc(x).chunk(2, dim=1)
        eps = torch.randn(x.size(0), 5, device=x.device)
        keep = torch.rand(x.shape[0], 784).to(x.device)
        z = mu + eps * torch.exp(0.5 * logvar) + 1e-2 * (torch.rand_like(mu) - 0.5) if self.training else mu
        return torch.sigmoid(self.dec(z)) * (0.9 + 0.1 * keep), mu, logvar


class OptionalMask(nn.Module):
    """forward(x, mask=None): traced with the input only, the mask keeps its default."""

    def __init__(self):
        super().__init__()
        self.enc, self.dec = nn.Linear(784, 12), nn.Linear(12, 784)

    def forward(self, x, mask=None):
        if mask is not None:
            x = x * mask
        return torch.sigmoid(self.dec(F.elu(self.enc(x))))


def _make(cls, dtype):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return cls().to(TORCH_DTYPES[dtype])


def _x(shape, dtype, n=4):
    return torch.from_numpy(np.random.default_rng(1).random((n, *shape))).to(TORCH_DTYPES[dtype])


@pytest.mark.parametrize("cls, shape", [(FlexibleConvAE, (784,)), (FlexibleConvAE, (1, 28, 28)), (RowRNN, (28, 28))])
def test_fx_cannot_trace_it_torch_export_does(cls, shape):
    with pytest.raises(Exception, match="control flow|cannot be interpreted as an integer"):
        torch.fx.symbolic_trace(cls())
    graph = trace(_make(cls, "float64"), _x(shape, "float64", 2))
    if cls is RowRNN:  # the loop unrolled: 28 calls of i2h, 27 of the shared h2h, one module each
        calls = [n.target for n in graph.methods["forward"].nodes if n.op == "module"]
        assert calls.count("i2h") == 28 and calls.count("h2h") == 27 and list(graph.modules) == ["i2h", "h2h", "code",
                                                                                                "dec"]


@pytest.mark.parametrize("cls, shape, dtype, mode", [
    (FlexibleConvAE, (784,), "float64", "eval"), (FlexibleConvAE, (784,), "float64", "train"),
    (FlexibleConvAE, (1, 28, 28), "float32", "train"), (RowRNN, (28, 28), "float64", "eval"),
    (RowRNN, (28, 28), "float32", "eval"), (OptionalMask, (784,), "float64", "eval")])
def test_an_exported_model_ports_and_agrees(cls, shape, dtype, mode):
    """The batch stays symbolic: traced on 2 examples, compared on 4 -- forward, gradients, an Adam step."""
    tm = _make(cls, dtype).train(mode == "train")
    jm = port(tm, _x(shape, dtype, 2))
    report = compare(tm, jm, _x(shape, dtype).numpy(), dtype=dtype, mode=mode)
    assert_port_agrees(report, dtype)


def test_torch_randn_and_rand_are_supplied_noise():
    """torch.randn / torch.rand of (batch, ...) are per-example draws like randn_like: the certificate gives
    both frameworks the same numbers (after showing the traced graph is the model under torch's seed)."""
    tm = _make(FactoryVAE, "float64")
    graph = trace(tm, _x((784,), "float64", 2))
    assert graph.noise_shapes() == {"randn": ("normal", (5,), 1.0), "rand": ("uniform", (784,), 1.0),
                                    "rand_like": ("uniform", (5,), 1.0)}
    x = _x((784,), "float32", 6).numpy()
    rows, notes = certificate(tm, x, make_flax=lambda dt: port(tm, torch.as_tensor(x[:2]).double(), dtype=dt),
                              modes=("train",))
    assert all(r.ok for _, _, r in rows) and "randn, rand, rand_like" in notes[0]


def test_a_factory_draw_without_the_batch_is_refused():
    class Shared(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 4)

        def forward(self, x):
            return self.fc(x) + torch.randn(4)

    with pytest.raises(PortError, match=r"torch.randn\(4,\): the first size must be the batch size"):
        trace(Shared(), torch.zeros(2, 4))


def test_when_neither_front_end_can_every_reason_is_given():
    """A branch on a value (not a shape): fx and torch.export both refuse, and the error says both."""
    class ValueBranch(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 4)

        def forward(self, x):
            h = self.fc(x)
            return h if h.mean() > 0 else -h

    with pytest.raises(PortError) as e:
        trace(ValueBranch(), torch.zeros(2, 4))
    assert "torch.fx cannot trace it" in str(e.value) and "torch.export cannot export it either" in str(e.value)


def test_an_exported_parameter_used_outside_its_layer_is_reported_with_its_line():
    class TiedByHand(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(784, 8)

        def forward(self, x):
            if x.dim() == 4:
                x = x.flatten(1)
            return torch.sigmoid(F.linear(self.fc(x), self.fc.weight.t()))

    with pytest.raises(PortError, match=r"torch.export traced it, and its program has:\n.*test_port_export.py:\d+: "
                                        r".*fc.weight used outside its own layer"):
        trace(TiedByHand(), torch.zeros(2, 784))


def test_the_port_command_writes_and_certifies_an_exported_model(tmp_path, capsys):
    """``ae-parity port FILE.py:Class --kwargs JSON``: an exported model's written NNX source (the unrolled
    loop, one attribute per torch submodule) certified against the torch model."""
    from ae_parity import cli

    out = tmp_path / "rnn_nnx.py"
    code = cli.main(["port", f"{__file__}:RowRNN", "--kwargs", '{"hidden": 8}', "--out", str(out), "--batch", "random",
                     "--input-shape", "28,28", "--modes", "eval", "--batch-size", "4"])
    printed = capsys.readouterr().out
    assert code == 0, printed
    text = out.read_text()
    assert "\nimport torch" not in text and text.count("self.h2h(") == 27 and "nnx.Linear(28, 8" in text
    assert printed.count("agrees") == 2 and "4 layers" in printed
