"""Training runs for either framework: epochs, checkpoints, metrics.json, TensorBoard, resume.

A run directory holds ``checkpoint.safetensors`` (written atomically after every epoch),
``metrics.json`` (per-epoch loss and time, per-step losses) and TensorBoard event files. A run can be
resumed by either framework from the checkpoint of either; the resumed trajectory is the uninterrupted
one because batch order is a function of (seed, epoch) and the whole state is in the checkpoint.
"""

from __future__ import annotations

import hashlib
import importlib
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ae_core import ModelSpec, UsageError, get_model, model_inputs
from ae_core.graph import Graph
from ae_core import mnist
from ae_core.training import Checkpoint, TrainConfig

from .rundir import CHECKPOINT, METRICS, RunDir, RunLock, check_out_dir, clear_run  # noqa: F401 (re-exported)
from .rundir import TENSORBOARD, best_epoch, epochs_without_improvement
FRAMEWORKS = ("jax", "torch")


class NonFiniteLossError(RuntimeError):
    def __init__(self, epoch: int, step: int, global_step: int, value: float, checkpoint: Path | None,
                 what: str | None = None):
        self.epoch, self.step, self.global_step, self.checkpoint = epoch, step, global_step, checkpoint
        kept = f"; the last good checkpoint is kept: {checkpoint}" if checkpoint else "; no checkpoint was written"
        what = what or (f"non-finite loss ({value}) in epoch {epoch + 1}, step {step + 1} of the epoch "
                        f"(global step {global_step + 1})")
        super().__init__(f"{what}: training stopped{kept}")


def _first_non_finite(state: dict) -> str | None:
    """The name of the first tensor of a state dict holding a NaN or inf (None: every one finite)."""
    return next((k for k, v in state.items() if np.issubdtype(np.asarray(v).dtype, np.floating)
                 and not np.isfinite(v).all()), None)


@dataclass
class Data:
    """Model inputs for training and evaluation, with where they came from (``limit``: the first N training
    examples of the source were kept)."""

    x_train: np.ndarray
    x_eval: np.ndarray
    source: str
    labels_eval: np.ndarray | None = None
    limit: int | None = None
    _settings: dict | None = field(default=None, init=False, repr=False, compare=False)

    def settings(self) -> dict:
        """What a run records of its data and a resume checks: the source, the limit, the sizes and a hash
        of the training inputs (the same files, in the same order, read the same way)."""
        if self._settings is None:
            digest = hashlib.sha256(np.ascontiguousarray(self.x_train).data).hexdigest()[:16]
            self._settings = {"source": self.source, "limit": self.limit, "train_examples": len(self.x_train),
                              "eval_examples": None if self.x_eval is None else len(self.x_eval),
                              "train_sha256": digest}
        return self._settings


def load_data(spec: ModelSpec | Graph, source: str = "auto", data_dir=None, dtype: str = "float32",
              limit: int | None = None) -> Data:
    """Train split for training, test split for evaluation; ``limit`` keeps the first N training examples.
    The inputs are what ``spec`` eats (``ae_core.model_inputs``; a model graph: its ``input_shape``).

    The source is resolved once (``auto``: full MNIST, a download, or the offline sample), so both splits
    come from the same files and a failed download is tried, and reported, once."""
    source, _ = mnist.ensure(data_dir, source)
    train, test = mnist.load("train", source, data_dir), mnist.load("test", source, data_dir)
    images = train.images if limit is None else train.images[:limit]
    return Data(model_inputs(spec, images, dtype), model_inputs(spec, test.images, dtype), train.source,
                test.labels, limit)


def make_trainer(framework: str, spec, config: TrainConfig, data: Data, **kwargs):
    """The ``framework``'s trainer of ``spec`` (a preset name, a spec or a model graph) on ``data``; ``kwargs``
    go to the trainer (``weights=``: a canonical state dict to start from instead of the seeded init)."""
    if framework == "jax":
        from ae_jax.train import Trainer
    elif framework == "torch":
        from ae_torch.train import Trainer
    else:
        raise ValueError(f"unknown framework {framework!r}; expected one of {FRAMEWORKS}")
    return Trainer(spec, config, data.x_train, data.x_eval, **kwargs)


def optional(module: str, what: str, log) -> bool:
    """Whether the optional package ``module`` (an extra) imports; if not, say once per process what is
    skipped (``what``) and how to get it."""
    try:
        importlib.import_module(module)
        return True
    except ImportError:
        if (module, what) not in _SKIPPED:
            _SKIPPED.add((module, what))
            log(f"{what} skipped: {module} is not installed (pip install 'ae-parity[extras]')")
        return False


_SKIPPED: set[tuple[str, str]] = set()


class ScalarWriter:
    """TensorBoard scalars (event files readable by ``tensorboard --logdir``), without TF or torch; ``open``
    gives None (said once) where tensorboard is not installed."""

    @classmethod
    def open(cls, logdir: Path, log) -> "ScalarWriter | None":
        if not optional("tensorboard", "TensorBoard scalars", log):
            return None
        try:
            return cls(logdir)
        except Exception as e:  # an installed but broken tensorboard (e.g. a protobuf it cannot use): skip it
            log(f"TensorBoard scalars skipped: tensorboard is installed but does not work here "
                f"({type(e).__name__}: {e})")
            return None

    def __init__(self, logdir: Path):
        from tensorboard.summary.writer.event_file_writer import EventFileWriter

        self._writer = EventFileWriter(str(logdir))

    def add_scalar(self, tag: str, value: float, step: int) -> None:
        from tensorboard.compat.proto.event_pb2 import Event
        from tensorboard.compat.proto.summary_pb2 import Summary

        summary = Summary(value=[Summary.Value(tag=tag, simple_value=float(value))])
        self._writer.add_event(Event(wall_time=time.time(), step=int(step), summary=summary))

    def close(self) -> None:
        self._writer.flush()
        self._writer.close()


class Progress:
    """One progress bar over the run's epochs (tqdm: epochs done, time per epoch, the last epoch's loss and
    samples/s; an epoch is one compiled program, so there is nothing to show between its steps), or a plain
    line per epoch where tqdm is not installed (said once)."""

    def __init__(self, enabled: bool, log=print):
        self.enabled = enabled
        self._bar = None
        self._tqdm = enabled and optional("tqdm", "progress bars (a line per epoch instead)", log)

    def start(self, framework: str, first: int, epochs: int) -> None:
        """The bar, before the first epoch (which compiles): epochs ``first`` of ``epochs`` done."""
        if self.enabled and self._tqdm and first < epochs:
            from tqdm import tqdm

            self._bar = tqdm(total=epochs, initial=first, desc=f"[{framework}] epoch", unit="epoch",
                             file=sys.stderr, dynamic_ncols=True, mininterval=0, miniters=1,
                             bar_format="{desc} {n_fmt}/{total_fmt} |{bar}| {elapsed}<{remaining}, {rate_fmt}{postfix}")

    def epoch(self, framework: str, epoch: int, epochs: int, steps: int, losses: np.ndarray, seconds: float,
              batch_size: int) -> None:
        """One epoch done (after :meth:`start`)."""
        if not self.enabled:
            return
        rate = steps * batch_size / seconds if seconds > 0 else float("inf")
        if not self._tqdm:
            print(f"[{framework}] epoch {epoch + 1}/{epochs}: {steps} steps, loss {losses.mean():.5f}, "
                  f"{rate:,.0f} samples/s", file=sys.stderr)
            return
        self._bar.set_postfix_str(f"loss {losses.mean():.5f}, {steps} steps, {rate:,.0f} samples/s", refresh=False)
        self._bar.update(1)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def train_run(framework: str, spec: str | ModelSpec | Graph, config: TrainConfig, out_dir, *, data: Data,
              resume: bool = False, overwrite: bool = False, progress: bool = False,
              trainer_kwargs: dict | None = None, early_stop: int | None = None, log=print) -> dict:
    """Train (or resume) a run in ``out_dir``; return the metrics dict (also in ``out_dir/metrics.json``).

    With ``resume``, the checkpoint's spec, config and state are used (validated first: a checkpoint of
    another model or dtype is refused before anything is built) and training continues up to
    ``config.epochs`` epochs. ``spec`` may be a model graph (a ported torch model): the run directory then
    records the graph instead of a spec, and resumes only onto the same graph.

    A new run refuses a directory that holds a run (``overwrite``: replace it), and the directory is
    locked while the run writes it (``RunLock``: a second writer is refused, naming the first). An epoch
    whose evaluation loss or weights are not finite is never written: training stops, the last good
    checkpoint stays. Every epoch with the lowest eval loss so far is also kept as ``best.safetensors``;
    ``early_stop`` N stops training once N epochs in a row have not improved on the best eval loss
    (``metrics["stopped_early"]`` says when and why).
    """
    spec = get_model(spec)
    if _process_index(framework) != 0:  # multi-host: process 0 alone checks, locks and writes the directory
        return _train(framework, spec, config, out_dir, data, resume, progress, trainer_kwargs, early_stop, log)
    if not resume:
        check_out_dir(out_dir, overwrite=overwrite)
    with RunLock(out_dir):
        if overwrite and not resume:
            clear_run(Path(out_dir))
        return _train(framework, spec, config, out_dir, data, resume, progress, trainer_kwargs, early_stop, log)


def _process_index(framework: str) -> int:
    """This process's index in a multi-host JAX run (0 otherwise; torch trains on one process here)."""
    if framework != "jax":
        return 0
    import jax

    return jax.process_index()


def _train(framework, spec, config, out_dir, data, resume, progress, trainer_kwargs, early_stop, log) -> dict:
    run = RunDir(out_dir, framework, spec, config, data.settings())
    # multi-host: process 0 alone writes the run directory, resuming included
    ckpt = _resume(run, log, writes=_process_index(framework) == 0) if resume else None
    trainer = make_trainer(framework, spec, config, data, **(trainer_kwargs or {}))
    if ckpt is not None:
        trainer.load_state(ckpt.model, ckpt.optim, ckpt.step)
    # multi-host: every process trains the same steps; process 0 alone writes the run directory
    process = getattr(trainer, "process_index", 0)
    writes = process == 0
    if writes:
        run.path.mkdir(parents=True, exist_ok=True)
    else:
        run.metrics.update(written=False, process=process)
    writer = ScalarWriter.open(run.path / TENSORBOARD, log) if writes else None
    bar = Progress(progress and writes, log)
    first = ckpt.epoch if ckpt else 0
    try:
        bar.start(framework, first, config.epochs)
        for epoch in range(first, config.epochs):
            t0 = time.perf_counter()
            losses = trainer.train_epoch(epoch)
            seconds = time.perf_counter() - t0
            bad = np.flatnonzero(~np.isfinite(losses))
            if bad.size:
                step = int(bad[0])
                raise NonFiniteLossError(epoch, step, trainer.step - len(losses) + step, float(losses[step]),
                                         run.checkpoint if run.checkpoint.exists() else None)
            eval_loss, state = trainer.evaluate(), trainer.model_state()
            bad_state = _first_non_finite(state)
            if not np.isfinite(eval_loss) or bad_state:
                what = (f"weights ({bad_state})" if bad_state else f"evaluation loss ({eval_loss})")
                raise NonFiniteLossError(epoch, len(losses) - 1, trainer.step - 1, eval_loss,
                                         run.checkpoint if run.checkpoint.exists() else None,
                                         what=f"non-finite {what} after epoch {epoch + 1}, its step losses finite")
            record = run.add_epoch(epoch + 1, losses, eval_loss, seconds)
            stale = epochs_without_improvement(run.epochs)
            if early_stop is not None and stale >= early_stop and epoch + 1 < config.epochs:
                run.metrics["stopped_early"] = {"after_epoch": epoch + 1, "patience": early_stop,
                                                "best_epoch": epoch + 1 - stale}
            if writes:
                run.write(epoch + 1, trainer.step, state, trainer.optimizer_state())
                if writer is not None:
                    for tag in ("train_loss", "eval_loss", "samples_per_s"):
                        writer.add_scalar(f"{framework}/{tag}", record[tag], epoch + 1)
                bar.epoch(framework, epoch, config.epochs, len(losses), losses, seconds, config.batch_size)
            if "stopped_early" in run.metrics:
                bar.close()  # the message on a line of its own, after the bar
                best = best_epoch(run.epochs)
                where = f", in {run.best}" if writes and run.kept == best["epoch"] else ""
                log(f"early stop after epoch {epoch + 1}: no better eval loss in {stale} epochs (the best: epoch "
                    f"{best['epoch']}, {best['eval_loss']:.6f}{where})")
                break
    finally:
        bar.close()
        if writer is not None:
            writer.close()
    return run.metrics


def _resume(run: RunDir, log, writes: bool = True) -> Checkpoint:
    """The run's checkpoint, checked against the run's config; the run keeps its earlier epoch records."""
    ckpt, config = run.load_checkpoint(), run.config
    if ckpt.config.optimizer != config.optimizer or (ckpt.config.batch_size, ckpt.config.seed, ckpt.config.loss) != (
            config.batch_size, config.seed, config.loss):
        raise UsageError(f"{run.checkpoint}: the run was trained with {ckpt.config.to_json()}; resuming needs the "
                         f"same optimizer, batch size, seed and loss")
    check_same_data(run.checkpoint, ckpt.data, run.data)
    run.resume_epochs(ckpt, log, writes)  # a metrics.json that disagrees is rebuilt, even where nothing is left to train
    if ckpt.epoch >= config.epochs:
        raise UsageError(f"{run.checkpoint} already holds {ckpt.epoch} epochs; ask for more than that to resume")
    log(f"resuming {ckpt.framework} checkpoint {run.checkpoint} (epoch {ckpt.epoch}, step {ckpt.step}) "
        f"in {run.framework}")
    return ckpt


def check_same_data(checkpoint: Path, trained: dict | None, given: dict) -> None:
    """Resume: the run's data (its checkpoint's ``data``) must be this data. Other settings (another source,
    ``--limit``, size) are a UsageError naming them; the same settings with other contents (the files
    changed) a CheckpointError. A checkpoint that records no data settings (an older ae-parity) is not
    checked."""
    if trained is None:
        return
    keys = ("source", "limit", "train_examples", "eval_examples")
    differ = [f"{k} {given.get(k)!r} (the run: {trained.get(k)!r})" for k in keys if trained.get(k) != given.get(k)]
    if differ:
        raise UsageError(f"{checkpoint}: the run trained on other data; this resume has " + ", ".join(differ)
                         + f": resume with --data {trained.get('source')}"
                         + (f" --limit {trained['limit']}" if trained.get("limit") else ""))
    if trained.get("train_sha256") != given.get("train_sha256"):
        from ae_core.weights import CheckpointError

        raise CheckpointError(f"{checkpoint}: the training data have changed since the run trained on them "
                              f"(sha256 {given.get('train_sha256')}, the run's {trained.get('train_sha256')}): "
                              f"the same source and limit, other contents")
