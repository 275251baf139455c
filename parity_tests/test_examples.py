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
