"""Framework-neutral training configuration and checkpoints.

A checkpoint is one safetensors file in torch naming and layout, readable by either framework:

- ``model.<torch name>``: the weights;
- ``optim.<torch name>.<slot>``: the optimizer state (``exp_avg``/``exp_avg_sq`` or ``momentum_buffer``);
- metadata: the spec (a graph run: the model graph, ``ae_core.graph``), dtype, training config (optimizer, loss, batch size, seed, data), the number of
  completed epochs and steps, and which framework wrote it. The batch order of every epoch is
  ``epoch_batches(seed, epoch, n, batch_size)``, so (seed, epoch) is the whole RNG/batch position.

Written atomically (temp file + rename): an interrupted write leaves the previous checkpoint intact.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from .errors import UsageError
from .graph import Graph
from .graph_training import check_graph_loss
from .optim import OptimizerConfig
from .spec import ModelSpec
from .weights import CheckpointError, StateDictError, check_state_dict, load_safetensors, save_safetensors

# "vae": the negative ELBO per example, averaged over the batch: BCE-from-logits summed over pixels plus
# KL(q(z|x) || N(0, I)) summed over the latent dimensions (the pytorch/examples VAE divided by the batch).
LOSSES = ("mse", "bce", "vae")
CHECKPOINT_FORMAT = "ae-parity/checkpoint-v1"
HISTORY_LOSSES = "run.step_losses"  # the history's step losses, float64, in a checkpoint written by a run
MAX_COUNT = 2 ** 53  # epochs and steps beyond this are not counts a run reaches (nor exact as float64)


def default_loss(spec: ModelSpec | Graph) -> str:
    return "vae" if isinstance(spec, ModelSpec) and spec.is_vae else "mse"


def check_loss(spec: ModelSpec | Graph, loss: str) -> None:
    """BCE (and the VAE's reconstruction term) is computed from logits: the decoder must end in a Sigmoid.
    A VAE (GaussianHead) trains on the "vae" loss, and only it. A model graph: its first output must have
    the input's shape, and be a sigmoid's for "bce" (``ae_core.graph_training``)."""
    if loss not in LOSSES:
        raise UsageError(f"unknown loss {loss!r}; known: {', '.join(LOSSES)}")
    if isinstance(spec, Graph):
        check_graph_loss(spec, loss)
        return
    if loss in ("bce", "vae") and not spec.has_logits:
        raise UsageError(f"loss {loss!r} is computed from logits and needs a decoder ending in Sigmoid; "
                         f"{spec.name}'s decoder ends in {spec.decoder[-1]}")
    if (loss == "vae") != spec.is_vae:
        raise UsageError(f"loss 'vae' needs a variational model (a GaussianHead ending the encoder) and such a "
                         f"model needs loss 'vae'; {spec.name} with loss {loss!r} is neither")


def check_training_state(state_shapes: dict, param_names, optimizer: OptimizerConfig, model: dict, optim: dict,
                         step: int, int_keys=()) -> None:
    """Validate canonical model + optimizer state; one error lists every problem.

    ``state_shapes``: the model's state dict (parameters and buffers) names -> shapes; ``param_names``:
    the trainable ones, which carry optimizer slots.
    """
    problems = []
    slots = {f"{n}.{s}": state_shapes[n] for n in param_names for s in optimizer.state_slots}
    for what, expected, given, ints in (("model", state_shapes, model, int_keys),
                                        ("optimizer state", slots if (step > 0 or optim) else {}, optim, ())):
        try:
            check_state_dict(expected, given, int_keys=ints)
        except StateDictError as e:
            problems += [f"{what}: {p}" for p in e.problems]
    if step < 0:
        problems.append(f"step must be >= 0, got {step}")
    if problems:
        raise StateDictError(problems, "training state")


@dataclass(frozen=True)
class TrainConfig:
    """Everything that fixes a training trajectory (with the spec and the data)."""

    epochs: int = 10
    batch_size: int = 32
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    loss: str = "mse"
    seed: int = 0
    dtype: str = "float32"

    def __post_init__(self) -> None:
        from . import check_dtype

        problems = []
        if not isinstance(self.epochs, int) or self.epochs < 1:
            problems.append(f"epochs must be a positive int, got {self.epochs!r}")
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            problems.append(f"batch_size must be a positive int, got {self.batch_size!r}")
        if self.loss not in LOSSES:
            problems.append(f"unknown loss {self.loss!r}; known: {', '.join(LOSSES)}")
        if problems:
            raise UsageError("; ".join(problems))
        object.__setattr__(self, "dtype", check_dtype(self.dtype))

    def to_json(self) -> str:
        d = asdict(self)
        d["optimizer"] = json.loads(self.optimizer.to_json())
        return json.dumps(d, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "TrainConfig":
        d = json.loads(text)
        d["optimizer"] = OptimizerConfig.from_json(json.dumps(d["optimizer"]))
        return cls(**d)


@runtime_checkable
class Trainer(Protocol):
    """What ``ae_torch.train.Trainer`` and ``ae_jax.train.Trainer`` both are: one model trained on ae_core's
    batch order, its state in canonical form (torch names and layout), resumable by either framework.

    ``ae_parity`` (runs, bench, parity) uses trainers only through this interface."""

    framework: str  # "torch" or "jax"
    spec: ModelSpec | Graph  # a preset's spec, or the graph of a ported model (ae_core.graph)
    config: TrainConfig
    n: int  # training examples
    step: int  # optimizer steps taken
    process_index: int  # 0, or this process's index in a multi-host run (process 0 writes files)

    def epoch_inputs(self, epoch: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """The batch indices (steps, batch) and supplied noise (steps, batch, ...) of ``epoch``."""

    def train_epoch(self, epoch: int) -> np.ndarray:
        """One epoch; the per-step losses (float64)."""

    def evaluate(self) -> float:
        """Mean loss over the eval set."""

    def model_state(self) -> dict[str, np.ndarray]:
        """The canonical state dict."""

    def optimizer_state(self) -> dict[str, np.ndarray]:
        """``{"<param name>.<slot>": array}`` in torch layout."""

    def load_state(self, model: dict, optim: dict, step: int) -> None:
        """Resume from canonical state (validated before anything changes)."""


@dataclass
class Checkpoint:
    spec: ModelSpec | Graph  # a graph run's checkpoint records its graph (metadata "graph"), a preset's its spec
    config: TrainConfig
    epoch: int  # completed epochs; training continues with epoch index `epoch`
    step: int  # completed optimizer steps
    model: dict[str, np.ndarray]
    optim: dict[str, np.ndarray]
    framework: str
    extra: dict[str, str] = field(default_factory=dict)
    # the run it belongs to (``ae_parity.rundir``), so that the checkpoint alone holds the whole run:
    # data: what it trained on ({"source", "limit", "train_examples", "eval_examples", "train_sha256"});
    # history: the epoch records of metrics.json up to ``epoch``, each with its "step_losses";
    # run: the rest of metrics.json's header (e.g. a sweep member's {"sweep": {...}})
    data: dict | None = None
    history: list[dict] | None = None
    run: dict | None = None


def save_checkpoint(path, ckpt: Checkpoint) -> Path:
    tensors = {f"model.{k}": v for k, v in ckpt.model.items()}
    tensors.update({f"optim.{k}": v for k, v in ckpt.optim.items()})
    model = ({"graph": ckpt.spec.to_json(), "model": ckpt.spec.name} if isinstance(ckpt.spec, Graph)
             else {"spec": ckpt.spec.to_json(), "preset": ckpt.spec.name})
    meta = {
        "format": CHECKPOINT_FORMAT,
        **model,
        "dtype": ckpt.config.dtype,
        "config": ckpt.config.to_json(),
        "epoch": str(ckpt.epoch),
        "step": str(ckpt.step),
        "framework": ckpt.framework,
        "batch_order": f"ae_core.epoch_batches(seed={ckpt.config.seed}, epoch=e, n, "
                       f"batch_size={ckpt.config.batch_size}) for e >= {ckpt.epoch}",
        **{f"extra.{k}": v for k, v in ckpt.extra.items()},
    }
    for key in ("data", "run"):
        if getattr(ckpt, key) is not None:
            meta[key] = json.dumps(getattr(ckpt, key), sort_keys=True, allow_nan=False)
    if ckpt.history is not None:  # the step losses as one tensor, the rest of each record as metadata
        meta["history"] = json.dumps([{k: v for k, v in r.items() if k != "step_losses"} for r in ckpt.history],
                                     allow_nan=False)
        tensors[HISTORY_LOSSES] = np.array([x for r in ckpt.history for x in r["step_losses"]], np.float64)
    return save_safetensors(path, tensors, meta)


def history_problem(records, epoch: int, step: int) -> str | None:
    """What keeps ``records`` from being a checkpoint's history after ``epoch`` epochs and ``step`` steps:
    not epoch records, not epochs 1..epoch, steps per epoch that do not add up to ``step`` (None: fine)."""
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        return "history is not a list of epoch records"
    if [r.get("epoch") for r in records] != list(range(1, epoch + 1)):
        return f"history holds epochs {[r.get('epoch') for r in records]}, not 1..{epoch}"
    steps = [r.get("steps") for r in records]
    if not all(isinstance(n, int) and n > 0 for n in steps) or sum(steps) != step:
        return f"history's steps per epoch {steps} do not add up to the checkpoint's {step} steps"
    return None


def _history(meta: dict, tensors: dict, epoch: int, step: int) -> list[dict] | None:
    """The epoch records a checkpoint holds (None: written without them), checked against its epoch and
    step; a ValueError names what does not add up."""
    if "history" not in meta:
        return None
    records, losses = json.loads(meta["history"]), tensors.pop(HISTORY_LOSSES, None)
    problem = history_problem(records, epoch, step)
    if problem is not None:
        raise ValueError(problem)
    steps = [r["steps"] for r in records]
    if losses is None or losses.shape != (step,) or not np.isfinite(losses).all():
        raise ValueError(f"history's step losses are {'missing' if losses is None else losses.shape}, "
                         f"not {step} finite values")
    ends = np.cumsum(steps)
    return [{**r, "step_losses": losses[end - n:end].tolist()} for r, n, end in zip(records, steps, ends)]


def _described(model: ModelSpec | Graph) -> str:
    return f"{'graph' if isinstance(model, Graph) else 'model'} {model.name!r}"


def load_checkpoint(path, *, spec: ModelSpec | Graph | None = None, dtype: str | None = None) -> Checkpoint:
    """Read and fully validate a checkpoint. With ``spec``/``dtype``, refuse one written for another model
    (a preset's spec, or a model graph: the same modules, methods and input shape)."""
    tensors, meta = load_safetensors(path)
    if meta.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path}: not an ae-parity checkpoint (format {meta.get('format')!r})")
    try:
        saved_spec = Graph.from_json(meta["graph"]) if "graph" in meta else ModelSpec.from_json(meta["spec"])
        config = TrainConfig.from_json(meta["config"])
        epoch, step = int(meta["epoch"]), int(meta["step"])
        if not (0 <= epoch < MAX_COUNT and 0 <= step < MAX_COUNT):
            raise ValueError(f"epoch {meta['epoch']} and step {meta['step']} must be counts below 2**53")
        data, run = (json.loads(meta[k]) if k in meta else None for k in ("data", "run"))
        if not all(v is None or isinstance(v, dict) for v in (data, run)):
            raise ValueError("data and run must be JSON objects")
        history = _history(meta, tensors, epoch, step)
    except KeyError as e:
        raise CheckpointError(f"{path}: unreadable checkpoint metadata (no key {e})") from None
    except (ValueError, TypeError, AttributeError, RecursionError) as e:  # crafted or damaged metadata
        raise CheckpointError(f"{path}: unreadable checkpoint metadata ({type(e).__name__}: {e})") from None
    problems = []
    if spec is not None and (type(saved_spec) is not type(spec) or not saved_spec.same_architecture(spec)):
        same_kind = type(saved_spec) is type(spec)
        other = " (another architecture)" if same_kind and isinstance(spec, Graph) else ""
        problems.append(f"written for {_described(saved_spec)}{other}, not "
                        f"{repr(spec.name) if same_kind else _described(spec)}")
    if dtype is not None and config.dtype != dtype:
        problems.append(f"written in {config.dtype}, expected {dtype}")
    if problems:
        raise CheckpointError(f"{path}: " + "; ".join(problems))
    model = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    optim = {k[len("optim."):]: v for k, v in tensors.items() if k.startswith("optim.")}
    others = [k for k in tensors if not k.startswith(("model.", "optim."))]
    try:
        check_training_state(saved_spec.state_shapes(), saved_spec.param_shapes(), config.optimizer, model, optim,
                             step, saved_spec.int_keys())
    except StateDictError as e:
        raise CheckpointError(f"{path}: {e}") from None
    if others:
        raise CheckpointError(f"{path}: unexpected tensors {others}")
    ints = saved_spec.int_keys()
    if any(v.dtype.name != config.dtype for k, v in (*model.items(), *optim.items()) if k not in ints):
        raise CheckpointError(f"{path}: tensors are not all {config.dtype}")
    extra = {k[len("extra."):]: v for k, v in meta.items() if k.startswith("extra.")}
    return Checkpoint(saved_spec, config, epoch, step, model, optim, meta.get("framework", "?"), extra, data, history,
                      run)
