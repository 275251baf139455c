"""The ae-parity command line: the demo, the parity table, bad arguments."""

import os
import subprocess
import sys

import pytest


def run_cli(*args, data_dir, env=None):
    env = dict(os.environ, AE_PARITY_DATA=str(data_dir), **(env or {}))
    return subprocess.run([sys.executable, "-m", "ae_parity.cli", *args], capture_output=True, text=True,
                          env=env, timeout=600)


def test_demo_prints_a_passing_parity_table_on_the_offline_sample(data_dir):
    out = run_cli("demo", data_dir=data_dir)
    assert out.returncode == 0, out.stderr
    assert "mlp9 | float32 | matmul precision highest" in out.stdout
    assert "mlp9 | float64" in out.stdout and "grad decoder.8.weight" in out.stdout
    assert out.stdout.rstrip().endswith("PARITY OK")


def test_demo_says_when_it_writes_the_offline_sample(tmp_path):
    out = run_cli("parity", "--preset", "shallow128", "--dtype", "float64", data_dir=tmp_path,
                  env={"AE_PARITY_MNIST_MIRRORS": "http://127.0.0.1:9/"})
    assert out.returncode == 0, out.stderr
    assert "OFFLINE SAMPLE" in out.stderr and "(sample)" in out.stdout


@pytest.mark.parametrize("args, message", [
    (["demo", "--preset", "mlp10"], "invalid choice: 'mlp10'"),
    (["parity", "--dtype", "float16"], "invalid choice: 'float16'"),
    (["parity", "--batch-size", "0"], "expected a positive integer, got 0"),
    (["parity", "--batch-size", "many"], "expected a positive integer, got 'many'"),
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
