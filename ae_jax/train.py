"""JAX training: pure, jit-compiled functions of (graphdef, state) (mirrors ae_torch/train.py).

The model is split once (``nnx.split``) into a static graphdef and array state. A train step and a
whole epoch (``jax.lax.scan`` over the epoch's batch indices) are ``jax.jit`` functions of arrays with
the parameter and optimizer buffers donated; the dataset lives on the device as one array and each
batch is gathered by index inside the compiled program. Same shapes every epoch -> one compilation.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from ae_core import ModelSpec, epoch_batches, get_model, init_state_dict
from ae_core.graph import Graph
from ae_core.graph_training import loss_graph
from ae_core.noise import epoch_noise, eval_noise
from ae_core.training import TrainConfig, check_loss, check_training_state

from . import sharding
from .convforms import conv_forms
from .graph import GraphModule
from .layers import relu_inputs
from .losses import GRAPH_LOSSES, LOSSES
from .models import build
from .numerics import jnp_dtype
from .optim import load_optimizer_state, make_optimizer, optimizer_state
from .weights import expected_shapes, int_keys, load_state_dict, param_names, state_dict, to_torch_layout


# ---------------------------------------------------------------------------- pure functions ----
def _loss_fn(loss):
    """A loss by name (``LOSSES``), or the loss function itself (a model graph's, ``GRAPH_LOSSES``)."""
    return LOSSES[loss] if isinstance(loss, str) else loss


def _loss(graphdef, loss_name, params, rest, x, noise):
    # copy=True: fresh Variables owned by this trace, so a train-mode BatchNorm may update its statistics
    model = nnx.merge(graphdef, params, rest, copy=True)
    value = _loss_fn(loss_name)(model, x, x, noise)
    _, _, new_rest = nnx.split(model, nnx.Param, ...)  # e.g. BatchNorm statistics updated in the call
    return value, new_rest


def train_step(graphdef, tx: optax.GradientTransformation, loss_name: str, params, rest, opt_state, x, noise):
    """One optimizer step on batch ``x`` with its supplied ``noise``: (params, rest, opt_state, loss)."""
    (value, rest), grads = jax.value_and_grad(functools.partial(_loss, graphdef, loss_name), has_aux=True)(
        params, rest, x, noise)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), rest, opt_state, value


def _gather(data, idx, noise, batch_sharding):
    """The batch ``data[idx]`` and its noise; with ``batch_sharding`` (data parallelism) both are laid out
    batch-split over the mesh, so each device computes on its slice and XLA reduces across devices."""
    x = data[idx]
    if batch_sharding is not None:
        x, noise = jax.lax.with_sharding_constraint((x, noise), batch_sharding)
    return x, noise


def train_step_indexed(graphdef, tx, loss_name, params, rest, opt_state, data, batch_idx, noise, step,
                       batch_sharding=None):
    """:func:`train_step` on step ``step`` of the epoch: the batch ``data[batch_idx[step]]`` and the
    epoch's noise at ``step`` (both gathered inside the compiled program)."""
    x, noise = _gather(data, batch_idx[step], jax.tree.map(lambda a: a[step], noise), batch_sharding)
    return train_step(graphdef, tx, loss_name, params, rest, opt_state, x, noise)


def train_epoch(graphdef, tx, loss_name, params, rest, opt_state, data, batch_idx, noise, batch_sharding=None):
    """A whole epoch as one ``lax.scan`` over ``batch_idx`` (steps, batch) and the epoch's ``noise``
    (steps, batch, ...): gathers ``data[idx]`` per step."""

    def body(carry, xs):
        idx, noise_b = xs
        params, rest, opt_state = carry
        x, noise_b = _gather(data, idx, noise_b, batch_sharding)
        params, rest, opt_state, value = train_step(graphdef, tx, loss_name, params, rest, opt_state, x, noise_b)
        return (params, rest, opt_state), value

    (params, rest, opt_state), losses = jax.lax.scan(body, (params, rest, opt_state), (batch_idx, noise))
    return params, rest, opt_state, losses


def eval_loss(graphdef, loss_name, params, rest, x, noise=None):
    """The loss of ``x`` in eval mode; ``noise``: a model graph's eval-mode draws (``ae_core.noise.eval_noise``)."""
    return _loss(graphdef, loss_name, params, rest, x, noise)[0]


@functools.partial(jax.jit, static_argnames=("graphdef", "loss"))
def _loss_and_grad(graphdef, params, rest, x, target, noise, *, loss):
    def loss_fn(p, r):
        return _loss_fn(loss)(nnx.merge(graphdef, p, r, copy=True), x, target, noise)

    return jax.value_and_grad(loss_fn)(params, rest)


@functools.partial(jax.jit, static_argnames=("graphdef", "loss"))
def _loss_grad_relu(graphdef, params, rest, x, target, noise, *, loss):
    def loss_fn(p, r):
        with relu_inputs() as seen:
            value = _loss_fn(loss)(nnx.merge(graphdef, p, r, copy=True), x, target, noise)
        return value, seen

    (value, seen), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, rest)
    return value, grads, seen


def loss_and_grad(model: nnx.Module, x: jax.Array, target: jax.Array | None = None,
                  loss="mse", noise=None) -> tuple[float, dict[str, np.ndarray]]:
    """The loss (a name of ``LOSSES``, or a loss function such as ``GRAPH_LOSSES["mse"]``) of one batch and
    ``{parameter name: gradient}`` (canonical: numpy, torch layout; the same as
    ``ae_torch.train.loss_and_grad`` returns), jit-compiled, in the model's current mode; the model
    itself is not changed (a train-mode BatchNorm's statistics update is discarded: :class:`Trainer`
    keeps it)."""
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    value, grads = _loss_and_grad(graphdef, params, rest, x, x if target is None else target, noise, loss=loss)
    return float(value), to_torch_layout(model, grads)


def loss_grad_and_relu_inputs(model: nnx.Module, x: jax.Array, target: jax.Array | None = None,
                              loss="mse", noise=None) -> tuple[float, dict[str, np.ndarray], list[np.ndarray]]:
    """:func:`loss_and_grad`, plus the input of every ReLU of that forward in call order (numpy, in torch's
    layout), returned by the same compiled computation as the gradients: which side of
    the kink each pre-activation fell on decides the gradient there (``ae_parity.reference``)."""
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    value, grads, seen = _loss_grad_relu(graphdef, params, rest, x, x if target is None else target, noise, loss=loss)
    # a graph module runs its activations in torch's layout (only the image layers go channels-last inside)
    return float(value), to_torch_layout(model, grads), [np.asarray(a) for a in seen]


@functools.partial(jax.jit, static_argnames=("graphdef",))
def _encode_decode(graphdef, state, x, noise):
    out = nnx.merge(graphdef, state).outputs(x, noise)
    return out["code"], out["recon"]


def encode_decode(model: nnx.Module, x: jax.Array, noise=None) -> tuple[jax.Array, jax.Array]:
    """Codes and reconstructions of one batch (jit-compiled), in the model's current mode."""
    graphdef, state = nnx.split(model)
    return _encode_decode(graphdef, state, x, noise)


# ---------------------------------------------------------------------------------- Trainer ----
def build_model(model: ModelSpec | Graph, config: TrainConfig, seed: int, weights=None) -> nnx.Module:
    """What a trainer trains (mirrors ``ae_torch.train.build_model``): a preset's ``Autoencoder``, or a
    model graph's loss graph (``ae_core.graph_training.loss_graph``: the graph's modules, ``forward``
    returning what the loss compares) as an ``ae_jax.graph.GraphModule``; in ``config.dtype``, from
    ``weights`` (a canonical state dict, e.g. a torch model's) or else ``init_state_dict(model, seed)``."""
    if isinstance(model, Graph):
        dtype, graph = jnp_dtype(config.dtype), loss_graph(model, config.loss)
        # the weights are loaded next: built abstractly (shapes only), as ae_parity.port does
        out = nnx.eval_shape(lambda: GraphModule(graph, rngs=nnx.Rngs(0), dtype=dtype))
        load_state_dict(out, init_state_dict(model, seed, config.dtype) if weights is None else weights)
        if any(isinstance(leaf, jax.ShapeDtypeStruct) for leaf in jax.tree.leaves(nnx.state(out))):
            raise RuntimeError(f"{model.name}: a variable of the graph module has no value in the state dict")
        return out
    out = build(model, dtype=config.dtype, seed=seed)
    if weights is not None:
        load_state_dict(out, weights)
    return out


def split_for_training(spec: ModelSpec | Graph, config: TrainConfig, seed: int, weights=None):
    """Build ``spec`` from ``seed``'s initial weights (or ``weights``) and split it once, for a trainer:
    (eval-mode graphdef, train-mode graphdef, params, rest = the other state, e.g. BatchNorm statistics)."""
    model = build_model(spec, config, seed, weights)
    model.eval()
    eval_graphdef = nnx.graphdef(model)
    model.train()
    return (eval_graphdef, *nnx.split(model, nnx.Param, ...))


def place_data(place, dtype, x_train, x_eval):
    """The training and eval inputs cast to ``dtype`` and put on the device(s) by ``place``."""
    cast = functools.partial(np.asarray, dtype=dtype)
    return place(cast(x_train)), (None if x_eval is None else place(cast(x_eval)))


def on_leaves(fn, treedef):
    """``fn(params, rest, opt_state, *args) -> (params, rest, opt_state, out)`` as a function of the state's
    leaves, a flat list of arrays: ``(leaves, *args) -> (leaves, out)``. jit then dispatches a list of
    arrays, which its C++ fast path flattens, instead of NNX ``State`` pytrees, whose flattening runs in
    Python at every call (measured at mlp9 batch 32: ~15% of a step; docs/benchmarks.md)."""
    @functools.wraps(fn)
    def flat(leaves, *args):
        params, rest, opt_state, out = fn(*jax.tree.unflatten(treedef, leaves), *args)
        return jax.tree.leaves((params, rest, opt_state)), out

    return flat


def counted_jit(counts: dict, name: str, fn, **jit_kwargs):
    """``jax.jit(fn)`` that adds 1 to ``counts[name]`` each time JAX traces it for a call, i.e. each time a
    new program is compiled (a Python side effect runs only while tracing). Public, unlike
    ``jax.jit(...)._cache_size()``: a trainer's ``compiled_count()`` reads it."""
    counts.setdefault(name, 0)

    @functools.wraps(fn)
    def traced(*args, **kwargs):
        if not counts.get("_lowering"):
            counts[name] += 1
        return fn(*args, **kwargs)

    return jax.jit(traced, **jit_kwargs)


def lower_counted(counts: dict, fn, *args):
    """``fn.lower(*args)`` without counting it as a compilation for execution (ahead-of-time lowering)."""
    counts["_lowering"] = True
    try:
        return fn.lower(*args)
    finally:
        counts["_lowering"] = False


class Trainer:
    """Model state + optimizer state + device-resident data; the same methods as ``ae_torch.train.Trainer``.
    ``spec``: a preset (name or spec) or a model graph (``ae_core.graph``: its loss graph is trained, an
    ``ae_jax.graph.GraphModule``); ``weights``: a canonical state dict to start from instead of the seeded init.

    ``train_epoch(epoch)`` runs the compiled whole-epoch scan (``mode="scan"``) or the compiled single
    step in a Python loop (``mode="step"``); both donate their buffers. ``mode="auto"`` (default) picks
    scan, except for a model whose convolutions are XLA's own (``conv_form="plain"``) on the CPU backend:
    XLA:CPU runs those inside a while-loop body far slower than as top-level ops (the ``conv`` preset's
    scan 2.3x slower than its jitted step at batch 32). ``conv_form`` (``ae_jax.convforms``): how the
    convolutions are computed; the default computes them as GEMMs on the CPU, as fast inside the scan.
    ``precision`` is the matmul precision everything is traced with ("highest" for parity). ``tx``: an optax
    transformation used instead of ``config.optimizer``'s torch-equivalent one (e.g. to measure what a
    wrong mapping does); checkpoints still record ``config.optimizer``.

    ``devices`` (``"all"``, a count or a list; default: one device) trains data-parallel over a
    ``jax.sharding`` mesh (:mod:`ae_jax.sharding`): the state and the dataset replicated, each batch split
    over the devices, gradients reduced by XLA. The same function of the same batches: results equal the
    single-device run up to floating-point summation order. With ``jax.distributed`` initialized, the
    mesh spans every process's devices.
    """

    framework = "jax"

    MODES = ("auto", "scan", "step")

    def __init__(self, spec: str | ModelSpec | Graph, config: TrainConfig, x_train, x_eval=None, *,
                 precision: str = "highest", device: jax.Device | None = None, mode: str = "auto",
                 devices=None, tx: optax.GradientTransformation | None = None, weights=None,
                 conv_form: str = "auto"):
        self.spec, self.config = get_model(spec), config
        if mode not in self.MODES:
            raise ValueError(f"unknown mode {mode!r}; expected one of {self.MODES}")
        check_loss(self.spec, config.loss)
        self.dtype = jnp_dtype(config.dtype)
        self.precision = precision
        self.tx = make_optimizer(config.optimizer) if tx is None else tx
        with conv_forms(conv_form):  # how its convolutions are computed (ae_jax.convforms)
            self.eval_graphdef, self.graphdef, params, rest = split_for_training(self.spec, config, config.seed,
                                                                                 weights)
        self._set_state(params, rest, self.tx.init(params))
        if devices is not None and device is not None:
            raise ValueError("give either device (one device) or devices (data-parallel), not both")
        self.mesh = None if devices is None else sharding.data_mesh(devices)
        batch_sharding = None
        if self.mesh is not None:
            sharding.check_divisible(config.batch_size, self.mesh)
            batch_sharding = sharding.leading_split(self.mesh)
            self._place = functools.partial(sharding.put, sharding=sharding.replicated(self.mesh))
            self._leaves = self.place(self._leaves)
        else:
            self._place = functools.partial(jax.device_put, device=device)
        self.x, self.x_eval = place_data(self.place, self.dtype, x_train, x_eval)
        self.n = len(self.x)
        self.step = 0
        self._step_numbers = []
        epoch_batches(config.seed, 0, self.n, config.batch_size)  # validates batch_size against n
        plain_conv = conv_form == "plain" and self.spec.has("conv1d", "conv2d", "conv_transpose2d")
        platform = next(iter(self.x.devices())).platform
        self.mode = mode if mode != "auto" else ("step" if plain_conv and platform == "cpu" else "scan")
        self.loss = GRAPH_LOSSES[config.loss] if isinstance(self.spec, Graph) else config.loss
        static = (self.graphdef, self.tx, self.loss)
        # with a mesh, results stay replicated (the next call finds its inputs where it left them)
        out = {} if self.mesh is None else {"out_shardings": sharding.replicated(self.mesh)}
        self._counts: dict = {}
        # the compiled step and epoch take and give the state as its leaves (on_leaves), donated
        self._step_fn = counted_jit(self._counts, "step", on_leaves(functools.partial(
            train_step_indexed, *static, batch_sharding=batch_sharding), self._treedef), donate_argnums=(0,), **out)
        self._epoch_fn = counted_jit(self._counts, "epoch", on_leaves(functools.partial(
            train_epoch, *static, batch_sharding=batch_sharding), self._treedef), donate_argnums=(0,), **out)
        self._eval_fn = counted_jit(self._counts, "eval", functools.partial(eval_loss, self.eval_graphdef, self.loss),
                                    **out)
        self.eval_noise = self.place(eval_noise(self.spec, config.seed, 0 if x_eval is None else len(self.x_eval),
                                                config.dtype))  # a graph's eval-mode randn_like draws

    # -- the state: params, the rest (e.g. BatchNorm statistics) and the optimizer state, kept as leaves --
    def _set_state(self, params, rest, opt_state) -> None:
        self._leaves, self._treedef = jax.tree.flatten((params, rest, opt_state))

    def _state(self):
        return jax.tree.unflatten(self._treedef, self._leaves)

    @property
    def state_leaves(self) -> list:
        """The state as the compiled step and epoch take it: a flat list of arrays (donated at each call)."""
        return self._leaves

    @state_leaves.setter
    def state_leaves(self, leaves: list) -> None:
        if len(leaves) != self._treedef.num_leaves:
            raise ValueError(f"expected {self._treedef.num_leaves} state leaves, got {len(leaves)}")
        self._leaves = list(leaves)

    @property
    def step_function(self):
        """The compiled step: ``(state_leaves, x, batch_idx, noise, step) -> (state_leaves, loss)``, what
        ``train_epoch(mode="step")`` calls once per batch (the bench times it bare, beside the trainer)."""
        return self._step_fn

    @property
    def params(self) -> nnx.State:
        return self._state()[0]

    @property
    def rest(self) -> nnx.State:
        return self._state()[1]

    @property
    def opt_state(self):
        return self._state()[2]

    def place(self, tree):
        """Host arrays (a pytree) put where this trainer keeps its state: its device, or replicated over its mesh."""
        return self._place(tree)

    def lower(self, mode: str = "scan", epoch: int = 0):
        """The compiled program of one epoch (``mode="scan"``) or one step (``"step"``) on ``epoch``'s inputs,
        lowered ahead of time (``jax.stages.Lowered``: ``.compile()``, ``.as_text()``); trains nothing."""
        if mode not in ("scan", "step"):
            raise ValueError(f"unknown mode {mode!r}; expected 'scan' or 'step'")
        idx, noise = self.place(self.epoch_inputs(epoch))
        args = (self._leaves, self.x, idx, noise)
        fn = self._epoch_fn if mode == "scan" else self._step_fn
        with jax.default_matmul_precision(self.precision):
            return lower_counted(self._counts, fn, *args, *(() if mode == "scan" else (self.place(np.int32(0)),)))

    @property
    def process_index(self) -> int:
        """This process in a multi-host run (0 in a single process); process 0 writes checkpoints."""
        return jax.process_index()

    @property
    def model(self) -> nnx.Module:
        """The current model (a fresh module over the current arrays, in eval mode)."""
        return nnx.merge(self.eval_graphdef, self.params, self.rest)

    def epoch_inputs(self, epoch: int):
        """ae_core's batch indices (steps, batch) and noise (steps, batch, ...) of ``epoch``, on the host."""
        c = self.config
        idx = epoch_batches(c.seed, epoch, self.n, c.batch_size)
        return idx, epoch_noise(self.spec, c.seed, epoch, len(idx), c.batch_size, c.dtype)

    def train_epoch(self, epoch: int, mode: str | None = None) -> np.ndarray:
        """One epoch on ae_core's batch order for ``epoch``; the per-step losses (float64 numpy).

        ``mode`` overrides the trainer's mode ("scan" or "step") for this epoch."""
        mode = mode or self.mode
        idx, noise = self.place(self.epoch_inputs(epoch))
        with jax.default_matmul_precision(self.precision):
            if mode == "scan":
                self._leaves, losses = self._epoch_fn(self._leaves, self.x, idx, noise)
            elif mode == "step":
                out = []
                if len(self._step_numbers) != len(idx):  # step numbers as device scalars, made once
                    self._step_numbers = [self.place(np.int32(i)) for i in range(len(idx))]
                for step in self._step_numbers:
                    self._leaves, value = self._step_fn(self._leaves, self.x, idx, noise, step)
                    out.append(value)
                losses = jnp.stack(out)
            else:
                raise ValueError(f"unknown mode {mode!r}; expected 'scan' or 'step'")
        self.step += len(idx)
        return np.asarray(losses, dtype=np.float64)

    def evaluate(self) -> float:
        """Mean loss over the eval set (jit-compiled)."""
        if self.x_eval is None:
            raise ValueError("this trainer has no eval set (x_eval)")
        with jax.default_matmul_precision(self.precision):
            return float(self._eval_fn(self.params, self.rest, self.x_eval, self.eval_noise or None))

    def compiled_count(self) -> dict[str, int]:
        """How many programs each compiled function was traced and compiled into so far (1 after any number of
        epochs = no recompilation; 0 = never run). Ahead-of-time :meth:`lower` calls are not counted."""
        return {k: v for k, v in self._counts.items() if not k.startswith("_")}

    # -- state in canonical form ---------------------------------------------------------------------
    def model_state(self) -> dict[str, np.ndarray]:
        return state_dict(self.model)

    def optimizer_state(self) -> dict[str, np.ndarray]:
        return optimizer_state(self.opt_state, self.model, self.config.optimizer, self.step)

    def load_state(self, model: dict, optim: dict, step: int) -> None:
        """Resume from canonical state (written by either framework); validates before changing anything."""
        current = self.model
        check_training_state(expected_shapes(current), param_names(current), self.config.optimizer, model, optim,
                             step, int_keys(current))
        opt_state = load_optimizer_state(self.tx.init(self.params), current, self.config.optimizer, optim, step)
        load_state_dict(current, model)  # validates everything before assigning
        _, params, rest = nnx.split(current, nnx.Param, ...)
        self._set_state(*self.place((params, rest, opt_state)))
        self.step = step
