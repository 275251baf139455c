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


def test_every_example_is_exercised():
    tested = {"transfer_weights.py", "train_torch.py", "train_jax.py", "compare_and_plot.py"}
    assert {p.name for p in EXAMPLES.glob("*.py")} == tested
