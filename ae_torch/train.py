"""The reference PyTorch training loop, in the tutorials' style (mirrors ae_jax/train.py).

``Trainer`` holds a model and its optimizer; ``train_epoch(epoch)`` runs one epoch over the batches
``ae_core.epoch_batches(seed, epoch, ...)`` -- from the tensor-resident dataset (fast path) or through a
torchvision ``DataLoader`` (the tutorials' path, kept for comparison) -- and returns the per-step losses.
The model is a preset's spec or a model graph (a ported torch model, ``ae_core.graph_training``).
"""

from __future__ import annotations

import numpy as np
import torch

from ae_core import ModelSpec, epoch_batches, get_model, init_state_dict
from ae_core.graph import Graph
from ae_core.graph_training import loss_graph
from ae_core.noise import epoch_noise, eval_noise
from ae_core.training import TrainConfig, check_loss, check_training_state

from .graph import build as build_graph
from .losses import GRAPH_LOSSES, LOSSES
from .models import build
from .numerics import torch_dtype
from .optim import load_optimizer_state, make_optimizer, optimizer_state
from .weights import expected_shapes, int_keys, load_state_dict, param_names, state_dict


def loss_and_grad(model: torch.nn.Module, x: torch.Tensor, target: torch.Tensor | None = None,
                  loss="mse", noise=None) -> tuple[float, dict[str, np.ndarray]]:
    """The loss (a name of ``LOSSES``, or a loss function such as ``GRAPH_LOSSES["mse"]``) of one batch and ``{parameter name: gradient}`` (canonical: numpy, torch layout; the same
    as ``ae_jax.train.loss_and_grad`` returns); the model's .grad fields are left clear.

    Runs in the model's current mode (a train-mode BatchNorm updates its running statistics)."""
    model.zero_grad(set_to_none=True)
    value = (LOSSES[loss] if isinstance(loss, str) else loss)(model, x, x if target is None else target, noise)
    value.backward()
    grads = {name: p.grad.detach().cpu().numpy().copy() for name, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    return value.item(), grads


def build_model(model: ModelSpec | Graph, config: TrainConfig, device=None, weights=None) -> torch.nn.Module:
    """What a trainer trains (mirrors ``ae_jax.train.build_model``): a preset's ``Autoencoder``, or a model
    graph's loss graph (``ae_core.graph_training.loss_graph``: the graph's modules, ``forward`` returning
    what the loss compares) run by ``ae_torch.graph``; in ``config.dtype``, from ``weights`` (a canonical
    state dict, e.g. a torch model's) or else the seeded init ``init_state_dict(model, config.seed)``."""
    if isinstance(model, Graph):
        out = build_graph(loss_graph(model, config.loss), dtype=config.dtype).to(device=device)
        load_state_dict(out, init_state_dict(model, config.seed, config.dtype) if weights is None else weights)
        return out
    out = build(model, dtype=config.dtype, seed=config.seed, device=device)
    if weights is not None:
        load_state_dict(out, weights)
    return out


class EpochBatchSampler(torch.utils.data.Sampler):
    """A DataLoader ``batch_sampler`` yielding ae_core's batches, so the DataLoader sees the same batches."""

    def __init__(self, n: int, batch_size: int, seed: int):
        self.n, self.batch_size, self.seed, self.epoch = n, batch_size, seed, 0

    def __iter__(self):
        yield from epoch_batches(self.seed, self.epoch, self.n, self.batch_size).tolist()

    def __len__(self) -> int:
        return self.n // self.batch_size


class Trainer:
    """Model + optimizer + data; the same methods as ``ae_jax.train.Trainer``.

    ``spec``: a preset (name or spec) or a model graph (``ae_core.graph``). ``x_train``: model inputs
    (N, *input_shape) as numpy or a tensor; or ``dataset``: a torchvision dataset yielding ``(input,
    label)`` (the DataLoader path). ``impl`` picks torch's optimizer implementation (default / single /
    foreach / fused). ``weights``: a canonical state dict to start from instead of the seeded init.
    """

    framework = "torch"

    def __init__(self, spec: str | ModelSpec | Graph, config: TrainConfig, x_train=None, x_eval=None, *,
                 dataset=None, impl: str = "default", device=None, num_workers: int = 0, weights=None):
        self.spec, self.config = get_model(spec), config
        check_loss(self.spec, config.loss)
        if (x_train is None) == (dataset is None):
            raise ValueError("give exactly one of x_train (tensor-resident data) and dataset (DataLoader path)")
        dtype = torch_dtype(config.dtype)
        self.device = device
        self.model = build_model(self.spec, config, device, weights)
        self.opt = make_optimizer(self.model, config.optimizer, impl)
        self.loss_fn = (GRAPH_LOSSES if isinstance(self.spec, Graph) else LOSSES)[config.loss]
        self.step = 0
        if dataset is not None:
            self.n = len(dataset)
            self.sampler = EpochBatchSampler(self.n, config.batch_size, config.seed)
            self.loader = torch.utils.data.DataLoader(dataset, batch_sampler=self.sampler, num_workers=num_workers)
            self.x = None
        else:
            self.x = torch.as_tensor(x_train).to(device=device, dtype=dtype)
            self.n = len(self.x)
        self.x_eval = None if x_eval is None else torch.as_tensor(x_eval).to(device=device, dtype=dtype)
        self.eval_noise = {k: torch.from_numpy(v).to(device) for k, v in eval_noise(  # a graph's randn_like
            self.spec, config.seed, 0 if x_eval is None else len(x_eval), config.dtype).items()}
        epoch_batches(config.seed, 0, self.n, config.batch_size)  # validates batch_size against n

    def _step(self, xb: torch.Tensor, noise: dict) -> torch.Tensor:
        self.opt.zero_grad(set_to_none=True)
        loss = self.loss_fn(self.model, xb, xb, noise)
        loss.backward()
        self.opt.step()
        return loss.detach()

    process_index = 0  # one process (the JAX trainer's multi-host runs have more)

    def epoch_inputs(self, epoch: int):
        """ae_core's batch indices (steps, batch) and noise (steps, batch, ...) of ``epoch``, on the host."""
        c = self.config
        idx = epoch_batches(c.seed, epoch, self.n, c.batch_size)
        return idx, epoch_noise(self.spec, c.seed, epoch, len(idx), c.batch_size, c.dtype)

    def train_epoch(self, epoch: int) -> np.ndarray:
        """One epoch on ae_core's batch order for ``epoch``; the per-step losses (float64 numpy)."""
        self.model.train()
        losses = []
        c = self.config
        idx, noise = self.epoch_inputs(epoch)
        batches = torch.from_numpy(idx)
        noise = {k: torch.from_numpy(v).to(self.device) for k, v in noise.items()}
        if self.x is None:
            self.sampler.epoch = epoch
            dtype = torch_dtype(c.dtype)
            for step, (xb, _) in enumerate(self.loader):
                xb = xb.reshape(len(xb), *self.spec.input_shape).to(dtype=dtype, device=self.device)
                losses.append(self._step(xb, {k: v[step] for k, v in noise.items()}))
        else:
            for step, idx in enumerate(batches):
                losses.append(self._step(self.x[idx], {k: v[step] for k, v in noise.items()}))
        self.step += len(losses)
        return torch.stack(losses).double().cpu().numpy()

    @torch.no_grad()
    def evaluate(self) -> float:
        """Mean loss over the eval set."""
        if self.x_eval is None:
            raise ValueError("this trainer has no eval set (x_eval)")
        self.model.eval()
        return float(self.loss_fn(self.model, self.x_eval, self.x_eval, self.eval_noise or None))

    # -- state in canonical form ---------------------------------------------------------------------
    def model_state(self) -> dict[str, np.ndarray]:
        return state_dict(self.model)

    def optimizer_state(self) -> dict[str, np.ndarray]:
        return optimizer_state(self.opt, self.model, self.config.optimizer)

    def load_state(self, model: dict, optim: dict, step: int) -> None:
        """Resume from canonical state (written by either framework); validates before changing anything."""
        check_training_state(expected_shapes(self.model), param_names(self.model), self.config.optimizer, model, optim,
                             step, int_keys(self.model))
        load_state_dict(self.model, model)
        load_optimizer_state(self.opt, self.model, self.config.optimizer, optim, step)
        self.step = step
