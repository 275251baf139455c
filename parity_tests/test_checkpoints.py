"""Checkpoints: either framework resumes either's checkpoint, exactly on the uninterrupted trajectory."""

import json

import numpy as np
import pytest

from ae_core import CheckpointError, get_spec, model_inputs
from ae_core.optim import OptimizerConfig
from ae_core.training import TrainConfig, load_checkpoint
from ae_parity.runner import CHECKPOINT, Data, NonFiniteLossError, train_run

from helpers import assert_trees_all_close

CONFIG = dict(batch_size=50, optimizer=OptimizerConfig("adam", lr=2e-3, weight_decay=1e-4), dtype="float64", seed=4)


@pytest.fixture(scope="module")
def data(train):
    x = model_inputs(get_spec("mlp9"), train.images[:1000], "float64")
    return Data(x, x[:200], "sample")


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, data):
    out = {}
    for fw in ("torch", "jax"):
        d = tmp_path_factory.mktemp(f"full-{fw}")
        metrics = train_run(fw, "mlp9", TrainConfig(epochs=3, **CONFIG), d, data=data, log=lambda m: None)
        out[fw] = (metrics, load_checkpoint(d / CHECKPOINT))
    return out


def steps(metrics):
    return np.concatenate([e["step_losses"] for e in metrics["epochs"]])


@pytest.mark.parametrize("first, then", [("torch", "torch"), ("jax", "jax"), ("torch", "jax"), ("jax", "torch")])
def test_resumed_run_equals_the_uninterrupted_one(first, then, tmp_path, data, uninterrupted):
    train_run(first, "mlp9", TrainConfig(epochs=1, **CONFIG), tmp_path, data=data, log=lambda m: None)
    assert load_checkpoint(tmp_path / CHECKPOINT).framework == first
    metrics = train_run(then, "mlp9", TrainConfig(epochs=3, **CONFIG), tmp_path, data=data, resume=True,
                        log=lambda m: None)
    ref_metrics, ref_ckpt = uninterrupted[then]
    ckpt = load_checkpoint(tmp_path / CHECKPOINT)
    assert (ckpt.epoch, ckpt.step, ckpt.framework) == (3, 60, then)
    assert [e["epoch"] for e in metrics["epochs"]] == [1, 2, 3]
    tol = 1e-12 if first == then else 1e-9  # across frameworks: epoch 1 came from the other one
    assert np.abs(steps(metrics) - steps(ref_metrics)).max() <= tol
    assert_trees_all_close(ckpt.model, ref_ckpt.model, atol=tol)
    assert_trees_all_close(ckpt.optim, ref_ckpt.optim, atol=tol)


def test_metrics_json_format(tmp_path, data):
    """The run directory's metrics.json: this key order and JSON indent 1 (runs written before resume)."""
    metrics = train_run("torch", "mlp9", TrainConfig(epochs=1, **CONFIG), tmp_path, data=data, log=lambda m: None)
    text = (tmp_path / "metrics.json").read_text()
    assert text == json.dumps(metrics, indent=1)
    assert list(json.loads(text)) == ["framework", "preset", "spec", "config", "data", "epochs", "best"]
    assert metrics["best"] == {"epoch": 1, "eval_loss": metrics["epochs"][0]["eval_loss"], "file": "best.safetensors"}
    assert list(metrics["epochs"][0]) == ["epoch", "steps", "train_loss", "eval_loss", "time_s", "samples_per_s",
                                          "step_losses"]


def test_checkpoint_is_torch_named_and_self_describing(uninterrupted):
    ckpt = uninterrupted["torch"][1]
    assert sorted(ckpt.model) == sorted(get_spec("mlp9").param_shapes())
    assert set(ckpt.optim) == {f"{n}.{s}" for n in ckpt.model for s in ("exp_avg", "exp_avg_sq")}
    assert ckpt.config == TrainConfig(epochs=3, **CONFIG) and ckpt.spec == get_spec("mlp9")


def test_torch_optimizer_reads_the_optimizer_state_as_its_own(uninterrupted):
    """The canonical optimizer state IS torch's: load it into torch.optim.Adam and compare."""
    import torch

    import ae_torch
    from ae_torch.optim import load_optimizer_state, make_optimizer

    ckpt = uninterrupted["jax"][1]
    model = ae_torch.build("mlp9", dtype="float64")
    ae_torch.load_state_dict(model, ckpt.model)
    opt = make_optimizer(model, CONFIG["optimizer"])
    load_optimizer_state(opt, model, CONFIG["optimizer"], ckpt.optim, ckpt.step)
    state = opt.state_dict()["state"]
    names = [n for n, _ in model.named_parameters()]
    assert float(state[0]["step"]) == 60
    np.testing.assert_array_equal(state[3]["exp_avg_sq"].numpy(), ckpt.optim[f"{names[3]}.exp_avg_sq"])
    assert isinstance(opt, torch.optim.Adam)


@pytest.mark.parametrize("framework", ["torch", "jax"])
def test_wrong_preset_wrong_dtype_corrupt_file_load_nothing(framework, tmp_path, data, train):
    train_run(framework, "mlp9", TrainConfig(epochs=1, **CONFIG), tmp_path, data=data, log=lambda m: None)
    path = tmp_path / CHECKPOINT
    original = path.read_bytes()
    with pytest.raises(CheckpointError, match="written for model 'mlp9', not 'tanh3'"):
        train_run(framework, "tanh3", TrainConfig(epochs=2, **CONFIG), tmp_path, data=data, resume=True)
    with pytest.raises(CheckpointError, match="written in float64, expected float32"):
        train_run(framework, "mlp9", TrainConfig(epochs=2, **{**CONFIG, "dtype": "float32"}), tmp_path,
                  data=data, resume=True)
    with pytest.raises(ValueError, match="resuming needs the same optimizer"):
        train_run(framework, "mlp9", TrainConfig(epochs=2, **{**CONFIG, "optimizer": OptimizerConfig("sgd")}),
                  tmp_path, data=data, resume=True)
    path.write_bytes(original[: len(original) // 2])
    with pytest.raises(CheckpointError, match="not a valid safetensors file"):
        train_run(framework, "mlp9", TrainConfig(epochs=2, **CONFIG), tmp_path, data=data, resume=True)
    assert json.loads((tmp_path / "metrics.json").read_text())["epochs"][-1]["epoch"] == 1  # untouched


def test_trainer_load_state_validates_before_changing_anything(data, uninterrupted):
    from ae_parity.runner import make_trainer

    ckpt = uninterrupted["torch"][1]
    for fw in ("torch", "jax"):
        trainer = make_trainer(fw, "mlp9", TrainConfig(epochs=3, **CONFIG), data)
        before = trainer.model_state()
        bad_optim = dict(ckpt.optim)
        bad_optim.pop("decoder.8.bias.exp_avg")
        with pytest.raises(ValueError, match="decoder.8.bias.exp_avg"):
            trainer.load_state(ckpt.model, bad_optim, ckpt.step)
        bad_model = dict(ckpt.model, **{"encoder.0.weight": np.zeros((2, 2))})
        with pytest.raises(ValueError, match="encoder.0.weight: shape"):
            trainer.load_state(bad_model, ckpt.optim, ckpt.step)
        assert_trees_all_close(trainer.model_state(), before, exact=True)
        assert trainer.step == 0


@pytest.mark.parametrize("framework", ["torch", "jax"])
def test_non_finite_loss_stops_naming_epoch_and_step_and_keeps_the_last_good_checkpoint(framework, tmp_path, data,
                                                                                        monkeypatch):
    # the resume below trains on other (poisoned) inputs on purpose; a resume refuses other data otherwise
    monkeypatch.setattr("ae_parity.runner.check_same_data", lambda *args: None)
    train_run(framework, "mlp9", TrainConfig(epochs=1, **CONFIG), tmp_path, data=data, log=lambda m: None)
    good = (tmp_path / CHECKPOINT).read_bytes()
    poisoned = data.x_train.copy()
    poisoned[123, 5] = np.nan  # one bad pixel: the step whose batch holds example 123 goes non-finite
    from ae_core import epoch_batches

    batches = epoch_batches(CONFIG["seed"], 1, len(poisoned), CONFIG["batch_size"])
    step = int(np.flatnonzero((batches == 123).any(axis=1))[0])
    with pytest.raises(NonFiniteLossError) as info:
        train_run(framework, "mlp9", TrainConfig(epochs=3, **CONFIG), tmp_path,
                  data=Data(poisoned, data.x_eval, "sample"), resume=True, log=lambda m: None)
    assert f"in epoch 2, step {step + 1} of the epoch (global step {20 + step + 1})" in str(info.value)
    assert "the last good checkpoint is kept" in str(info.value)
    assert (tmp_path / CHECKPOINT).read_bytes() == good


def test_divergence_in_the_first_epoch_says_no_checkpoint(tmp_path, data):
    config = TrainConfig(epochs=1, batch_size=50, optimizer=OptimizerConfig("sgd", lr=1e6), dtype="float64")
    with pytest.raises(NonFiniteLossError, match="in epoch 1, step .* no checkpoint was written"):
        train_run("jax", "mlp16", config, tmp_path, data=data, log=lambda m: None)
    assert not (tmp_path / CHECKPOINT).exists()


def test_checkpoint_missing_optimizer_state_is_refused(tmp_path, data):
    from ae_core.weights import load_safetensors, save_safetensors

    train_run("jax", "mlp9", TrainConfig(epochs=1, **CONFIG), tmp_path, data=data, log=lambda m: None)
    tensors, meta = load_safetensors(tmp_path / CHECKPOINT)
    del tensors["optim.encoder.2.bias.exp_avg_sq"]
    save_safetensors(tmp_path / "bad.safetensors", tensors, meta)
    with pytest.raises(CheckpointError, match="optimizer state: missing key 'encoder.2.bias.exp_avg_sq'"):
        load_checkpoint(tmp_path / "bad.safetensors")
