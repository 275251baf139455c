"""The fault-injection suite (issue 16): ``ae-parity train`` killed with ``kill -9`` at 28 seeded random
instants (every one before the run ends), ended just before each of its write steps, refused by a file-size limit (EFBIG, as a full disk
would) and by a read-only file system, and raced by a second writer. After each fault the folder loads
(checkpoint and metrics consistent, no metrics without a checkpoint), and recovering it -- resuming it,
or starting again where no checkpoint was written -- gives the uninterrupted run bit for bit (float64):
weights, optimizer state and every step's loss. The runs are forked by ``fault_worker.py``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ae_core.training import load_checkpoint
from ae_core.weights import read_metadata
from ae_parity.rundir import read_run

WORKER = Path(__file__).with_name("fault_worker.py")
RECORD = ("epoch", "steps", "train_loss", "eval_loss", "step_losses")


def strict(text: str):
    def refuse(name):
        raise ValueError(f"not JSON: {name}")

    return json.loads(text, parse_constant=refuse)


def run_worker(mode: str, data_dir, work: Path) -> dict:
    out = subprocess.run([sys.executable, str(WORKER), mode, str(data_dir), str(work)], capture_output=True,
                         text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def temps(d: Path) -> list[str]:
    return [p.name for p in d.iterdir() if p.name.endswith(".tmp")]


def assert_loads(crashed: Path) -> int:
    """What a fault left: a checkpoint that loads with metrics that agree with it (or rebuild from it), or
    no checkpoint and then no metrics either. Returns the checkpoint's epoch (0: none)."""
    if not crashed.exists() or not (crashed / "checkpoint.safetensors").exists():
        assert not crashed.exists() or not (crashed / "metrics.json").exists(), f"{crashed}: metrics without a checkpoint"
        return 0
    ckpt, metrics, problem = read_run(crashed)
    assert [r["epoch"] for r in metrics["epochs"]] == list(range(1, ckpt.epoch + 1))
    if problem is not None:  # only ever a metrics.json one epoch behind its checkpoint (or not yet written)
        saved = strict((crashed / "metrics.json").read_text())["epochs"] if (crashed / "metrics.json").exists() else []
        assert len(saved) == ckpt.epoch - 1, (crashed, problem)
    return ckpt.epoch


def assert_equals_reference(d: Path, reference: Path) -> None:
    got, want = load_checkpoint(d / "checkpoint.safetensors"), load_checkpoint(reference / "checkpoint.safetensors")
    assert (got.epoch, got.step) == (want.epoch, want.step)
    for part in ("model", "optim"):
        a, b = getattr(got, part), getattr(want, part)
        assert sorted(a) == sorted(b)
        for k in a:
            np.testing.assert_array_equal(a[k], b[k], err_msg=f"{d}: {part}.{k}")
    records = [{k: r[k] for k in RECORD} for r in strict((d / "metrics.json").read_text())["epochs"]]
    assert records == [{k: r[k] for k in RECORD} for r in strict((reference / "metrics.json").read_text())["epochs"]]
    assert read_run(d)[2] is None and temps(d) == []
    # best.safetensors holds the reference's best epoch (a crash between the checkpoint and it is caught up)
    best = min(strict((reference / "metrics.json").read_text())["epochs"], key=lambda r: r["eval_loss"])["epoch"]
    assert read_metadata(d / "best.safetensors")["epoch"] == str(best), d


def assert_recovered(work: Path, run: dict) -> None:
    d = work / run["dir"]
    epoch = assert_loads(work / f"{run['dir']}.crashed")
    log = (work / f"{run['dir']}.recover.log").read_text()
    if run["recovered"] == 2:  # the fault came after the last checkpoint: the run was complete
        assert epoch == 2 and "already holds 2 epochs" in log, log
    else:
        assert run["recovered"] == 0, log
    assert_equals_reference(d, work / "reference")


@pytest.fixture(scope="module")
def faults(data_dir, tmp_path_factory):
    return lambda mode: (lambda work: (work, run_worker(mode, data_dir, work)))(tmp_path_factory.mktemp(mode))


def test_kill_minus_9_at_random_instants(faults):
    work, report = faults("kill")
    runs = report["runs"]
    # each killed mid-run: one that ended before its instant was drawn again (fault_worker.kills)
    assert len(runs) == 28 and all(r["status"] == -9 for r in runs), [(r["delay_s"], r["status"]) for r in runs]
    for run in runs:
        assert_recovered(work, run)


def test_a_crash_just_before_every_write_step(faults):
    work, report = faults("steps")
    # per epoch a checkpoint, a best.safetensors (the eval loss improves in both epochs) and a metrics.json
    evals = [r["eval_loss"] for r in strict((work / "reference" / "metrics.json").read_text())["epochs"]]
    assert len(evals) == 2 and evals[1] < evals[0]
    assert report["steps"].count("replace") == 6
    assert [r["status"] for r in report["runs"]] == [137] * len(report["steps"])
    for run in report["runs"]:
        assert_recovered(work, run)
    epochs = [assert_loads(work / f"{r['dir']}.crashed") for r in report["runs"]]
    assert epochs == sorted(epochs) and set(epochs) == {0, 1, 2}  # every stage of the run was hit


def test_a_file_size_limit_a_read_only_folder_and_a_second_writer(faults):
    work, report = faults("limits")
    base = (work / "base" / "checkpoint.safetensors").read_bytes()
    for name, cause in (("fsize", "File too large (EFBIG)"), ("readonly", "Read-only file system (EROFS)")):
        err = (work / f"{name}.log").read_text().strip().splitlines()
        assert report[name]["status"] == 1 and len(err) == 2, err  # the resume line, then the one error
        assert err[-1].startswith(f"ae-parity train: error: cannot write {work / name}") and err[-1].endswith(cause)
        crashed = work / f"{name}.crashed"
        assert (crashed / "checkpoint.safetensors").read_bytes() == base and temps(crashed) == []
        assert report[name]["recovered"] == 0
        assert_equals_reference(work / name, work / "reference")
    race = report["concurrent"]
    assert (race["first"], race["second"]) == (0, 2)
    second = (work / "concurrent.second.log").read_text()
    assert f"is being written by process {race['first_pid']} on" in second and len(second.strip().splitlines()) == 1
    assert_equals_reference(work / "concurrent", work / "reference")
