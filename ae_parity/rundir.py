"""One run directory: ``checkpoint.safetensors`` and ``metrics.json``, written together after every epoch.

``ae-parity train`` (:func:`ae_parity.runner.train_run`) and every member of ``ae-parity sweep``
(:func:`ae_parity.sweep.sweep_run`) write the same files through :class:`RunDir`, so any run directory
resumes with ``ae-parity train --resume`` in either framework.

    metrics.json   {"framework", "preset", "spec", "config", "data", ["sweep",] "epochs": [record, ...]}
                   (a model graph's run: "model" and "graph" instead of "preset" and "spec")
                   a record: {"epoch", "steps", "train_loss", "eval_loss", "time_s", "samples_per_s",
                   "step_losses"} (JSON, indent 1)
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import sys
from pathlib import Path

import numpy as np

from ae_core import ModelSpec, UsageError
from ae_core.graph import Graph
from ae_core.files import atomic_write
from ae_core.training import Checkpoint, TrainConfig, load_checkpoint, save_checkpoint

CHECKPOINT = "checkpoint.safetensors"
METRICS = "metrics.json"
LOCK = ".lock"
TENSORBOARD = "tensorboard"


def check_out_dir(path, *, overwrite: bool = False) -> Path:
    """A new run's directory, before anything is written: refused (UsageError, one line) when the path is
    empty, is a file or sits under one, or already holds a run -- unless ``overwrite``, which removes that
    run's files (checkpoint, metrics, TensorBoard scalars; nothing else in the folder)."""
    if str(path).strip() == "":
        raise UsageError("--out: the run directory is an empty path")
    path = Path(path)
    for p in (path, *path.parents):
        if p.exists() and not p.is_dir():
            raise UsageError(f"--out {path}: {p} is a file, not a directory")
    held = [name for name in (CHECKPOINT, METRICS) if (path / name).exists()]
    if held and not overwrite:
        raise UsageError(f"--out {path} already holds a run ({', '.join(held)}): continue it with --resume {path}, "
                         f"or replace it with --overwrite")
    return path


def clear_run(path: Path) -> None:
    """``--overwrite``: remove the run's own files (under the run's lock)."""
    for name in (CHECKPOINT, METRICS):
        (path / name).unlink(missing_ok=True)
    shutil.rmtree(path / TENSORBOARD, ignore_errors=True)


class RunLock:
    """An advisory lock on a run directory (``.lock``, ``fcntl.flock``) held while a process writes it, so a
    second writer is refused at once, naming the holder. The kernel drops the lock when its process dies,
    so a lock left by a killed run is simply taken over (the file stays; its content names the last holder).
    Where ``fcntl`` does not exist (Windows) nothing is locked."""

    def __init__(self, path):
        self.path = Path(path)
        self.fd: int | None = None
        self.created = False

    def __enter__(self) -> "RunLock":
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not on Linux / macOS
            return self
        self.created = not self.path.exists()
        self.path.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 4096).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise UsageError(f"{self.path} is being written by {holder}: wait for it to finish, or write "
                             f"elsewhere") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"process {os.getpid()} on {socket.gethostname()} ({' '.join(sys.argv)[:200]})\n".encode())
        self.fd = fd
        return self

    def __exit__(self, *exc) -> None:
        if self.fd is None:
            return
        if self.created and [p.name for p in self.path.iterdir()] == [LOCK]:  # failed before writing anything:
            (self.path / LOCK).unlink()                                      # leave no trace of it
            self.path.rmdir()
        os.close(self.fd)  # releases the flock
        self.fd = None


def metrics_header(framework: str, spec: ModelSpec | Graph, config: TrainConfig, data_source: str, *,
                   sweep: dict | None = None) -> dict:
    """A run's metrics before its first epoch: what was trained, on what, and an empty epoch list."""
    model = ({"model": spec.name, "graph": json.loads(spec.to_json())} if isinstance(spec, Graph)
             else {"preset": spec.name, "spec": json.loads(spec.to_json())})
    metrics = {"framework": framework, **model, "config": json.loads(config.to_json()), "data": data_source}
    if sweep is not None:
        metrics["sweep"] = sweep
    metrics["epochs"] = []
    return metrics


def epoch_record(epoch: int, losses: np.ndarray, eval_loss: float, seconds: float, batch_size: int) -> dict:
    """One epoch's entry in ``metrics["epochs"]``; ``epoch`` counts from 1, ``losses`` holds the step losses."""
    return {"epoch": epoch, "steps": len(losses), "train_loss": float(losses.mean()),
            "eval_loss": float(eval_loss), "time_s": seconds,
            "samples_per_s": len(losses) * batch_size / seconds,
            "step_losses": losses.tolist()}


class RunDir:
    """The run directory ``path`` of one model: its metrics (in memory, written with every checkpoint)."""

    def __init__(self, path, framework: str, spec: ModelSpec | Graph, config: TrainConfig, data_source: str, *,
                 sweep: dict | None = None):
        self.path = Path(path)
        self.framework, self.spec, self.config = framework, spec, config
        self.metrics = metrics_header(framework, spec, config, data_source, sweep=sweep)

    @property
    def checkpoint(self) -> Path:
        return self.path / CHECKPOINT

    @property
    def metrics_path(self) -> Path:
        return self.path / METRICS

    @property
    def epochs(self) -> list[dict]:
        return self.metrics["epochs"]

    def load_checkpoint(self) -> Checkpoint:
        """The checkpoint, validated against this run's spec and dtype."""
        return load_checkpoint(self.checkpoint, spec=self.spec, dtype=self.config.dtype)

    def keep_epochs(self, upto: int) -> None:
        """Resume: take the epoch records already in metrics.json, up to epoch ``upto`` (the checkpoint's)."""
        if self.metrics_path.exists():
            saved = json.loads(self.metrics_path.read_text())["epochs"]
            self.metrics["epochs"] = [e for e in saved if e["epoch"] <= upto]

    def add_epoch(self, epoch: int, losses: np.ndarray, eval_loss: float, seconds: float) -> dict:
        """Record an epoch (counted from 1) in memory; return the record."""
        record = epoch_record(epoch, losses, eval_loss, seconds, self.config.batch_size)
        self.metrics["epochs"].append(record)
        return record

    def write(self, epoch: int, step: int, model_state: dict, optimizer_state: dict) -> None:
        """The checkpoint after ``epoch`` epochs and ``step`` steps, then metrics.json (each atomically)."""
        self.path.mkdir(parents=True, exist_ok=True)
        save_checkpoint(self.checkpoint, Checkpoint(self.spec, self.config, epoch, step, model_state,
                                                    optimizer_state, self.framework))
        # strict JSON: a NaN or inf never reaches the file (train_run refuses such an epoch before writing)
        atomic_write(self.metrics_path, json.dumps(self.metrics, indent=1, allow_nan=False).encode())
