"""A ported model trains (issue "Automatic port"): a torch model traced to a graph (``ae_torch.trace``)
trains in both frameworks (``ae_core.graph_training``) on the same MNIST batches with the same supplied
noise (``randn_like``, dropout masks: ``ae_core.noise``) from identical weights, and float64 trajectories
agree as the presets' do (test_training.py: every step's loss and the final weights to 1e-9, a bound far
above the ~1e-15 roundoff that different kernels' summation orders leave in float64); ``ae-parity train``
takes ``--graph FILE.json`` or ``--torch FILE.py:NAME`` and writes a run directory that resumes.
"""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ae_core import UsageError, init_state_dict, mnist, model_inputs
from ae_core.graph_training import loss_graph
from ae_core.optim import OptimizerConfig
from ae_core.training import TrainConfig, load_checkpoint
from ae_jax.numerics import enable_x64
from ae_parity.cli import main
from ae_parity.runner import Data, make_trainer
from ae_torch.graph import build as torch_build
from ae_torch.trace import trace
from ae_torch.weights import state_dict
from parity_tests import thirdparty_models as T

from helpers import assert_trees_all_close

enable_x64()
MNIST_IMAGE = (1, 28, 28)


class MnistSamplingVAE(nn.Module):
    """``thirdparty_models.SamplingConvVAE``'s style (PyTorch-VAE's VanillaVAE) at the MNIST size: nested
    Sequential blocks with BatchNorm2d and LeakyReLU, nn.Dropout, fc_mu / fc_var, ``torch.randn_like``
    inside the forward, a list output ``[recon, input, mu, log_var]``, a Sigmoid output layer.

    The convolutions feeding a BatchNorm have no bias (``bias=False``, as DCGAN-style code writes them): a
    bias there is cancelled by the normalisation, its true gradient is 0 and the computed one is roundoff,
    different in each framework, and Adam's ``m / (sqrt(v) + eps)`` turns it into steps far above
    roundoff: measured with biases, this test's 10 steps of AdamW (Adam) moved those biases, and the
    running means that follow them, apart by 4.9e-10 (2.6e-10) in float64 while every loss still agreed to
    4e-16. A direction the loss cannot see, not a trajectory difference; bias-free layers keep the weight
    comparison about the trajectory (with them: ~6e-15)."""

    def __init__(self, latent_dim: int = 4, hidden: int = 4):
        super().__init__()
        self.hidden = hidden
        self.encoder = nn.Sequential(
            nn.Sequential(nn.Conv2d(1, hidden, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(hidden),
                          nn.LeakyReLU()),
            nn.Sequential(nn.Conv2d(hidden, hidden, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(hidden),
                          nn.LeakyReLU()))
        self.dropout = nn.Dropout(0.2)
        self.fc_mu = nn.Linear(hidden * 7 * 7, latent_dim)
        self.fc_var = nn.Linear(hidden * 7 * 7, latent_dim)
        self.decoder_input = nn.Linear(latent_dim, hidden * 7 * 7)
        self.decoder = nn.Sequential(nn.Sequential(
            nn.ConvTranspose2d(hidden, hidden, 3, stride=2, padding=1, output_padding=1, bias=False),
            nn.BatchNorm2d(hidden), nn.LeakyReLU()))
        self.final_layer = nn.Sequential(nn.ConvTranspose2d(hidden, 1, 3, stride=2, padding=1, output_padding=1),
                                         nn.Sigmoid())

    def encode(self, x):
        result = self.dropout(torch.flatten(self.encoder(x), start_dim=1))
        return [self.fc_mu(result), self.fc_var(result)]

    def decode(self, z):
        return self.final_layer(self.decoder(self.decoder_input(z).view(-1, self.hidden, 7, 7)))

    def forward(self, x):
        mu, log_var = self.encode(x)
        z = torch.randn_like(mu) * torch.exp(0.5 * log_var) + mu
        return [self.decode(z), x, mu, log_var]


class ReluOut(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(784, 784)

    def forward(self, x):
        return F.relu(self.lin(x))


class CodeFirst(nn.Module):
    """Returns ``(code, recon)``: the first output is not the input's shape."""

    def __init__(self):
        super().__init__()
        self.enc, self.dec = nn.Linear(784, 8), nn.Linear(8, 784)

    def forward(self, x):
        code = F.relu(self.enc(x))
        return code, self.dec(code)


def _torch_model(cls, dtype=torch.float64):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return cls().to(dtype)


def _data(train, data_dir, graph, n_train, n_eval, dtype="float64"):
    test = mnist.load("test", "sample", data_dir)
    return Data(model_inputs(graph, train.images[:n_train], dtype),
                model_inputs(graph, test.images[:n_eval], dtype), "sample")


def _both(graph, config, data, weights=None):
    """Both trainers, their per-step losses over ``config.epochs`` epochs; the same batches and noise."""
    runs = {}
    for fw in ("torch", "jax"):
        trainer = make_trainer(fw, graph, config, data, weights=weights)
        runs[fw] = trainer, np.concatenate([trainer.train_epoch(e) for e in range(config.epochs)])
    return runs["torch"], runs["jax"]


def _agreement(t, lt, j, lj) -> dict:
    st, sj = t.model_state(), j.model_state()
    return {"loss": float(np.abs(lt - lj).max()), "weights": max(float(np.abs(st[k] - sj[k]).max()) for k in st),
            "eval": abs(t.evaluate() - j.evaluate())}


def test_a_ported_conv_ae_trains_identically_from_the_torch_models_weights(train, data_dir):
    """NamedConvAE (one MaxPool called twice, ConvTranspose decoder, sigmoid output) at 28x28, float64,
    from the torch model's own state dict: 12 Adam steps; the first loss is the torch model's own."""
    tm = _torch_model(T.NamedConvAE)
    graph = trace(tm, torch.zeros(2, *MNIST_IMAGE, dtype=torch.float64))
    assert graph.input_shape == MNIST_IMAGE and graph.noise_shapes() == {}
    data = _data(train, data_dir, graph, 384, 64)
    config = TrainConfig(epochs=1, batch_size=32, optimizer=OptimizerConfig("adam", lr=3e-3), dtype="float64",
                         seed=1)
    (t, lt), (j, lj) = _both(graph, config, data, weights=state_dict(tm))
    assert len(lt) == len(lj) == 12
    first = torch.from_numpy(data.x_train[t.epoch_inputs(0)[0][0]])
    assert abs(lt[0] - F.mse_loss(tm(first), first).item()) <= 1e-15  # the model itself, on the first batch
    found = _agreement(t, lt, j, lj)
    print("NamedConvAE float64 agreement:", found)
    assert max(found.values()) <= 1e-9, found
    assert lt[-3:].mean() < lt[:3].mean()  # it learns


def test_a_sampling_vae_trains_identically_with_the_same_noise(train, data_dir):
    """randn_like in the forward, dropout, BatchNorm in train mode (its statistics are state too), BCE from
    the logits under the Sigmoid, the seeded init: 2 epochs of AdamW; the eval pass draws its randn_like
    from a stream of its own, the same in both frameworks."""
    graph = trace(_torch_model(MnistSamplingVAE), torch.zeros(2, *MNIST_IMAGE, dtype=torch.float64))
    kinds = {name: kind for name, (kind, _, _) in graph.noise_shapes().items()}
    assert sorted(kinds.values()) == ["bernoulli", "normal"], kinds
    data = _data(train, data_dir, graph, 160, 48)
    config = TrainConfig(epochs=2, batch_size=32, optimizer=OptimizerConfig("adamw", lr=3e-3), loss="bce",
                         dtype="float64", seed=3)
    t0, j0 = make_trainer("torch", graph, config, data), make_trainer("jax", graph, config, data)
    start = init_state_dict(graph, config.seed, "float64")  # torch's default init rule, drawn with numpy
    assert_trees_all_close(t0.model_state(), start, exact=True)
    assert_trees_all_close(j0.model_state(), start, exact=True)
    (ti, tn), (ji, jn) = t0.epoch_inputs(1), j0.epoch_inputs(1)
    assert np.array_equal(ti, ji) and set(tn) == set(kinds) and all(np.array_equal(tn[k], jn[k]) for k in tn)
    (t, lt), (j, lj) = _both(graph, config, data)
    assert len(lt) == 10
    found = _agreement(t, lt, j, lj)
    print("MnistSamplingVAE float64 agreement:", found)
    assert max(found.values()) <= 1e-9, found
    assert any("running_mean" in k for k in t.model_state())  # the statistics were compared too


def test_what_a_graph_cannot_train_on_is_one_clear_error():
    code_first = trace(_torch_model(CodeFirst), torch.zeros(2, 784, dtype=torch.float64))
    data = Data(np.zeros((64, 784)), None, "x")
    with pytest.raises(UsageError, match=r"first output of forward \('relu'\) has the per-example shape \(8,\), "
                                         r"not the input's \(784,\)"):
        make_trainer("jax", code_first, TrainConfig(), data)
    named = trace(_torch_model(T.NamedConvAE, torch.float32), torch.zeros(2, *MNIST_IMAGE))
    assert loss_graph(named, "bce").methods["forward"].output.name == "t_conv2"  # the logits under the sigmoid
    relu_out = trace(_torch_model(ReluOut, torch.float32), torch.zeros(2, 784))
    with pytest.raises(UsageError, match="loss 'bce' is computed from logits and needs the first output"):
        make_trainer("torch", relu_out, TrainConfig(loss="bce"), data)
    with pytest.raises(UsageError, match="trains on loss mse or bce, not 'vae'"):
        make_trainer("torch", named, TrainConfig(loss="vae"), data)


class ModeDependent(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(6, 6)

    def forward(self, x):
        return self.lin(x) + (x if self.training else 2 * x)


def test_the_torch_runtime_runs_the_eval_trace_in_eval_mode():
    tm = _torch_model(ModeDependent)
    x = torch.from_numpy(np.random.default_rng(0).normal(size=(3, 6)))
    gm = torch_build(trace(tm, x), dtype="float64")
    gm.load_state_dict(tm.state_dict())
    for mode in (True, False):
        assert torch.equal(gm.train(mode)(x), tm.train(mode)(x))


# ------------------------------------------------------------------------------------ the CLI ----
def _cli(*args, data_dir):
    return main(["train", *map(str, args), "--epochs", "1", "--limit", "192", "--batch-size", "32", "--data", "sample",
                 "--data-dir", str(data_dir), "--no-progress"])


def test_train_takes_a_graph_file_or_a_torch_class_and_the_run_resumes(tmp_path, data_dir):
    graph = trace(_torch_model(T.NamedConvAE, torch.float32), torch.zeros(2, *MNIST_IMAGE))
    path = tmp_path / "named.json"
    path.write_text(graph.to_json())
    assert _cli("--framework", "torch", "--graph", path, "--out", tmp_path / "g", data_dir=data_dir) == 0
    assert _cli("--framework", "jax", "--torch", "parity_tests/thirdparty_models.py:NamedConvAE", "--input-shape",
                "1,28,28", "--out", tmp_path / "t", data_dir=data_dir) == 0
    runs = {k: json.loads((tmp_path / k / "metrics.json").read_text()) for k in ("g", "t")}
    assert all(r["model"] == "NamedConvAE" and "preset" not in r for r in runs.values())
    assert runs["g"]["graph"] == json.loads(graph.to_json())
    # the graph file and the torch class are the same model, the same seeded start: the same run (float32)
    np.testing.assert_allclose(runs["t"]["epochs"][0]["step_losses"], runs["g"]["epochs"][0]["step_losses"],
                               rtol=1e-5)
    ckpt = load_checkpoint(tmp_path / "t" / "checkpoint.safetensors", spec=graph, dtype="float32")
    assert ckpt.spec.same_architecture(graph) and ckpt.step == 6 and ckpt.framework == "jax"
    # the JAX run of the torch class resumes in torch; --graph, when given, must be the run's graph
    resume = ["train", "--framework", "torch", "--resume", str(tmp_path / "t"), "--epochs", "2", "--limit", "192",
              "--data", "sample", "--data-dir", str(data_dir), "--no-progress"]
    other = tmp_path / "other.json"
    other.write_text(trace(_torch_model(ReluOut, torch.float32), torch.zeros(2, 784)).to_json())
    assert main([*resume, "--graph", str(other)]) == 2
    assert main([*resume, "--graph", str(path)]) == 0
    assert [e["epoch"] for e in json.loads((tmp_path / "t" / "metrics.json").read_text())["epochs"]] == [1, 2]


def test_train_refuses_a_bad_graph_with_one_line_and_exit_2(tmp_path, data_dir, capsys):
    code_first = tmp_path / "code_first.json"
    code_first.write_text(trace(_torch_model(CodeFirst, torch.float32), torch.zeros(2, 784)).to_json())
    broken = tmp_path / "broken.json"
    broken.write_text('{"name": "g", "modules": {}')
    cases = {code_first: "first output of forward ('relu') has the per-example shape (8,)",
             broken: "not a valid model graph: JSONDecodeError",
             tmp_path / "missing.json": "cannot read the file (FileNotFoundError"}
    for path, message in cases.items():
        assert _cli("--graph", path, "--out", tmp_path / "x", data_dir=data_dir) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("ae-parity train: error: --graph" if path != code_first
                                                   else "ae-parity train: error: CodeFirst") and message in err[0], err
    assert _cli("--graph", code_first, "--preset", "mlp9", "--out", tmp_path / "x", data_dir=data_dir) == 2
    assert "give one model, --preset, --spec, --graph or --torch" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
