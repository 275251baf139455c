"""A run directory is one consistent unit (issue 16, items 3, 5, 6, 12): the checkpoint holds the run's data
settings and its epoch records, so a resume trains on the same data and a metrics.json lost or damaged
(or one epoch behind, a crash between the two renames) is rebuilt from the checkpoint, in one line."""

import json
import shutil

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from ae_core import UsageError
from ae_core.optim import OptimizerConfig
from ae_core.training import TrainConfig, load_checkpoint
from ae_core.weights import CheckpointError
from ae_parity import cli
from ae_parity.rundir import read_run
from ae_parity.runner import CHECKPOINT, METRICS, Data, train_run

CONFIG = dict(batch_size=50, optimizer=OptimizerConfig("adam", lr=2e-3), dtype="float64", seed=1)


def train_cli(*argv):
    return cli.main(["train", "--framework", "torch", "--preset", "mlp16", "--dtype", "float64", "--batch-size",
                     "32", "--no-progress", *argv])


def weights(run_dir):
    return load_checkpoint(run_dir / CHECKPOINT).model


def test_a_resume_trains_on_the_runs_data_and_refuses_other_data(tmp_path, data_dir, capsys):
    """Issue 16, item 3: a --limit 96 run resumed without --limit went on with all 4,000 digits. The limit
    and source are recorded in the checkpoint; a resume without them uses them (and equals the uninterrupted
    run bit for bit), a resume with others is refused naming them."""
    common = ("--data", "sample", "--data-dir", str(data_dir))
    assert train_cli("--out", str(tmp_path / "whole"), "--epochs", "2", "--limit", "96", *common) == 0
    assert train_cli("--out", str(tmp_path / "cut"), "--epochs", "1", "--limit", "96", *common) == 0
    ckpt = load_checkpoint(tmp_path / "cut" / CHECKPOINT)
    assert (ckpt.data["source"], ckpt.data["limit"], ckpt.data["train_examples"]) == ("sample", 96, 96)
    capsys.readouterr()
    assert train_cli("--resume", str(tmp_path / "cut"), "--epochs", "2", "--limit", "128", *common) == 2
    err = capsys.readouterr().err
    assert "the run trained on other data" in err and "limit 128 (the run: 96)" in err and "--limit 96" in err
    assert len(err.strip().splitlines()) == 1 and load_checkpoint(tmp_path / "cut" / CHECKPOINT).epoch == 1
    assert cli.main(["train", "--framework", "torch", "--resume", str(tmp_path / "cut"), "--epochs", "2", "--no-progress",
                     "--data-dir", str(data_dir)]) == 0  # no --data, no --limit: the run's
    for name, value in weights(tmp_path / "whole").items():
        np.testing.assert_array_equal(weights(tmp_path / "cut")[name], value, err_msg=name)


def test_a_resume_on_changed_data_files_is_refused(tmp_path, train):
    x = train.images[:100].reshape(100, -1).astype(np.float64) / 255
    train_run("torch", "mlp16", TrainConfig(epochs=1, **CONFIG), tmp_path, data=Data(x, x, "sample"), log=print)
    changed = x.copy()
    changed[7, 300] = 0.5
    with pytest.raises(CheckpointError, match="the training data have changed since the run trained on them"):
        train_run("torch", "mlp16", TrainConfig(epochs=2, **CONFIG), tmp_path, data=Data(changed, x, "sample"),
                  resume=True, log=print)
    with pytest.raises(UsageError, match=r"train_examples 99 \(the run: 100\)"):
        train_run("torch", "mlp16", TrainConfig(epochs=2, **CONFIG), tmp_path, data=Data(x[:99], x, "sample"),
                  resume=True, log=print)


@pytest.fixture(scope="module")
def two_epochs(tmp_path_factory, train):
    """A 2-epoch run, its metrics.json after epoch 1 and after epoch 2, and an uninterrupted 3-epoch run."""
    x = train.images[:200].reshape(200, -1).astype(np.float64) / 255
    data, root = Data(x, x[:100], "sample"), tmp_path_factory.mktemp("runs")
    train_run("jax", "mlp16", TrainConfig(epochs=1, **CONFIG), root / "run", data=data, log=print)
    after_one = (root / "run" / METRICS).read_bytes()
    train_run("jax", "mlp16", TrainConfig(epochs=2, **CONFIG), root / "run", data=data, resume=True, log=print)
    reference = train_run("jax", "mlp16", TrainConfig(epochs=3, **CONFIG), root / "whole", data=data, log=print)
    return data, root / "run", after_one, (root / "run" / METRICS).read_bytes(), reference


def same_records(a, b, timed=True):
    keys = ("epoch", "steps", "train_loss", "eval_loss", "step_losses") + (("time_s",) if timed else ())
    assert [{k: r[k] for k in keys} for r in a] == [{k: r[k] for k in keys} for r in b]


@pytest.mark.parametrize("damage", ["missing", "empty", "truncated", "a list", "no epochs", "one epoch behind",
                                    "edited"])
def test_a_lost_or_damaged_metrics_file_is_rebuilt_from_the_checkpoint(tmp_path, two_epochs, damage):
    """Items 5 and 6: a crash between the checkpoint's rename and the metrics write ("one epoch behind"), or
    an empty, truncated or wrong-shaped metrics.json, blocked resuming or lost that epoch's records. The
    checkpoint holds them: the reader sees them, and a resume rewrites metrics.json and goes on."""
    data, run, after_one, after_two, reference = two_epochs
    d = tmp_path / "run"
    shutil.copytree(run, d)
    good = json.loads(after_two)
    text = {"missing": None, "empty": b"", "truncated": after_two[: len(after_two) // 2], "a list": b"[]",
            "no epochs": b'{"framework": "jax"}', "one epoch behind": after_one,
            "edited": after_two.replace(b'"epoch": 2', b'"epoch": 7')}[damage]
    (d / METRICS).unlink()
    if text is not None:
        (d / METRICS).write_bytes(text)
    ckpt, metrics, problem = read_run(d)
    assert problem is not None and ckpt.epoch == 2
    same_records(metrics["epochs"], good["epochs"])
    assert metrics["data"] == good["data"] and metrics["spec"] == good["spec"]
    said = []
    train_run("jax", "mlp16", TrainConfig(epochs=3, **CONFIG), d, data=data, resume=True, log=said.append)
    rebuilt = [m for m in said if "rebuilt from" in m]
    assert len(rebuilt) == 1 and f"{d / METRICS} {problem}: rebuilt from" in rebuilt[0]
    final = json.loads((d / METRICS).read_text())
    same_records(final["epochs"][:2], good["epochs"])
    same_records(final["epochs"], reference["epochs"], timed=False)  # and the run went on as if never damaged
    assert read_run(d)[2] is None


def test_an_intact_run_reads_and_resumes_without_a_word(tmp_path, two_epochs):
    data, run, _, after_two, _ = two_epochs
    shutil.copytree(run, tmp_path / "run")
    ckpt, metrics, problem = read_run(tmp_path / "run")
    assert problem is None and metrics == json.loads(after_two)
    assert [r["epoch"] for r in ckpt.history] == [1, 2] and sum(r["steps"] for r in ckpt.history) == ckpt.step
    said = []
    train_run("jax", "mlp16", TrainConfig(epochs=3, **CONFIG), tmp_path / "run", data=data, resume=True,
              log=said.append)
    assert not [m for m in said if "rebuilt" in m]


@pytest.mark.parametrize("key, value, message", [
    ("spec", "[1, 2]", "unreadable checkpoint metadata"),
    ("spec", "{\"name\": 3}", "unreadable checkpoint metadata"),
    ("step", "1e30", "unreadable checkpoint metadata"),
    ("step", str(10 ** 30), "counts below 2\\*\\*53"),
    ("epoch", "-1", "counts below 2\\*\\*53"),
    ("config", "{}", "unreadable checkpoint metadata"),
    ("history", "[{\"epoch\": 1, \"steps\": 3}]", "history holds epochs \\[1\\], not 1..2"),
    ("history", "{}", "history is not a list of epoch records"),
    ("data", "[]", "data and run must be JSON objects"),
])
def test_crafted_checkpoint_metadata_is_one_line(tmp_path, two_epochs, capsys, key, value, message):
    """Item 12: crafted metadata (a spec that is a list, a step of 1e30, ...) gave tracebacks."""
    _, run, _, _, _ = two_epochs
    d = tmp_path / "run"
    shutil.copytree(run, d)
    from safetensors import safe_open

    with safe_open(str(d / CHECKPOINT), "np") as f:
        meta = dict(f.metadata())
    save_file(load_file(d / CHECKPOINT), d / CHECKPOINT, metadata={**meta, key: value})
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(d / CHECKPOINT)
    assert cli.main(["train", "--resume", str(d), "--epochs", "3"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("ae-parity train: error:") and len(err.strip().splitlines()) == 1, err


def as_written_by_an_older_version(run_dir):
    """The checkpoint as ae-parity wrote it before it held the run's data settings and epoch records."""
    from safetensors import safe_open

    with safe_open(str(run_dir / CHECKPOINT), "np") as f:
        meta = {k: v for k, v in f.metadata().items() if k not in ("history", "data", "run")}
        tensors = {k: f.get_tensor(k) for k in f.keys() if k != "run.step_losses"}
    save_file(tensors, run_dir / CHECKPOINT, metadata=meta)


@pytest.mark.parametrize("metrics", ["intact", "a gap", "not JSON"])
def test_a_checkpoint_of_an_older_version_resumes(tmp_path, two_epochs, metrics):
    """Without records in the checkpoint, metrics.json is all there is: an intact one is taken (and the
    next checkpoint holds the records again); one with a gap still resumes (the next checkpoint then holds
    none rather than records that do not add up); an unreadable one is refused in one line."""
    data, run, _, after_two, reference = two_epochs
    d = tmp_path / "run"
    shutil.copytree(run, d)
    as_written_by_an_older_version(d)
    assert load_checkpoint(d / CHECKPOINT).history is None
    good = json.loads(after_two)
    if metrics == "a gap":
        (d / METRICS).write_text(json.dumps(dict(good, epochs=good["epochs"][1:])))
    elif metrics == "not JSON":
        (d / METRICS).write_text("{")
        with pytest.raises(CheckpointError, match="is not valid JSON .* holds no copy of the epoch records: move "
                                                  "metrics.json away to resume with records from epoch 3 on"):
            train_run("jax", "mlp16", TrainConfig(epochs=3, **CONFIG), d, data=data, resume=True, log=print)
        return
    train_run("jax", "mlp16", TrainConfig(epochs=3, **CONFIG), d, data=data, resume=True, log=print)
    ckpt = load_checkpoint(d / CHECKPOINT)
    assert ckpt.epoch == 3
    if metrics == "intact":
        same_records(ckpt.history, reference["epochs"], timed=False)
    else:
        assert ckpt.history is None and [r["epoch"] for r in json.loads((d / METRICS).read_text())["epochs"]] == [2, 3]
