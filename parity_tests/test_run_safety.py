"""Runs never lose data (issue 16, first part): an existing run is not replaced unless asked, two writers
never share a run directory, a diverged epoch is never kept as good state, metrics are strict JSON."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from ae_core import UsageError, get_spec, model_inputs
from ae_core.optim import OptimizerConfig
from ae_core.training import TrainConfig, load_checkpoint
from ae_parity import cli
from ae_parity.rundir import LOCK, RunLock
from ae_parity.runner import CHECKPOINT, METRICS, Data, NonFiniteLossError, train_run

CONFIG = dict(batch_size=50, optimizer=OptimizerConfig("adam", lr=2e-3), dtype="float64", seed=1)
QUIET = dict(log=lambda m: None)


@pytest.fixture(scope="module")
def data(train):
    x = model_inputs(get_spec("mlp16"), train.images[:300], "float64")
    return Data(x, x[:100], "sample")


def strict_json(text: str):
    def refuse(name):
        raise ValueError(f"not JSON: {name}")

    return json.loads(text, parse_constant=refuse)


def test_an_existing_run_is_refused_unless_overwritten(tmp_path, data):
    train_run("torch", "mlp16", TrainConfig(epochs=2, **CONFIG), tmp_path, data=data, **QUIET)
    before = (tmp_path / CHECKPOINT).read_bytes()
    with pytest.raises(UsageError, match=rf"--out {tmp_path} already holds a run .*--resume .*--overwrite"):
        train_run("jax", "mlp16", TrainConfig(epochs=1, **CONFIG), tmp_path, data=data, **QUIET)
    assert (tmp_path / CHECKPOINT).read_bytes() == before  # nothing touched
    metrics = train_run("jax", "mlp16", TrainConfig(epochs=1, **CONFIG), tmp_path, data=data, overwrite=True, **QUIET)
    assert metrics["framework"] == "jax" and len(strict_json((tmp_path / METRICS).read_text())["epochs"]) == 1
    assert load_checkpoint(tmp_path / CHECKPOINT).epoch == 1


@pytest.mark.parametrize("out, message", [("", "empty path"), ("{file}/run", "is a file, not a directory")])
def test_an_unusable_out_is_one_line(tmp_path, data, out, message):
    (tmp_path / "file").write_text("x")
    with pytest.raises(UsageError, match=message):
        train_run("torch", "mlp16", TrainConfig(epochs=1, **CONFIG), out.format(file=tmp_path / "file"), data=data,
                  **QUIET)


def test_a_second_writer_is_refused_naming_the_first_and_a_killed_ones_lock_is_taken_over(tmp_path, data):
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from ae_parity.rundir import RunLock\n"
                               "with RunLock(sys.argv[1]):\n    print('locked', flush=True); time.sleep(600)",
                               str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(UsageError, match=rf"is being written by process {holder.pid} on "):
            train_run("torch", "mlp16", TrainConfig(epochs=1, **CONFIG), tmp_path, data=data, **QUIET)
        assert not (tmp_path / CHECKPOINT).exists()
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
        holder.stdout.close()
    assert (tmp_path / LOCK).exists()  # left behind by the killed holder: the kernel released its lock
    train_run("torch", "mlp16", TrainConfig(epochs=1, **CONFIG), tmp_path, data=data, **QUIET)
    assert load_checkpoint(tmp_path / CHECKPOINT).epoch == 1
    with RunLock(tmp_path) as lock:  # and the run let go of it when it finished
        assert lock.fd is not None


@pytest.mark.parametrize("framework", ["torch", "jax"])
def test_a_diverged_epoch_is_never_kept_as_good_state(framework, tmp_path, data):
    """Adam with lr 1e30, one step per epoch: that step's loss is finite (computed before its update) but
    the weights it leaves are ~1e30 and the evaluation loss is not finite. The epoch is refused: no
    checkpoint, no metrics with a NaN in them."""
    config = TrainConfig(epochs=3, batch_size=len(data.x_train), optimizer=OptimizerConfig("adam", lr=1e30),
                         dtype="float32", seed=1)
    with pytest.raises(NonFiniteLossError, match=r"non-finite (weights|evaluation loss) .* after epoch 1, its step "
                                                 r"losses finite: training stopped; no checkpoint was written"):
        train_run(framework, "mlp16", config, tmp_path, data=data, **QUIET)
    assert not (tmp_path / CHECKPOINT).exists() and not (tmp_path / METRICS).exists()


def test_a_diverging_resume_keeps_the_last_good_checkpoint_and_strict_metrics(tmp_path, data):
    train_run("torch", "mlp16", TrainConfig(epochs=1, **CONFIG), tmp_path, data=data, **QUIET)
    good, metrics = (tmp_path / CHECKPOINT).read_bytes(), (tmp_path / METRICS).read_text()
    wild = dict(CONFIG, optimizer=OptimizerConfig("adam", lr=1e30))
    with pytest.raises(UsageError):  # the optimizer is part of the run: resuming needs the same
        train_run("torch", "mlp16", TrainConfig(epochs=2, **wild), tmp_path, data=data, resume=True, **QUIET)
    poisoned = Data(data.x_train, np.full_like(data.x_eval, np.nan), "sample")  # a NaN evaluation loss
    with pytest.raises(NonFiniteLossError, match=r"non-finite evaluation loss \(nan\) after epoch 2.*the last good "
                                                 r"checkpoint is kept"):
        train_run("torch", "mlp16", TrainConfig(epochs=2, **CONFIG), tmp_path, data=poisoned, resume=True, **QUIET)
    assert (tmp_path / CHECKPOINT).read_bytes() == good and (tmp_path / METRICS).read_text() == metrics
    strict_json(metrics)


def test_the_train_command_refuses_before_reading_any_data(tmp_path, capsys):
    (tmp_path / METRICS).write_text("{}")
    t = time.perf_counter()
    code = cli.main(["train", "--framework", "torch", "--preset", "mlp16", "--out", str(tmp_path), "--epochs", "1",
                     "--data", "sample", "--data-dir", str(tmp_path / "never")])
    err = capsys.readouterr().err
    assert code == 2 and "already holds a run (metrics.json)" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "never").exists() and time.perf_counter() - t < 5
    assert cli.main(["train", "--resume", str(tmp_path), "--overwrite"]) == 2
    assert "give one of them" in capsys.readouterr().err
