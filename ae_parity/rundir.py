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
from pathlib import Path

import numpy as np

from ae_core import ModelSpec
from ae_core.graph import Graph
from ae_core.files import atomic_write
from ae_core.training import Checkpoint, TrainConfig, load_checkpoint, save_checkpoint

CHECKPOINT = "checkpoint.safetensors"
METRICS = "metrics.json"


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
        atomic_write(self.metrics_path, json.dumps(self.metrics, indent=1).encode())
