"""Sweeps (ae_jax.sweep): many models in one compiled program, each equal to the same model trained alone."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ae_core import get_spec, model_inputs
from ae_core.optim import OptimizerConfig
from ae_core.training import TrainConfig, default_loss, load_checkpoint
from ae_jax.weights import state_dict
from ae_jax.models import build
from ae_jax.sweep import Member, SweepTrainer, grid, parse_seeds
from ae_jax.train import Trainer
from ae_parity.cli import main
from ae_parity.runner import Data

from helpers import assert_trees_all_close


@pytest.fixture(scope="module")
def small(train, data_dir):
    from ae_core import mnist

    test = mnist.load("test", "sample", data_dir)

    def make(preset):
        spec = get_spec(preset)
        return Data(model_inputs(spec, train.images[:96], "float64"), model_inputs(spec, test.images[:64], "float64"),
                    "sample")

    return make


@pytest.mark.parametrize("preset, seeds, lrs, order", [
    ("mlp9", [0, 1], [1e-3, 3e-3], "own"),   # a seeds x learning rates grid, each on its own batch order
    ("conv_bn", [2, 3], [2e-3], "own"),      # BatchNorm statistics and dropout masks stacked per model
    ("vae", [0, 1], [1e-3], "shared"),       # one batch order and noise for all; only the initial weights differ
])
def test_each_model_equals_its_solo_run(small, preset, seeds, lrs, order):
    spec = get_spec(preset)
    data = small(preset)
    config = TrainConfig(epochs=2, batch_size=32, optimizer=OptimizerConfig("adam"), loss=default_loss(spec), seed=7,
                         dtype="float64")
    members = grid(seeds, lrs)
    sweep = SweepTrainer(spec, config, members, data.x_train, data.x_eval, batch_order=order)
    losses = np.stack([sweep.train_epoch(e) for e in range(config.epochs)])  # (epochs, steps, models)
    evals = sweep.evaluate()
    assert sweep.compiled_count() == {"epoch": 1, "eval": 1}
    for i, member in enumerate(members):
        solo = Trainer(spec, sweep.member_config(i), data.x_train, data.x_eval, mode="scan")
        assert solo.config.optimizer.lr == member.lr
        if order == "shared":  # the solo run of the shared batch order, started from this member's weights
            solo.load_state(state_dict(build(spec, dtype="float64", seed=member.seed)), {}, 0)
        solo_losses = np.stack([solo.train_epoch(e) for e in range(config.epochs)])
        np.testing.assert_allclose(losses[:, :, i], solo_losses, rtol=1e-9, atol=0, err_msg=member.name)
        assert_trees_all_close(sweep.model_state(i), solo.model_state(), atol=1e-9)
        assert_trees_all_close(sweep.optimizer_state(i), solo.optimizer_state(), atol=1e-9)
        assert abs(evals[i] - solo.evaluate()) <= 1e-9 * abs(evals[i])
    # the members really differ (different weights / learning rates), so the comparison above is not vacuous
    assert len({round(float(v), 12) for v in evals}) == len(members)


def test_sweep_command_writes_runs_summary_and_resumable_checkpoints(data_dir, tmp_path, capsys):
    """seeds x lrs through the CLI; a diverging learning rate is marked and does not stop the others; a
    member's run directory resumes with `ae-parity train --resume` onto the solo trajectory."""
    common = ["--limit", "128", "--dtype", "float64", "--data", "sample", "--data-dir", str(data_dir)]
    out = tmp_path / "sweep"
    code = main(["sweep", "--preset", "vae", "--seeds", "0-1", "--lr", "1e-3,10", "--optimizer", "sgd",
                 "--epochs", "2", "--out", str(out), *common])
    assert code == 0
    printed = capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    rows = {r["name"]: r for r in summary["members"]}
    assert sorted(rows) == ["seed0-lr0.001", "seed0-lr10", "seed1-lr0.001", "seed1-lr10"]
    for name in ("seed0-lr10", "seed1-lr10"):  # SGD at lr 10 overflows the VAE's exp(logvar)
        assert rows[name]["status"] == "diverged" and rows[name]["diverged_at"]["epoch"] == 1
        assert not (out / name).exists()
    ok = [rows["seed0-lr0.001"], rows["seed1-lr0.001"]]
    assert all(r["status"] == "ok" and r["epochs"] == 2 for r in ok)
    assert summary["best"] == min(ok, key=lambda r: r["eval_loss"])["name"]
    assert summary["best_lr"] == 1e-3
    assert f"best model: {summary['best']}" in printed

    member = out / "seed1-lr0.001"
    ckpt = load_checkpoint(member / "checkpoint.safetensors")
    assert (ckpt.epoch, ckpt.config.seed, ckpt.config.optimizer.lr, ckpt.config.optimizer.name) == (2, 1, 1e-3, "sgd")
    metrics = json.loads((member / "metrics.json").read_text())
    assert metrics["sweep"] == {"init_seed": 1, "lr": 1e-3, "batch_order": "own", "models": 4}
    assert list(metrics) == ["framework", "preset", "spec", "config", "data", "sweep", "epochs", "best"]
    best = min(metrics["epochs"], key=lambda r: r["eval_loss"])["epoch"]  # every member keeps its best epoch too
    assert metrics["best"]["epoch"] == best and load_checkpoint(member / "best.safetensors").epoch == best
    assert metrics["epochs"][-1]["eval_loss"] == rows["seed1-lr0.001"]["eval_loss"]

    # resume the member for a third epoch in torch, and train the same model alone for 3 epochs
    assert main(["train", "--framework", "torch", "--resume", str(member), "--epochs", "3", "--no-progress",
                 *common[:2], *common[4:]]) == 0
    solo = tmp_path / "solo"
    assert main(["train", "--framework", "jax", "--preset", "vae", "--seed", "1", "--optimizer", "sgd", "--lr", "1e-3",
                 "--epochs", "3", "--no-progress", "--out", str(solo), *common]) == 0
    resumed, alone = (load_checkpoint(d / "checkpoint.safetensors") for d in (member, solo))
    assert resumed.epoch == alone.epoch == 3
    assert_trees_all_close(resumed.model, alone.model, atol=1e-9)


def test_seed_and_grid_parsing():
    assert parse_seeds("0-3,10") == [0, 1, 2, 3, 10]
    assert parse_seeds("5") == [5]
    assert grid([0, 1], [1e-3, 3e-3]) == [Member(0, 1e-3), Member(1, 1e-3), Member(0, 3e-3), Member(1, 3e-3)]
    assert Member(3, 1e-3).name == "seed3-lr0.001"


@pytest.mark.parametrize("argv, message", [
    (["--seeds", "5-2"], "the range 5-2 is empty"),
    (["--seeds", "a-b"], "expected ranges and numbers like 0-7"),
    (["--seeds", "0,0"], "seeds repeat: [0, 0]"),
    (["--lr", "1e-3,0"], "expected comma-separated positive numbers"),
    (["--lr", "1e-3,1e-3"], "learning rates repeat"),
])
def test_sweep_arguments_are_checked(data_dir, tmp_path, capsys, argv, message):
    out = tmp_path / "sweep"
    try:  # argparse rejects (SystemExit 2), or the command does (return 2)
        code = main(["sweep", "--preset", "mlp9", "--epochs", "1", "--limit", "64", "--data", "sample",
                     "--data-dir", str(data_dir), "--out", str(out), *argv])
    except SystemExit as e:
        code = e.code
    assert code == 2
    assert message in capsys.readouterr().err
    assert not out.exists()
