"""Sweeps: many models trained at once in one compiled program (``jax.vmap`` inside the scanned epoch).

Every member of a sweep is the same architecture with its own initial weights (a seed) and its own
learning rate. Parameters, optimizer states and BatchNorm statistics are stacked along a leading
"models" axis; one train step is ``jax.vmap``-ed over that axis (the learning rate a traced per-model
value, :func:`ae_jax.optim.make_optimizer`) and the epoch is one ``lax.scan`` of it, so M models cost
one program, one dispatch per epoch and GEMMs M times as wide.

Batch order:
- ``"own"`` (default): member ``(seed, lr)`` sees exactly the batches and noise of a solo run with that
  seed, so each member equals ``ae_jax.train.Trainer`` trained alone (float64: <= 1e-9 after whole
  runs; the vmapped matmuls only change the order of floating-point additions);
- ``"shared"``: every member sees the batches and noise of ``config.seed`` (only the initial weights
  differ): the batch is gathered once for all models, the faster layout.

With ``devices``, the models axis is split over a ``jax.sharding`` mesh (axis ``"models"``): each
device trains its share of the models, with no communication at all.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from ae_core import ModelSpec, epoch_batches, get_spec
from ae_core.errors import UsageError
from ae_core.noise import epoch_noise
from ae_core.training import TrainConfig, check_loss

from . import sharding
from .numerics import jnp_dtype
from .optim import make_optimizer, optimizer_state
from .train import counted_jit, eval_loss, lower_counted, place_data, split_for_training, train_step
from .weights import state_dict

BATCH_ORDERS = ("own", "shared")
MAX_SEEDS = 10 ** 6  # a sweep's seeds; how many models fit is the memory estimate's to say
MODELS_AXIS = "models"


@dataclass(frozen=True)
class Member:
    """One model of a sweep: its initial-weight seed and its learning rate."""

    seed: int
    lr: float

    @property
    def name(self) -> str:
        """A folder-safe name, e.g. ``seed3-lr0.001``: the learning rate as ``:g`` writes it where that is the
        exact value, else its shortest exact form (``repr``), so that two learning rates give two names
        however close they are."""
        return f"seed{self.seed}-lr{lr_text(self.lr)}"


def lr_text(lr: float) -> str:
    """``1e-3`` -> "0.001", ``10.0`` -> "10", ``0.0010001`` -> "0.0010001": short, and exact."""
    short = f"{lr:g}"
    return short if float(short) == lr else repr(float(lr))


def grid(seeds, lrs) -> list[Member]:
    """Every (seed, lr) combination, learning rate major: ``grid([0, 1], [1e-3, 3e-3])`` -> 4 members."""
    seeds, lrs = [int(s) for s in seeds], [float(v) for v in lrs]
    problems = []
    if not seeds or not lrs:
        problems.append("a sweep needs at least one seed and one learning rate")
    if len(set(seeds)) != len(seeds):
        problems.append(f"seeds repeat: {seeds}")
    if len(set(lrs)) != len(lrs):
        problems.append(f"learning rates repeat: {lrs}")
    if any(not v > 0 for v in lrs):
        problems.append(f"learning rates must be > 0: {lrs}")
    if problems:
        raise UsageError("; ".join(problems))
    return [Member(s, lr) for lr in lrs for s in seeds]


def parse_seeds(text: str) -> list[int]:
    """``"0-7"``, ``"0,3,5"`` or ``"0-3,10"`` -> the seeds (ranges inclusive), 0 .. 2**32 - 1, at most
    :data:`MAX_SEEDS` of them (counted before the list is made: ``0-10000000000`` is not a list to build)."""
    seeds: list[int] = []
    for part in (p.strip() for p in str(text).split(",")):
        m = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
        if not m:
            raise UsageError(f"seeds {text!r}: expected ranges and numbers like 0-7 or 0,3,5")
        lo, hi = int(m[1]), int(m[2] if m[2] is not None else m[1])
        if hi < lo:
            raise UsageError(f"seeds {text!r}: the range {part} is empty")
        if hi > 2 ** 32 - 1:
            raise UsageError(f"seeds {text!r}: {hi} is beyond the largest seed, {2 ** 32 - 1}")
        if len(seeds) + hi - lo + 1 > MAX_SEEDS:
            raise UsageError(f"seeds {text!r}: more than {MAX_SEEDS:,} models in one sweep")
        seeds.extend(range(lo, hi + 1))
    return seeds


def member_config(config: TrainConfig, member: Member, batch_order: str) -> TrainConfig:
    """The solo-run configuration a member equals (its checkpoint's config): its learning rate, and the
    seed that orders its batches (its own, or the sweep's shared ``config.seed``)."""
    return dataclasses.replace(config, seed=member.seed if batch_order == "own" else config.seed,
                               optimizer=dataclasses.replace(config.optimizer, lr=member.lr))


def sweep_epoch(graphdef, opt_config, loss_name, shared: bool, params, rest, opt_state, lrs, data, batch_idx, noise):
    """One epoch of every model: ``lax.scan`` over steps of a ``vmap`` over models.

    ``batch_idx`` is (steps, models, batch), or (steps, batch) when ``shared``; ``noise`` likewise.
    Returns the stacked state and the losses, (steps, models)."""

    def one(params, rest, opt_state, lr, idx, noise_b):
        tx = make_optimizer(opt_config, lr=lr)
        return train_step(graphdef, tx, loss_name, params, rest, opt_state, data[idx], noise_b)

    per_model = None if shared else 0
    step = jax.vmap(one, in_axes=(0, 0, 0, 0, per_model, per_model))

    def body(carry, xs):
        idx, noise_b = xs
        params, rest, opt_state, value = step(*carry, lrs, idx, noise_b)
        return (params, rest, opt_state), value

    (params, rest, opt_state), losses = jax.lax.scan(body, (params, rest, opt_state), (batch_idx, noise))
    return params, rest, opt_state, losses


def _stack(trees):
    return jax.tree.map(lambda *leaves: jnp.stack(leaves), *trees)


class SweepTrainer:
    """M models of one spec, trained together; the interface of ``ae_jax.train.Trainer`` per model.

    ``config`` holds what the members share (batch size, optimizer and its other hyperparameters,
    loss, dtype, epochs; its ``seed`` orders the batches when ``batch_order="shared"``; its learning
    rate is unused: each member has its own).
    """

    framework = "jax"

    def __init__(self, spec: str | ModelSpec, config: TrainConfig, members, x_train, x_eval=None, *,
                 batch_order: str = "own", precision: str = "highest", devices=None):
        self.spec, self.config = get_spec(spec), config
        self.members = list(members)
        if not self.members:
            raise ValueError("a sweep needs at least one member")
        if len(set(self.members)) != len(self.members):
            raise ValueError(f"members repeat: {[m.name for m in self.members]}")
        if batch_order not in BATCH_ORDERS:
            raise ValueError(f"unknown batch order {batch_order!r}; expected one of {BATCH_ORDERS}")
        check_loss(self.spec, config.loss)
        self.batch_order, self.precision = batch_order, precision
        self.dtype = jnp_dtype(config.dtype)
        self.mesh = None if devices is None else sharding.data_mesh(devices, axis=MODELS_AXIS)
        if self.mesh is not None:
            sharding.check_divisible(len(self.members), self.mesh, "a sweep of {} models")
        splits = [split_for_training(self.spec, config, m.seed) for m in self.members]
        self.eval_graphdef, self.graphdef = splits[0][:2]
        params, rest = _stack([s[2] for s in splits]), _stack([s[3] for s in splits])
        tx = make_optimizer(config.optimizer)
        opt_state = jax.vmap(tx.init)(params)
        self.lrs = np.array([m.lr for m in self.members], dtype=self.dtype)
        if self.mesh is None:
            self._put_models = self._put_shared = jax.device_put
        else:
            self._put_models = functools.partial(sharding.put, sharding=sharding.leading_split(self.mesh))
            self._put_shared = functools.partial(sharding.put, sharding=sharding.replicated(self.mesh))
        self.params, self.rest, self.opt_state, self.lrs = self._put_models((params, rest, opt_state, self.lrs))
        self.x, self.x_eval = place_data(self._put_shared, self.dtype, x_train, x_eval)
        self.n = len(self.x)
        self.step = 0
        self._host = None  # (step, host copy of the stacked state): see _on_host
        epoch_batches(config.seed, 0, self.n, config.batch_size)  # validates batch_size against n
        out = {} if self.mesh is None else {"out_shardings": sharding.leading_split(self.mesh)}
        self._counts: dict = {}
        self._epoch_fn = counted_jit(self._counts, "epoch", functools.partial(
            sweep_epoch, self.graphdef, config.optimizer, config.loss, batch_order == "shared"),
            donate_argnums=(0, 1, 2))
        self._eval_fn = counted_jit(self._counts, "eval", jax.vmap(
            functools.partial(eval_loss, self.eval_graphdef, config.loss), in_axes=(0, 0, None)), **out)

    def __len__(self) -> int:
        return len(self.members)

    def epoch_inputs(self, epoch: int):
        """Batch indices and noise of ``epoch``: (steps, models, batch, ...) or, shared, (steps, batch, ...)."""
        c = self.config
        seeds = [c.seed] if self.batch_order == "shared" else [m.seed for m in self.members]
        idx = [epoch_batches(s, epoch, self.n, c.batch_size) for s in seeds]
        noise = [epoch_noise(self.spec, s, epoch, len(idx[0]), c.batch_size, c.dtype) for s in seeds]
        if self.batch_order == "shared":
            return idx[0], noise[0]
        return np.stack(idx, axis=1), {k: np.stack([n[k] for n in noise], axis=1) for k in noise[0]}

    def lower(self, epoch: int = 0):
        """The compiled program of one epoch of every model, lowered ahead of time (``jax.stages.Lowered``)."""
        idx, noise = self._put_shared(self.epoch_inputs(epoch))
        with jax.default_matmul_precision(self.precision):
            return lower_counted(self._counts, self._epoch_fn, self.params, self.rest, self.opt_state, self.lrs,
                                 self.x, idx, noise)

    def train_epoch(self, epoch: int) -> np.ndarray:
        """One epoch of every model; the per-step losses, (steps, models) float64 numpy."""
        idx, noise = self._put_shared(self.epoch_inputs(epoch))
        with jax.default_matmul_precision(self.precision):
            self.params, self.rest, self.opt_state, losses = self._epoch_fn(
                self.params, self.rest, self.opt_state, self.lrs, self.x, idx, noise)
        self.step += len(idx)
        return np.asarray(losses, dtype=np.float64)

    def evaluate(self) -> np.ndarray:
        """Each model's mean loss over the eval set, (models,)."""
        if self.x_eval is None:
            raise ValueError("this sweep has no eval set (x_eval)")
        with jax.default_matmul_precision(self.precision):
            return np.asarray(self._eval_fn(self.params, self.rest, self.x_eval), dtype=np.float64)

    def compiled_count(self) -> dict[str, int]:
        """As ``Trainer.compiled_count``: programs compiled per function (1 = no recompilation)."""
        return {k: v for k, v in self._counts.items() if not k.startswith("_")}

    # -- one member in canonical form (the same files as a solo run) ------------------------------------
    def _index(self, member: int | Member) -> int:
        return self.members.index(member) if isinstance(member, Member) else int(member)

    def _on_host(self):
        """The stacked (params, rest, optimizer state) as numpy, fetched from the device(s) once per step:
        writing every member's checkpoint reads it 2 x M times, one small device slice per leaf each if
        taken member by member."""
        if self._host is None or self._host[0] != self.step:
            self._host = (self.step, jax.device_get((self.params, self.rest, self.opt_state)))
        return self._host[1]

    def _take(self, tree, member: int | Member):
        i = self._index(member)
        return jax.tree.map(lambda a: np.array(a[i]), tree)  # a copy: the member's arrays are its own

    def model(self, member: int | Member) -> nnx.Module:
        """Member ``member``'s current model (eval mode)."""
        params, rest, _ = self._on_host()
        return nnx.merge(self.eval_graphdef, self._take(params, member), self._take(rest, member))

    def model_state(self, member: int | Member) -> dict[str, np.ndarray]:
        return state_dict(self.model(member))

    def optimizer_state(self, member: int | Member) -> dict[str, np.ndarray]:
        opt_state = self._take(self._on_host()[2], member)
        return optimizer_state(opt_state, self.model(member), self.config.optimizer, self.step)

    def member_config(self, member: int | Member) -> TrainConfig:
        return member_config(self.config, self.members[self._index(member)], self.batch_order)
