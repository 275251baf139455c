"""The ae-parity command line: the demo, the parity table, bad arguments."""

import json
import os
import subprocess
import sys

import pytest


def run_cli(*args, data_dir, env=None):
    env = dict(os.environ, AE_PARITY_DATA=str(data_dir), **(env or {}))
    return subprocess.run([sys.executable, "-m", "ae_parity.cli", *args], capture_output=True, text=True,
                          env=env, timeout=600)


def test_every_subcommand_dispatches_to_a_handler():
    import argparse

    from ae_parity import cli, commands

    sub = next(a for a in cli.build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    assert list(sub.choices) == list(cli.HANDLERS) == ["demo", "train", "sweep", "validate", "bench", "parity", "diagnose",
                                                             "port", "doctor"]
    assert cli.HANDLERS["train"] is commands.train


def test_parity_prints_a_passing_table_on_the_offline_sample(data_dir):
    out = run_cli("parity", "--dtype", "float64", "--optimizer", "sgd", "--momentum", "0.9", data_dir=data_dir)
    assert out.returncode == 0, out.stderr
    assert "mlp9 | float64 | matmul precision highest" in out.stdout
    for row in ("encodings", "grad decoder.8.weight", "step encoder.0.weight"):
        assert row in out.stdout
    assert out.stdout.rstrip().endswith("PARITY OK")


@pytest.mark.parametrize("preset", ["mlp9", "tanh3", "conv", "vae", "denoise"])
def test_demo_trains_both_frameworks_and_writes_three_pictures(preset, data_dir, tmp_path):
    out = run_cli("demo", "--preset", preset, "--epochs", "2", "--limit", "640", "--out", str(tmp_path),
                  data_dir=data_dir)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if "loss torch" in line)
    assert "loss jax" in lines[header] and "time torch" in lines[header] and "time jax" in lines[header]
    assert [line.split()[0] for line in lines[header + 2: header + 4]] == ["1", "2"]
    for name in ("reconstructions.png", "loss_curves.png", "latent.png"):
        path = tmp_path / name
        assert str(path) in out.stdout
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000
    if preset == "vae":  # generation: digits decoded from the prior
        assert str(tmp_path / "samples.png") in out.stdout and "vae, float32" in out.stdout
    assert out.stdout.rstrip().endswith("PARITY OK")


def test_demo_says_when_it_writes_the_offline_sample(tmp_path):
    out = run_cli("parity", "--preset", "shallow128", "--dtype", "float64", data_dir=tmp_path,
                  env={"AE_PARITY_MNIST_MIRRORS": "http://127.0.0.1:9/", "AE_PARITY_OFFLINE": ""})
    assert out.returncode == 0, out.stderr
    assert "OFFLINE SAMPLE" in out.stderr and "(sample)" in out.stdout
    # the download (a closed local port here) is tried and reported once, not once per split
    assert out.stderr.count("full MNIST unavailable") == 1, out.stderr


@pytest.mark.parametrize("args, message", [
    (["demo", "--preset", "mlp10"], "invalid choice: 'mlp10'"),
    (["train", "--framework", "mxnet", "--out", "x"], "invalid choice: 'mxnet'"),
    (["train", "--epochs", "2"], "one of the arguments --out --resume is required"),
    (["train", "--out", "x", "--resume", "y"], "not allowed with argument"),
    (["train", "--out", "x", "--lr", "-1"], "expected a positive float, got -1.0"),
    (["train", "--out", "x", "--optimizer", "sgd", "--nesterov"], "nesterov needs the sgd optimizer with momentum > 0"),
    (["train", "--out", "x", "--preset", "mlp16", "--loss", "bce"], "loss 'bce' is computed from logits"),
    (["train", "--out", "x", "--weight-decay", "-0.1"], "expected a number >= 0, got -0.1"),
    (["parity", "--dtype", "float16"], "invalid choice: 'float16'"),
    (["parity", "--batch-size", "0"], "expected a positive int, got 0"),
    (["parity", "--batch-size", "many"], "expected a positive int, got 'many'"),
    (["fly"], "invalid choice: 'fly'"),
    (["parity", "--batch-size", "5000"], "batch_size 5000 is larger than the dataset (4000 examples)"),
    ([], "the following arguments are required: command"),
])
def test_bad_arguments_exit_2_with_a_message(args, message, data_dir):
    out = run_cli(*args, data_dir=data_dir)
    assert out.returncode == 2 and message in out.stderr, out.stderr


def test_bad_data_file_exits_1_naming_it(tmp_path, data_dir):
    from ae_core import mnist

    bad = tmp_path / "sample" / "MNIST" / "raw"
    bad.mkdir(parents=True)
    for names in mnist.FILES.values():
        for name in names:
            (bad / name).write_bytes((mnist.raw_dir(data_dir, "sample") / name).read_bytes())
    (bad / "train-labels-idx1-ubyte").write_bytes(b"\x00\x00\x08\x01")
    out = run_cli("parity", "--data", "sample", data_dir=tmp_path)
    assert out.returncode == 1 and "train-labels-idx1-ubyte: truncated header" in out.stderr


def test_train_resume_tensorboard_and_conflicts(data_dir, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = tmp_path / "run"
    common = ["--limit", "512", "--batch-size", "64", "--dtype", "float64", "--no-progress"]
    out = run_cli("train", "--framework", "torch", "--epochs", "1", "--out", str(run), *common, data_dir=data_dir)
    assert out.returncode == 0, out.stderr
    out = run_cli("train", "--framework", "jax", "--epochs", "2", "--resume", str(run), "--limit", "512",
                  "--no-progress", data_dir=data_dir)
    assert out.returncode == 0, out.stderr
    assert "resuming torch checkpoint" in out.stderr and "jax mlp9: 2 epochs" in out.stdout
    metrics = json.loads((run / "metrics.json").read_text())
    assert [e["epoch"] for e in metrics["epochs"]] == [1, 2] and metrics["framework"] == "jax"
    assert all(len(e["step_losses"]) == 8 and e["time_s"] > 0 for e in metrics["epochs"])
    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    assert {"torch/train_loss", "jax/train_loss", "jax/eval_loss", "jax/samples_per_s"} <= set(events.Tags()["scalars"])
    assert [e.step for e in events.Scalars("jax/eval_loss")] == [2]

    out = run_cli("train", "--resume", str(run), "--epochs", "3", "--preset", "tanh3", data_dir=data_dir)
    assert out.returncode == 2 and "--preset tanh3 (the run has mlp9)" in out.stderr
    out = run_cli("train", "--resume", str(run), "--epochs", "2", data_dir=data_dir)
    assert out.returncode == 2 and "already holds 2 epochs" in out.stderr
    (run / "checkpoint.safetensors").write_bytes(b"junk")
    out = run_cli("train", "--resume", str(run), "--epochs", "3", data_dir=data_dir)
    assert out.returncode == 1 and "checkpoint.safetensors: not a valid safetensors file" in out.stderr


@pytest.mark.parametrize("framework", ["torch", "jax"])
@pytest.mark.parametrize("preset", ["conv", "conv_bn", "denoise", "denoise_mask", "tied", "vae", "lstm"])
def test_train_every_family_preset(preset, framework, data_dir, tmp_path):
    extra = ["--loss", "bce"] if preset == "conv" else []
    out = run_cli("train", "--framework", framework, "--preset", preset, "--epochs", "1", "--limit", "256",
                  "--batch-size", "64", "--out", str(tmp_path), "--no-progress", *extra, data_dir=data_dir)
    assert out.returncode == 0, out.stderr
    assert f"{framework} {preset}: 1 epochs" in out.stdout
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["epochs"][0]["steps"] == 4
    assert metrics["config"]["loss"] == ("vae" if preset == "vae" else "bce" if preset == "conv" else "mse")


def test_train_progress_bar_names_steps_loss_and_rate(data_dir, tmp_path):
    out = run_cli("train", "--framework", "jax", "--epochs", "1", "--limit", "256", "--out", str(tmp_path),
                  data_dir=data_dir)
    assert out.returncode == 0, out.stderr
    assert "[jax] epoch 1/1" in out.stderr and "loss " in out.stderr and "samples/s" in out.stderr
