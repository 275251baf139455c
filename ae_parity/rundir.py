"""One run directory: ``checkpoint.safetensors`` and ``metrics.json``, written together after every epoch,
and ``best.safetensors``, the checkpoint of the epoch with the lowest eval loss so far.

``ae-parity train`` (:func:`ae_parity.runner.train_run`) and every member of ``ae-parity sweep``
(:func:`ae_parity.sweep.sweep_run`) write the same files through :class:`RunDir`, so any run directory
resumes with ``ae-parity train --resume`` in either framework.

    metrics.json   {"framework", "preset", "spec", "config", "data", ["sweep",] "epochs": [record, ...]}
                   "data": {"source", "limit", "train_examples", "eval_examples", "train_sha256"}
                   (a model graph's run: "model" and "graph" instead of "preset" and "spec")
                   a record: {"epoch", "steps", "train_loss", "eval_loss", "time_s", "samples_per_s",
                   "step_losses"} (JSON, indent 1)
                   "best": {"epoch", "eval_loss", "file"}: the best epoch by eval loss (the earliest of
                   equals), whose checkpoint best.safetensors holds (its metadata: "epoch", "extra.role"
                   "best", "extra.eval_loss")
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import socket
import sys
from pathlib import Path

import numpy as np

from ae_core import ModelSpec, UsageError
from ae_core.graph import Graph
from ae_core.files import atomic_write, remove_stale_temps
from ae_core.training import Checkpoint, TrainConfig, history_problem, load_checkpoint, save_checkpoint
from ae_core.weights import CheckpointError, read_metadata

CHECKPOINT = "checkpoint.safetensors"
BEST = "best.safetensors"
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
    for name in (CHECKPOINT, BEST, METRICS):
        (path / name).unlink(missing_ok=True)
    shutil.rmtree(path / TENSORBOARD, ignore_errors=True)


class RunLock:
    """An advisory lock on a run directory (``.lock``, ``fcntl.flock``) held while a process writes it, so a
    second writer is refused at once, naming the holder. The kernel drops the lock when its process dies,
    so a lock left by a killed run is simply taken over (the file stays; its content names the last holder),
    and the temp files such a run left mid-write are removed (``removed``). A run inside a locked folder (a
    sweep's member) also takes that folder's lock, shared: a member is resumed while its sweep is not
    running, and several members at once. Where ``fcntl`` does not exist (Windows) nothing is locked."""

    def __init__(self, path):
        self.path = Path(path)
        self.fd: int | None = None
        self.parent_fd: int | None = None
        self.created = False
        self.removed: list[Path] = []

    def __enter__(self) -> "RunLock":
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not on Linux / macOS
            return self
        self.created = not self.path.exists()
        self.path.mkdir(parents=True, exist_ok=True)
        self.fd = self._take(self.path / LOCK, fcntl.LOCK_EX)
        os.ftruncate(self.fd, 0)
        os.write(self.fd, f"process {os.getpid()} on {socket.gethostname()} ({' '.join(sys.argv)[:200]})\n".encode())
        if (self.path.parent / LOCK).exists():  # a sweep's member: the sweep (its folder's lock) is not running
            try:
                self.parent_fd = self._take(self.path.parent / LOCK, fcntl.LOCK_SH)
            except BaseException:
                self.__exit__()
                raise
        # a writer killed mid-write left its temp file; nobody else writes here now
        self.removed = remove_stale_temps(self.path)
        return self

    @staticmethod
    def _take(lock: Path, mode: int) -> int:
        import fcntl

        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, mode | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 4096).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise UsageError(f"{lock.parent} is being written by {holder}: wait for it to finish, or write "
                             f"elsewhere") from None
        return fd

    def __exit__(self, *exc) -> None:
        if self.parent_fd is not None:
            os.close(self.parent_fd)
            self.parent_fd = None
        if self.fd is None:
            return
        if self.created and [p.name for p in self.path.iterdir()] == [LOCK]:  # failed before writing anything:
            (self.path / LOCK).unlink()                                      # leave no trace of it
            self.path.rmdir()
        os.close(self.fd)  # releases the flock
        self.fd = None


def metrics_header(framework: str, spec: ModelSpec | Graph, config: TrainConfig, data: dict, *,
                   sweep: dict | None = None) -> dict:
    """A run's metrics before its first epoch: what was trained, on what (``Data.settings()``), and an empty
    epoch list."""
    model = ({"model": spec.name, "graph": json.loads(spec.to_json())} if isinstance(spec, Graph)
             else {"preset": spec.name, "spec": json.loads(spec.to_json())})
    metrics = {"framework": framework, **model, "config": json.loads(config.to_json()), "data": data}
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


def best_epoch(records: list[dict]) -> dict | None:
    """The record of the best epoch by eval loss (the earliest of equals); None before the first epoch."""
    return min(records, key=lambda r: (r["eval_loss"], r["epoch"]), default=None)


def epochs_without_improvement(records: list[dict]) -> int:
    """How many epochs since the best one (0: the last epoch is the best)."""
    best = best_epoch(records)
    return 0 if best is None else records[-1]["epoch"] - best["epoch"]


def with_best(metrics: dict, kept: int | None) -> dict:
    """``metrics`` with its "best" entry from its epoch records: the epoch, its eval loss, and "file" --
    best.safetensors where that file holds this epoch (``kept``: the epoch it holds), else None (the
    epoch's weights were not kept: a run begun by an older ae-parity)."""
    best = best_epoch(metrics["epochs"])
    metrics.pop("best", None)
    if best is not None:
        metrics["best"] = {"epoch": best["epoch"], "eval_loss": best["eval_loss"],
                           "file": BEST if kept == best["epoch"] else None}
    return metrics


def kept_epoch(path: Path) -> int | None:
    """The epoch a best.safetensors holds (its metadata), None where it is missing or unreadable."""
    try:
        return int(read_metadata(path).get("epoch", ""))
    except (CheckpointError, ValueError):
        return None


def read_metrics(path: Path) -> tuple[dict | None, str | None]:
    """``(metrics, None)`` from a metrics.json holding a list of epoch records, or ``(None, what is wrong
    with it)``."""
    try:
        metrics = json.loads(path.read_text())
    except FileNotFoundError:
        return None, "is missing"
    except (OSError, UnicodeDecodeError) as e:
        return None, f"cannot be read ({e})"
    except ValueError as e:
        return None, f"is not valid JSON ({e})"
    epochs = metrics.get("epochs") if isinstance(metrics, dict) else None
    if not isinstance(epochs, list) or not all(isinstance(r, dict) and isinstance(r.get("epoch"), int) for r in epochs):
        return None, "holds no list of epoch records"
    return metrics, None


def reconcile(path: Path, ckpt: Checkpoint) -> tuple[dict | None, list[dict], str | None]:
    """The run directory ``path``'s metrics.json against its checkpoint ``ckpt``: ``(metrics.json as
    saved, the run's epoch records, what is wrong with metrics.json)``. The records are the checkpoint's;
    a checkpoint written without them (by an older ae-parity) takes metrics.json's up to its epoch, and
    is refused in one line when that is unreadable."""
    saved, problem = read_metrics(path / METRICS)
    if ckpt.history is None:
        if problem is not None:
            raise CheckpointError(f"{path / METRICS} {problem}, and {path / CHECKPOINT} (written by an older "
                                  f"ae-parity) holds no copy of the epoch records: move metrics.json away to "
                                  f"resume with records from epoch {ckpt.epoch + 1} on")
        return saved, [r for r in saved["epochs"] if r["epoch"] <= ckpt.epoch], None
    return saved, ckpt.history, problem or _disagreement(saved["epochs"], ckpt.history)


def _disagreement(saved: list[dict], history: list[dict]) -> str | None:
    if saved == history:
        return None
    have = [r["epoch"] for r in saved]
    if have == [r["epoch"] for r in history]:
        return "differs from the checkpoint's records of the same epochs"
    return (f"holds epochs {have[0]}-{have[-1]}" if have else "holds no epochs") + \
        f", the checkpoint {len(history)} (a crash between the two writes?)"


class RunDir:
    """The run directory ``path`` of one model: its metrics (in memory, written with every checkpoint).

    The checkpoint is the run's commit point: it holds the epoch records too (``Checkpoint.history``), and
    metrics.json is their copy, written after it. So a crash at any instant leaves the checkpoint of epoch N
    and a metrics.json of epoch N or N - 1; resuming rebuilds a metrics.json that disagrees with the
    checkpoint (missing, truncated, not JSON, a crash between the two renames) from it, in one line."""

    def __init__(self, path, framework: str, spec: ModelSpec | Graph, config: TrainConfig, data: dict, *,
                 sweep: dict | None = None):
        self.path = Path(path)
        self.framework, self.spec, self.config, self.data = framework, spec, config, data
        self.sweep = sweep
        self.metrics = metrics_header(framework, spec, config, data, sweep=sweep)
        self.kept: int | None = None  # the epoch best.safetensors holds

    @property
    def checkpoint(self) -> Path:
        return self.path / CHECKPOINT

    @property
    def best(self) -> Path:
        return self.path / BEST

    @property
    def metrics_path(self) -> Path:
        return self.path / METRICS

    @property
    def epochs(self) -> list[dict]:
        return self.metrics["epochs"]

    def load_checkpoint(self) -> Checkpoint:
        """The checkpoint, validated against this run's spec and dtype."""
        return load_checkpoint(self.checkpoint, spec=self.spec, dtype=self.config.dtype)

    def resume_epochs(self, ckpt: Checkpoint, log=print, writes: bool = True) -> None:
        """Resume: the epoch records up to the checkpoint's epoch, from the checkpoint; a metrics.json that
        disagrees is rewritten from them (saying so). A checkpoint written without records (by an older
        ae-parity) takes them from metrics.json, or is refused in one line when that is unreadable.
        best.safetensors is caught up where the checkpoint's epoch is the best and the file missed it (a
        crash between the two writes). ``writes`` False (a multi-host run's other processes): read only."""
        _, epochs, problem = reconcile(self.path, ckpt)
        self.metrics["epochs"] = [dict(r) for r in epochs]
        self.kept = kept_epoch(self.best)
        if not writes:
            return
        best = best_epoch(self.epochs)
        if best is not None and self.kept != best["epoch"]:
            if best["epoch"] == ckpt.epoch:
                self._write_best(ckpt, best)
                log(f"{self.best} did not hold the best epoch ({ckpt.epoch}): rewritten from {self.checkpoint}")
            else:
                log(f"{self.best}: the best epoch so far ({best['epoch']}, eval loss {best['eval_loss']:.6f}) was "
                    f"not kept (a run begun by an older ae-parity); the file will hold the next epoch that beats it")
        if problem is not None:
            self.write_metrics()
            log(f"{self.metrics_path} {problem}: rebuilt from {self.checkpoint} (epochs 1-{ckpt.epoch})"
                if ckpt.epoch else f"{self.metrics_path} {problem}: rebuilt from {self.checkpoint}")

    def add_epoch(self, epoch: int, losses: np.ndarray, eval_loss: float, seconds: float) -> dict:
        """Record an epoch (counted from 1) in memory; return the record."""
        record = epoch_record(epoch, losses, eval_loss, seconds, self.config.batch_size)
        self.metrics["epochs"].append(record)
        return record

    def write(self, epoch: int, step: int, model_state: dict, optimizer_state: dict) -> None:
        """The checkpoint after ``epoch`` epochs and ``step`` steps (holding the epoch records), then
        metrics.json (each atomically)."""
        self.path.mkdir(parents=True, exist_ok=True)
        records = self.epochs  # all of them, or none (a run resumed from a checkpoint of an older ae-parity
        complete = (history_problem(records, epoch, step) is None  # whose metrics.json has gaps)
                    and all(len(r["step_losses"]) == r["steps"] for r in records))
        ckpt = Checkpoint(self.spec, self.config, epoch, step, model_state, optimizer_state, self.framework,
                          data=self.data, history=records if complete else None,
                          run=None if self.sweep is None else {"sweep": self.sweep})
        save_checkpoint(self.checkpoint, ckpt)
        best = best_epoch(records)
        if best is not None and best["epoch"] == epoch:  # after the checkpoint: a crash between the two leaves
            self._write_best(ckpt, best)               # best.safetensors behind, and resuming catches it up
        self.write_metrics()

    def _write_best(self, ckpt: Checkpoint, best: dict) -> None:
        save_checkpoint(self.best, dataclasses.replace(ckpt, extra={"role": "best", "eval_loss": repr(best["eval_loss"])}))
        self.kept = best["epoch"]

    def write_metrics(self) -> None:
        # strict JSON: a NaN or inf never reaches the file (train_run refuses such an epoch before writing)
        atomic_write(self.metrics_path,
                     json.dumps(with_best(self.metrics, self.kept), indent=1, allow_nan=False).encode())


def read_run(path) -> tuple[Checkpoint, dict, str | None]:
    """A run directory as a reader sees it, without writing: ``(checkpoint, metrics, problem)``. The metrics
    are metrics.json's when it agrees with the checkpoint (``problem`` None), else rebuilt from the
    checkpoint, with what was wrong with metrics.json in ``problem``."""
    path = Path(path)
    ckpt = load_checkpoint(path / CHECKPOINT)
    saved, epochs, problem = reconcile(path, ckpt)
    if problem is None:
        return ckpt, saved, None
    metrics = metrics_header(ckpt.framework, ckpt.spec, ckpt.config, ckpt.data, **(ckpt.run or {}))
    metrics["epochs"] = epochs
    return ckpt, with_best(metrics, kept_epoch(path / BEST)), problem
