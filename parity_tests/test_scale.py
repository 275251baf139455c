"""Many devices and many hosts (ae_jax.sharding): data-parallel training equals single-device training.

The device count and jax.distributed are fixed when JAX starts, so these run in subprocesses: 4
simulated CPU devices (``jax_num_cpu_devices``) for data parallelism, and 2 real processes talking
over 127.0.0.1 (CPU collectives: gloo) for multi-host.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ae_core.training import load_checkpoint
from ae_parity.cli import main

from helpers import assert_trees_all_close

WORKER = Path(__file__).with_name("multidevice_worker.py")
REPO = Path(__file__).parents[1]


def _env(**extra) -> dict:
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "AE_PARITY_OFFLINE": "1", "PYTHONPATH": path, **extra}
    env.pop("XLA_FLAGS", None)
    return env


@pytest.fixture(scope="module")
def multidevice(data_dir):
    # mlp9: the scanned epoch; conv_bn: jitted steps, BatchNorm batch statistics over the split batch and
    # dropout masks split with it
    out = subprocess.run([sys.executable, str(WORKER), str(data_dir), "mlp9", "conv_bn"], env=_env(),
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("preset", ["mlp9", "conv_bn"])
def test_data_parallel_equals_one_device(multidevice, preset):
    r = multidevice[preset]
    assert r["devices"] == 4 and r["params_replicated_on"] == 4
    assert r["all_reduce"], "the compiled program has no cross-device reduction: the batch was not split"
    # float64, same batches: every step's loss, and the whole model and optimizer state after each epoch
    assert r["step_loss"] <= 1e-12, r
    assert r["state"] <= 1e-12 and r["optim"] <= 1e-12, r
    assert r["eval"] <= 1e-12, r
    assert max(r["compiled"].values()) == 1, "recompiled between epochs"


def test_sweep_models_split_over_devices(multidevice):
    r = multidevice["sweep"]
    assert r["models_per_device"] == [1, 1, 1, 1]
    assert r["step_loss"] <= 1e-12 and r["state"] <= 1e-12 and r["eval"] <= 1e-12, r
    assert max(r["compiled"].values()) == 1


def test_data_parallel_bad_layouts_are_refused(multidevice):
    errors = multidevice["errors"]
    assert errors["indivisible"] == "batch size 30 does not split evenly over 4 devices; use a multiple of 4"
    assert errors["too_many"] == "asked for 5 devices; this machine has 4 (cpu)"
    assert errors["sweep_indivisible"] == ("a sweep of 3 models does not split evenly over 4 devices; "
                                           "use a multiple of 4")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_train_like_one(data_dir, tmp_path):
    """Two processes (2 CPU devices each, one 4-device mesh over 127.0.0.1) train the same model as one
    process on one device; process 0 alone writes the run directory."""
    args = [sys.executable, "-m", "ae_parity.cli", "train", "--framework", "jax", "--preset", "mlp9",
            "--dtype", "float64", "--limit", "256", "--epochs", "2", "--batch-size", "32", "--no-progress",
            "--data", "sample", "--data-dir", str(data_dir)]
    coordinator = f"127.0.0.1:{_free_port()}"
    env = _env(JAX_NUM_CPU_DEVICES="2")
    procs = [subprocess.Popen(args + ["--out", str(tmp_path / f"run{i}"), "--coordinator", coordinator,
                                      "--num-processes", "2", "--process-id", str(i)],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(2)]
    solo = subprocess.run(args + ["--out", str(tmp_path / "solo")], env=_env(), capture_output=True, text=True,
                          timeout=300)
    outputs = [p.communicate(timeout=300) for p in procs]
    for p, (_, stderr) in zip(procs, outputs):
        assert p.returncode == 0, stderr[-3000:]
    assert solo.returncode == 0, solo.stderr[-3000:]
    assert "nothing written" in outputs[1][0]
    assert not (tmp_path / "run1").exists(), "process 1 wrote files"

    two, one = load_checkpoint(tmp_path / "run0" / "checkpoint.safetensors"), load_checkpoint(
        tmp_path / "solo" / "checkpoint.safetensors")
    assert (two.epoch, two.step) == (one.epoch, one.step) == (2, 16)
    assert_trees_all_close(two.model, one.model, atol=1e-12)
    assert_trees_all_close(two.optim, one.optim, atol=1e-12)
    m2, m1 = (json.loads((tmp_path / d / "metrics.json").read_text()) for d in ("run0", "solo"))
    for e2, e1 in zip(m2["epochs"], m1["epochs"], strict=True):
        np.testing.assert_allclose(e2["step_losses"], e1["step_losses"], rtol=1e-12, atol=0)


@pytest.mark.parametrize("argv, message", [
    (["--coordinator", "127.0.0.1:1234"], "missing --num-processes, --process-id"),
    (["--coordinator", "nohost", "--num-processes", "2", "--process-id", "0"], "expected HOST:PORT"),
    (["--coordinator", "127.0.0.1:1", "--num-processes", "2", "--process-id", "2"], "--process-id must be in [0, 2)"),
    (["--framework", "torch", "--devices", "2"], "--devices is for --framework jax"),
    (["--devices", "2"], "asked for 2 devices; this machine has 1"),
])
def test_scale_flags_are_checked(data_dir, tmp_path, capsys, argv, message):
    code = main(["train", "--preset", "mlp9", "--limit", "64", "--epochs", "1", "--no-progress", "--data", "sample",
                 "--data-dir", str(data_dir), "--out", str(tmp_path / "run"), *argv])
    assert code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_distributed_without_a_cluster_is_a_clear_error(data_dir, tmp_path):
    # a fresh process (jax.distributed must start before any JAX computation), with no cluster variables
    env = {k: v for k, v in _env().items()
           if not k.startswith(("SLURM_", "OMPI_", "PMI_", "TPU_", "KUBERNETES_", "JAX_COORDINATOR"))}
    out = subprocess.run([sys.executable, "-m", "ae_parity.cli", "train", "--framework", "jax", "--distributed",
                          "--preset", "mlp9", "--limit", "64", "--epochs", "1", "--no-progress", "--data", "sample",
                          "--data-dir", str(data_dir), "--out", str(tmp_path / "run")],
                         env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 1, out.stderr
    assert "--distributed found no cluster to join" in out.stderr
    assert "Traceback" not in out.stderr
    assert not (tmp_path / "run").exists()


def test_torch_commands_do_not_import_jax(tmp_path):
    # the JAX-side error types are matched lazily: a torch-only run never pays for (or needs) JAX
    code = ("import sys\nfrom ae_parity.cli import main\n"
            f"rc = main(['train', '--framework', 'torch', '--resume', {str(tmp_path / 'none')!r}])\n"
            "print(rc, 'jax' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], env=_env(), capture_output=True, text=True, timeout=120)
    assert out.stdout.split() == ["1", "False"], out.stderr
    assert "file not found" in out.stderr
