"""The automatic port's layer coverage: each layer torch code commonly uses, with its notable arguments.

Every model below is written the way people publish torch code (named attributes, a functional
forward, tuple outputs unpacked), traced and ported with no hand-written Flax code, and compared
(``compare``) in float64 (forward within 1e-12) and float32 (the float64 reference criterion), in eval
and, where the mode matters, train mode -- forward values, gradients and an optimizer step. Covered:
Conv2d (every padding: ints, (ph, pw), 'same' with an odd and an even kernel, 'valid'; rectangular
kernels and strides, dilation, groups, depthwise; padding modes zeros / reflect / replicate / circular),
Conv1d likewise, ConvTranspose2d (padding beyond kernel_size - 1, output_padding, rectangular, dilation,
groups), BatchNorm1d/2d without running statistics and with the cumulative average, LayerNorm,
GroupNorm, PReLU, Embedding (padding_idx), LSTM and GRU (stacked, bias-free, batch_first either way, an
initial state, the tuple outputs); the functional forms F.layer_norm / F.group_norm / F.batch_norm.
"""


import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ae_core import LAYER_KINDS, ModelSpec
from ae_core import layers as L
from ae_core.graph import Graph
from ae_jax.convforms import conv_forms
from ae_jax.numerics import enable_x64
from ae_parity.compare import compare
from ae_parity.port import port
from ae_torch.trace import PortError, trace

from helpers import assert_port_agrees

enable_x64()
TORCH_DTYPES = {"float32": torch.float32, "float64": torch.float64}
SAME_EVEN = pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")


# ------------------------------------------------------------------------------------- models ----
class ConvPaddings(nn.Module):
    """Conv2d paddings and shapes: 'same' (odd and even kernels: torch puts the odd pixel after), (ph, pw),
    a rectangular kernel and stride, dilation, groups, a depthwise conv, 'valid'."""

    input_shape = (3, 9, 10)

    def __init__(self):
        super().__init__()
        self.same = nn.Conv2d(3, 6, 3, padding="same")
        self.rect = nn.Conv2d(6, 6, (3, 5), stride=(2, 1), padding=(1, 2), groups=3)
        self.depthwise = nn.Conv2d(6, 6, 3, padding=2, dilation=2, groups=6, bias=False)
        self.even = nn.Conv2d(6, 4, (2, 4), padding="same", dilation=(1, 2))
        self.valid = nn.Conv2d(4, 2, (2, 3), stride=(1, 2), padding="valid", dilation=(2, 1))

    def forward(self, x):
        x = F.relu(self.same(x))
        x = torch.tanh(self.rect(x))
        x = self.depthwise(x) + x
        return self.valid(torch.sigmoid(self.even(x)))


class ConvPaddingModes(nn.Module):
    """padding_mode reflect / replicate / circular (and zeros), symmetric and per-dimension."""

    input_shape = (2, 7, 8)

    def __init__(self):
        super().__init__()
        self.reflect = nn.Conv2d(2, 4, 3, padding=1, padding_mode="reflect")
        self.replicate = nn.Conv2d(4, 4, (3, 5), stride=2, padding=(2, 1), padding_mode="replicate")
        self.circular = nn.Conv2d(4, 3, 3, padding="same", padding_mode="circular", dilation=2)
        self.zeros = nn.Conv2d(3, 2, 1)

    def forward(self, x):
        return self.zeros(F.elu(self.circular(F.relu(self.replicate(F.relu(self.reflect(x)))))))


class Conv1dNet(nn.Module):
    """Conv1d on (N, C, L): 'same', stride, dilation, groups, reflect padding, 'valid'; BatchNorm1d on
    (N, C, L) between them."""

    input_shape = (4, 16)

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv1d(4, 8, 5, padding="same")
        self.bn = nn.BatchNorm1d(8)
        self.conv2 = nn.Conv1d(8, 8, 3, stride=2, padding=2, dilation=2, groups=4, padding_mode="reflect")
        self.conv3 = nn.Conv1d(8, 2, 4, padding="valid", bias=False)

    def forward(self, x):
        x = F.relu(self.bn(self.conv1(x)))
        return self.conv3(torch.tanh(self.conv2(x)))


class ConvTransposes(nn.Module):
    """ConvTranspose2d: padding beyond kernel_size - 1 (the output cropped), output_padding, rectangular
    kernel and stride, dilation, groups."""

    input_shape = (4, 4, 5)

    def __init__(self):
        super().__init__()
        self.crop = nn.ConvTranspose2d(4, 6, 3, stride=2, padding=3, output_padding=1)
        self.rect = nn.ConvTranspose2d(6, 4, (3, 2), stride=(1, 2), padding=(1, 0), output_padding=(0, 1),
                                       dilation=(2, 1))
        self.dilated = nn.ConvTranspose2d(4, 4, 3, stride=2, padding=1, dilation=2, groups=2, output_padding=1)
        self.wide = nn.ConvTranspose2d(4, 2, 2, stride=2, padding=(2, 1), groups=2, bias=False)

    def forward(self, x):
        x = F.leaky_relu(self.crop(x), 0.1)
        x = F.relu(self.rect(x))
        return self.wide(torch.tanh(self.dilated(x)))


class BatchStats(nn.Module):
    """BatchNorm2d / BatchNorm1d(track_running_stats=False): the batch's statistics in both modes, no
    buffers; BatchNorm2d(momentum=None): torch's cumulative running average; F.batch_norm on the batch."""

    input_shape = (2, 6, 6)

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 4, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(4, track_running_stats=False)
        self.cumulative = nn.BatchNorm2d(4, momentum=None, affine=False)
        self.fc = nn.Linear(4 * 6 * 6, 8)
        self.bn1 = nn.BatchNorm1d(8, affine=False, track_running_stats=False)
        self.out = nn.Linear(8, 2 * 6 * 6)

    def forward(self, x):
        x = F.relu(self.bn(self.conv(x)))
        x = self.cumulative(F.relu(F.batch_norm(x, None, None, training=True, eps=1e-3)))
        x = F.relu(self.bn1(self.fc(x.flatten(1))))
        return self.out(x).view(-1, 2, 6, 6)


class Norms(nn.Module):
    """LayerNorm over (C, H, W) and over the last axis (no affine / no bias), GroupNorm (affine and not),
    PReLU with one slope and per channel, F.layer_norm / F.group_norm."""

    input_shape = (4, 5, 6)

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(4, 6, 3, padding=1)
        self.ln = nn.LayerNorm((6, 5, 6))
        self.act = nn.PReLU(6, init=0.1)
        self.gn = nn.GroupNorm(3, 6, eps=1e-4)
        self.gn_plain = nn.GroupNorm(2, 6, affine=False)
        self.row_norm = nn.LayerNorm(6, elementwise_affine=False)
        self.bias_free = nn.LayerNorm(6, eps=1e-3, bias=False)
        self.prelu = nn.PReLU()

    def forward(self, x):
        h = self.act(self.ln(self.conv(x)))
        h = self.gn_plain(self.prelu(self.gn(h)))
        h = self.bias_free(self.row_norm(h)) + F.layer_norm(h, h.shape[-2:], eps=1e-4)
        return F.group_norm(h, 2) * torch.sigmoid(h)


class ConditionalAE(nn.Module):
    """A conditional autoencoder: the label's embedding (padding_idx 0: "no label") joins the code."""

    input_shape = (12,)
    extra = {"labels": lambda rng, n: rng.integers(0, 5, size=n)}

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(5, 3, padding_idx=0)
        self.enc = nn.Linear(12, 4)
        self.dec = nn.Linear(7, 12)

    def forward(self, x, labels):
        z = torch.cat([torch.tanh(self.enc(x)), self.embed(labels)], dim=1)
        return self.dec(z)


class LSTMAE(nn.Module):
    """A sequence autoencoder: a 2-layer LSTM encoder, its last hidden state to a code, the code as the
    decoder's initial state (time-major, bias-free decoder LSTM); tuple outputs unpacked."""

    input_shape = (5, 3)

    def __init__(self):
        super().__init__()
        self.encoder = nn.LSTM(3, 4, num_layers=2, batch_first=True)
        self.to_code = nn.Linear(4, 2)
        self.to_state = nn.Linear(2, 4)
        self.decoder = nn.LSTM(3, 4, bias=False)
        self.out = nn.Linear(4, 3)

    def forward(self, x):
        _, (h, c) = self.encoder(x)
        code = self.to_code(h[-1])
        h0 = torch.tanh(self.to_state(code)).unsqueeze(0)
        out, _ = self.decoder(x.transpose(0, 1), (h0, c[-1:]))
        return self.out(out.transpose(0, 1))


class GRUAE(nn.Module):
    """A GRU sequence autoencoder: a 2-layer GRU encoder, h_n[-1] as the code, a GRU decoder started from
    it on the repeated code."""

    input_shape = (6, 3)

    def __init__(self):
        super().__init__()
        self.encoder = nn.GRU(3, 4, num_layers=2, batch_first=True)
        self.decoder = nn.GRU(4, 4, batch_first=True)
        self.out = nn.Linear(4, 3)

    def forward(self, x):
        _, h = self.encoder(x)
        code = h[-1]
        out, h_dec = self.decoder(code.unsqueeze(1).repeat(1, x.shape[1], 1), code.unsqueeze(0))
        return self.out(out) + h_dec[0].sum()


MODELS = {"conv_paddings": ConvPaddings, "conv_padding_modes": ConvPaddingModes, "conv1d": Conv1dNet,
          "conv_transposes": ConvTransposes, "batch_stats": BatchStats, "norms": Norms, "embedding": ConditionalAE,
          "lstm": LSTMAE, "gru": GRUAE}
MODE_MATTERS = {"conv1d", "batch_stats"}  # BatchNorm: batch statistics and running updates in train mode


def make(cls, dtype="float64"):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return cls().to(TORCH_DTYPES[dtype])


def inputs(cls, dtype="float64", n=3):
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.normal(size=(n, *cls.input_shape))).to(TORCH_DTYPES[dtype])
    return x, {k: torch.from_numpy(draw(rng, n)) for k, draw in getattr(cls, "extra", {}).items()}


def _compare(name, dtype, mode):
    cls = MODELS[name]
    tm = make(cls, dtype).train(mode == "train")
    x, extra = inputs(cls, dtype)
    jm = port(tm, x, *extra.values())
    return compare(tm, jm, x.numpy(), dtype=dtype, mode=mode, forward_kwargs={k: v.numpy() for k, v in extra.items()})


CASES = [(name, dtype, mode) for name in sorted(MODELS) for dtype in ("float64", "float32")
         for mode in (("eval", "train") if name in MODE_MATTERS else ("eval",))]


@SAME_EVEN
@pytest.mark.parametrize("name, dtype, mode", CASES)
def test_a_model_using_the_layer_ports_and_agrees(name, dtype, mode):
    report = _compare(name, dtype, mode)
    assert_port_agrees(report, dtype)


# ------------------------------------------------------------------------- the generated source ----
@SAME_EVEN
@pytest.mark.parametrize("name", ["conv_transposes", "batch_stats", "embedding", "lstm"])
def test_the_generated_source_computes_what_the_graph_module_computes(tmp_path, name):
    """``ae-parity port``'s written NNX class: the torch names (strict loading), the graph module's outputs
    bitwise in both modes -- tuple outputs of the recurrent layers and a second (integer) input included."""
    import jax.numpy as jnp

    from ae_jax.weights import load_state_dict, state_dict
    from ae_parity.codegen import source
    from ae_parity.port import load_source
    from ae_torch.weights import state_dict as torch_state_dict

    cls = MODELS[name]
    tm, (x, extra) = make(cls), inputs(cls)
    jm = port(tm, x, *extra.values())
    path = tmp_path / f"{name}_nnx.py"
    path.write_text(source(jm.graph, origin="parity_tests/test_port_layers.py"))
    gen = load_source(path, cls.__name__)(dtype=jnp.float64)
    load_state_dict(gen, torch_state_dict(tm))
    assert list(state_dict(gen)) == list(state_dict(jm))
    more = {k: v.numpy() for k, v in extra.items()}
    for mode in ("eval", "train"):
        getattr(gen, mode)(), getattr(jm, mode)()
        np.testing.assert_array_equal(np.asarray(gen(x.numpy(), **more)), np.asarray(jm(x.numpy(), **more)))
    text = path.read_text()
    expected = {"conv_transposes": ["self.crop = TorchConvTranspose(4, 6, (3, 3), strides=(2, 2), padding=((-1, 0), "
                                    "(-1, 0))", "groups=2", "TorchConvTranspose(6, 4, (3, 2)", "kernel_dilation=(2, 1)",
                                    "conv_general_dilated=ConvForm('auto')", "to_channels_last("],
                "batch_stats": ["track_running_stats=False", "momentum=None", "F.batch_norm("],
                "embedding": ["self.embed = Embedding(5, 3, padding_idx=0", "def __call__(self, x, labels, noise=None)"],
                "lstm": ["LSTM(3, 4, num_layers=2, bias=True, batch_first=True, returns_state=True",
                         "bias=False, batch_first=False", "self.decoder(transpose, (unsqueeze, getitem_"]}[name]
    assert all(e in text for e in expected), text
    if name == "conv_transposes":  # in the plain form, Flax's own layer where it can
        with conv_forms("plain"):
            plain = source(jm.graph)
        assert "nnx.ConvTranspose(6, 4, (3, 2)" in plain and "ConvForm" not in plain


# --------------------------------------------------------------------------------- indices in ----
class TokenAE(nn.Module):
    """A token-sequence autoencoder: indices in (padding_idx 0), an LSTM, logits over the vocabulary out."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(7, 4, padding_idx=0)
        self.rnn = nn.GRU(4, 5, batch_first=True)
        self.logits = nn.Linear(5, 7)

    def forward(self, tokens):
        out, _ = self.rnn(self.embed(tokens))
        return self.logits(out)


def test_an_index_input_ports_and_the_padding_row_gets_no_gradient():
    """compare() takes float batches, so a model whose first input is indices is checked here directly:
    the output and every parameter gradient equal torch's to 1e-12 -- the padding row's gradient 0 on
    both sides although the batch uses it."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from ae_jax.weights import to_torch_layout

    tm = make(TokenAE)
    tokens = torch.from_numpy(np.random.default_rng(0).integers(0, 7, size=(3, 6)))
    tokens[:, -2:] = 0  # padded ends
    jm = port(tm, tokens)
    out = tm(tokens)
    w = torch.from_numpy(np.random.default_rng(1).normal(size=tuple(out.shape)))
    (out * w).sum().backward()
    np.testing.assert_allclose(np.asarray(jm(tokens.numpy())), out.detach().numpy(), rtol=0, atol=1e-12)
    graphdef, params, rest = nnx.split(jm, nnx.Param, ...)
    grads = jax.grad(lambda p: jnp.sum(nnx.merge(graphdef, p, rest)(jnp.asarray(tokens.numpy())) * w.numpy()))(params)
    grads = to_torch_layout(jm, grads)
    for name, p in tm.named_parameters():
        np.testing.assert_allclose(grads[name], p.grad.numpy(), rtol=0, atol=1e-12, err_msg=name)
    assert not grads["embed.weight"][0].any() and grads["embed.weight"][1:].any()


# ----------------------------------------------------------------------- specs, init, refusals ----
@SAME_EVEN
def test_a_traced_graph_of_the_new_layers_round_trips_through_json():
    for name, cls in MODELS.items():
        tm, (x, extra) = make(cls), inputs(cls)
        graph = trace(tm, x, *extra.values())
        assert Graph.from_json(graph.to_json()) == graph, name
        assert graph.state_shapes() == {k: tuple(v.shape) for k, v in tm.state_dict().items()}, name


def test_the_specs_keep_the_presets_json_and_read_older_json():
    """New fields have defaults: a spec written before them (no dilation / groups / padding_mode /
    track_running_stats / num_layers...) loads as the same spec; equal sizes collapse to an int."""
    from ae_core import PRESETS

    for spec in PRESETS.values():
        assert ModelSpec.from_json(spec.to_json()) == spec
    old = '{"kind": "conv2d", "in_channels": 1, "out_channels": 16, "kernel_size": 3, "stride": 2, "padding": 1}'
    import json

    item = json.loads(old)
    assert L.spec_class(item.pop("kind"))(**item) == PRESETS["conv"].encoder[0]
    assert L.Conv2d(1, 2, (3, 3), stride=[2, 2]) == L.Conv2d(1, 2, 3, stride=2)
    assert L.Conv2d(1, 2, [3, 5]).kernel_size == (3, 5) and L.LSTM(2, 3) == L.LSTM(2, 3, 1, True, True, False)
    assert L.BatchNorm2d(3, track_running_stats=False).state_shapes() == {"weight": (3,), "bias": (3,)}


@pytest.mark.parametrize("module, kind", [
    (lambda: nn.LayerNorm((3, 4)), "layer_norm"), (lambda: nn.GroupNorm(2, 4), "group_norm"),
    (lambda: nn.PReLU(3, init=0.3), "prelu"), (lambda: nn.Embedding(40, 30, padding_idx=2), "embedding"),
    (lambda: nn.GRU(3, 20, num_layers=2), "gru"), (lambda: nn.LSTM(5, 10, bias=False), "lstm"),
    (lambda: nn.Conv2d(6, 9, (3, 5), groups=3), "conv2d"), (lambda: nn.Conv1d(4, 6, 5, groups=2), "conv1d"),
    (lambda: nn.ConvTranspose2d(4, 6, 3, groups=2), "conv_transpose2d"),
    (lambda: nn.BatchNorm1d(5, track_running_stats=False), "batchnorm1d"),
])
def test_each_init_rule_is_torchs_own(module, kind):
    """The registered init rule draws from torch's ``reset_parameters`` distribution: the same constants
    (norms, PReLU, the padding row), the same uniform bound or normal spread, the same state."""
    from ae_torch.trace import LAYERS

    torch.manual_seed(0)
    ms = [module() for _ in range(10)]
    spec = LAYERS[type(ms[0])](ms[0])
    assert spec.kind == kind
    rule = LAYER_KINDS[kind].init
    ours = [rule(spec, np.random.default_rng(s), "float32") for s in range(10)]  # torch's modules: float32
    for name in spec.state_shapes():
        ref = np.stack([m.state_dict()[name].numpy() for m in ms])
        mine = np.stack([o[name] for o in ours])
        assert mine.shape == ref.shape, name
        if (ref == ref[:1]).all():  # a constant start
            np.testing.assert_array_equal(mine, ref, err_msg=name)
        else:
            assert np.abs(mine).max() <= np.abs(ref).max() * 1.2 + 1e-12, name
            assert mine.std() == pytest.approx(ref.std(), rel=0.15), name
            assert np.abs(mine).max() == pytest.approx(np.abs(ref).max(), rel=0.2), name


class RefusedLSTM(nn.Module):
    def __init__(self, **kw):
        super().__init__()
        self.rnn = nn.LSTM(3, 4, batch_first=True, **kw)

    def forward(self, x):
        return self.rnn(x)[0]


class KeywordCall(nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn = nn.GRU(3, 4, batch_first=True)

    def forward(self, x):
        return self.rnn(x, hx=None)[0]


@pytest.mark.parametrize("model, reason", [
    (lambda: RefusedLSTM(bidirectional=True), "LSTM(bidirectional=True)"),
    (lambda: RefusedLSTM(proj_size=2), "proj_size=2"),
    (lambda: RefusedLSTM(num_layers=2, dropout=0.5), "dropout=0.5 (a random draw between layers"),
    (lambda: KeywordCall(), "GRU called with keyword arguments ['hx']"),
])
def test_what_is_not_ported_says_why(model, reason):
    with pytest.raises(PortError) as info:
        trace(make(model), torch.zeros(2, 5, 3, dtype=torch.float64))
    assert reason in str(info.value) and "test_port_layers.py:" in str(info.value)


def test_an_embedding_with_max_norm_is_refused_with_its_reason():
    tm = nn.Sequential(nn.Embedding(5, 3, max_norm=1.0), nn.Linear(3, 2)).double()
    with pytest.raises(PortError, match="only max_norm=None .it renormalises the table in place"):
        trace(tm, torch.zeros(2, 4, dtype=torch.long))


def test_a_model_spec_refuses_the_torch_layout_layers_where_its_nnx_layers_run_channels_last():
    """Model specs (the presets' models) run images channels-last in NNX: a LayerNorm / GroupNorm /
    per-channel PReLU there, a Conv1d, or a BatchNorm1d on sequences would see other axes than torch's.
    On vectors and (steps, features) rows they work in both frameworks, like the GRU."""
    import ae_jax
    import ae_torch
    from ae_core.layers import SpecError

    with pytest.raises(SpecError, match="GroupNorm.* on 3-d examples"):
        ModelSpec("img", encoder=(L.Conv2d(1, 4, 3, padding=1), L.GroupNorm(2, 4), L.Flatten(), L.Linear(4 * 784, 4)),
                  decoder=(L.Linear(4, 784), L.Unflatten((1, 28, 28))), input="mnist_image")
    with pytest.raises(SpecError, match="integer indices"):
        ModelSpec("e", encoder=(L.Embedding(5, 3),), decoder=(L.Linear(3, 784),))
    spec = ModelSpec("rows", encoder=(L.GRU(28, 8, num_layers=2), L.LayerNorm(8), L.LastStep(), L.PReLU(8),
                                      L.Linear(8, 4)),
                     decoder=(L.Linear(4, 8), L.RepeatSteps(28), L.GRU(8, 28), L.GroupNorm(4, 28)), input="mnist_rows")
    x = np.random.default_rng(0).uniform(size=(2, 28, 28))
    tm, jm = ae_torch.build(spec, dtype="float64", seed=0), ae_jax.build(spec, dtype="float64", seed=0)
    np.testing.assert_allclose(np.asarray(jm(x)), tm(torch.from_numpy(x)).detach().numpy(), rtol=0, atol=1e-12)
