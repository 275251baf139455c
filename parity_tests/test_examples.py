"""Every script in examples/ runs on tiny settings, so none of them rots."""

import os
import pathlib
import subprocess
import sys

EXAMPLES = pathlib.Path(__file__).resolve().parent.parent / "examples"


def run_example(name, *args, data_dir, cwd):
    env = dict(os.environ, AE_PARITY_DATA=str(data_dir))
    return subprocess.run([sys.executable, str(EXAMPLES / name), *args], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=600)


def test_transfer_weights(tmp_path, data_dir):
    out = run_example("transfer_weights.py", "--preset", "tanh3", "--out", str(tmp_path / "w.safetensors"),
                      data_dir=data_dir, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "round trip bit-exact: True" in out.stdout
    diff = float(out.stdout.split("max |jax - torch| = ")[1].split()[0])
    assert diff <= 1e-6


def test_train_in_torch_train_in_jax_compare_and_plot(tmp_path, data_dir):
    """The three tutorial-style scripts chain: same start and batches -> nearly the same weights."""
    common = ["--epochs", "2", "--limit", "512", "--batch-size", "64"]
    out_t = run_example("train_torch.py", *common, "--out", "t.safetensors", data_dir=data_dir, cwd=tmp_path)
    assert out_t.returncode == 0, out_t.stderr
    out_j = run_example("train_jax.py", *common, "--out", "j.safetensors", data_dir=data_dir, cwd=tmp_path)
    assert out_j.returncode == 0, out_j.stderr
    loss_t = [float(line.split("loss ")[1].split()[0]) for line in out_t.stdout.splitlines() if "loss" in line]
    loss_j = [float(line.split("loss ")[1].split()[0]) for line in out_j.stdout.splitlines() if "loss" in line]
    assert len(loss_t) == len(loss_j) == 2
    assert abs(loss_t[0] - loss_j[0]) <= 1e-4  # same start, same batches (float32)
    out = run_example("compare_and_plot.py", "t.safetensors", "j.safetensors", data_dir=data_dir, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("run in torch vs run in jax") == 2
    assert (tmp_path / "compare.png").read_bytes()[:4] == b"\x89PNG"


def test_port_your_model_finds_the_planted_bug_and_passes_the_fix(tmp_path, data_dir):
    out = run_example("port_your_model.py", "--data", "sample", data_dir=data_dir, cwd=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "FIRST DIVERGENCE: forward features.0 (Conv2d)" in out.stdout
    assert "never 'SAME'" in out.stdout
    assert "bug found at the conv: True; fixed port agrees: True" in out.stdout


def test_diagnose_cli_on_the_example_classes(data_dir, capsys, monkeypatch):
    """`ae-parity diagnose` with FILE.py:Class references: exit 1 and the table for the buggy port (the
    installed command, in its own process), exit 0 and JSON for CI for the fixed one; a bad reference exits
    2 naming it (these two in this process: the same ``cli.main``; that the JSON is the same on every run is
    test_thirdparty.py's)."""
    import json

    from ae_parity import cli as ae_cli

    example = str(EXAMPLES / "port_your_model.py")
    common = ["--input-shape", "1,28,28", "--flax-layout", "nhwc", "--batch", "mnist", "--data", "sample"]
    env = dict(os.environ, AE_PARITY_DATA=str(data_dir))
    args = ["diagnose", "--torch", f"{example}:TorchNet"]
    out = subprocess.run([sys.executable, "-m", "ae_parity.cli", *args, "--flax", f"{example}:BuggyFlaxNet", *common],
                         capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 1, out.stderr
    assert "FIRST DIVERGENCE: forward features.0 (Conv2d)" in out.stdout
    monkeypatch.setenv("AE_PARITY_DATA", str(data_dir))
    assert ae_cli.main([*args, "--flax", f"{example}:FlaxNet", *common, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] and report["first_divergence"] is None and len(report["entries"]) > 10
    assert ae_cli.main([*args, "--flax", f"{example}:NoSuchNet"]) == 2
    assert "defines no NoSuchNet" in capsys.readouterr().err


def test_every_example_is_exercised():
    tested = {"transfer_weights.py", "train_torch.py", "train_jax.py", "compare_and_plot.py", "port_your_model.py",
              "port_automatically.py"}
    assert {p.name for p in EXAMPLES.glob("*.py")} == tested


def test_port_automatically_ports_both_published_models(tmp_path, data_dir):
    out = run_example("port_automatically.py", "--out", str(tmp_path / "ported"), "--batch-size", "4",
                      "--modes", "eval", "--dtypes", "float64", data_dir=data_dir, cwd=tmp_path)
    assert out.returncode == 0, out.stderr  # (float32 certificates: parity_tests/test_port.py)
    assert out.stdout.count("agrees") == 2, out.stdout
    assert (tmp_path / "ported" / "vae_nnx.py").exists() and "noise: {'randn_like'" in out.stdout
    assert float(out.stdout.split("max |port - torch| = ")[1].split()[0]) <= 1e-12
