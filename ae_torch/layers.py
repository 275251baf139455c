"""torch modules for the ae_core layer kinds: one registered builder per kind (mirrors ae_jax/layers.py).

``@builds(SpecClass)`` registers the function that turns a layer spec into its torch module; torch's own
modules where they exist (``nn.Linear``, ``nn.Conv2d``, ``nn.BatchNorm2d`` ...), and below, the few that
torch lacks. Adding a layer kind here is one builder (and, if torch has no module, one small module).
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn
from torch.nn import functional as F

from ae_core import layers as L
from ae_core.layers import LayerSpec

_ACTIVATIONS = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "gelu": nn.GELU,  # exact erf GELU (approximate="none"), torch's default
    "identity": nn.Identity,
}

BUILDERS: dict[type, Callable[[LayerSpec], nn.Module]] = {}


def builds(spec_class: type):
    """Register the decorated function as the torch builder of ``spec_class``'s layer kind."""

    def register(fn):
        if spec_class in BUILDERS:
            raise TypeError(f"ae_torch builds {spec_class.__name__} twice")
        BUILDERS[spec_class] = fn
        return fn

    return register


def make_layer(layer: LayerSpec) -> nn.Module:
    """One torch module for one layer spec."""
    builder = BUILDERS.get(type(layer))
    if builder is None:
        raise TypeError(f"ae_torch has no module for layer spec {layer!r}")
    return builder(layer)


# ------------------------------------------------------------------------- layers torch lacks ----
class Dropout(nn.Dropout):
    """``nn.Dropout`` that can be given its keep-mask: ``x * mask / (1 - p)``."""

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        if not self.training or mask is None:
            return super().forward(x)
        return x * mask * (1.0 / (1.0 - self.p))


class GaussianNoise(nn.Module):
    """Denoising corruption (train mode): ``x + std * eps``, clipped to [0, 1] if ``clip``."""

    def __init__(self, std: float, clip: bool = True):
        super().__init__()
        self.std, self.clip = std, clip

    def forward(self, x: torch.Tensor, eps: torch.Tensor | None = None) -> torch.Tensor:
        if not self.training:
            return x
        x = x + self.std * (torch.randn_like(x) if eps is None else eps)
        return x.clamp(0.0, 1.0) if self.clip else x


class MaskingNoise(nn.Module):
    """Denoising corruption (train mode): each input zeroed with probability ``p``."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        if not self.training:
            return x
        return x * ((torch.rand_like(x) >= self.p).to(x.dtype) if mask is None else mask)


class TiedLinear(nn.Module):
    """``y = x @ W + b`` with ``W`` the weight of another (encoder) Linear, passed in: one parameter."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.bias = nn.Parameter(torch.empty(out_features)) if bias else None
        if bias:  # nn.Linear's bias rule: U(-1/sqrt(in_features), 1/sqrt(in_features))
            nn.init.uniform_(self.bias, -in_features ** -0.5, in_features ** -0.5)

    def forward(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        return F.linear(x, weight.t(), self.bias)


class GaussianHead(nn.Module):
    """The VAE encoder head: ``mu`` and ``logvar`` Linears; ``z = mu + exp(logvar / 2) * eps``."""

    def __init__(self, in_features: int, latent: int):
        super().__init__()
        self.mu = nn.Linear(in_features, latent)
        self.logvar = nn.Linear(in_features, latent)

    def forward(self, h: torch.Tensor, eps: torch.Tensor | None = None):
        """(z, mu, logvar); z = mu in eval mode."""
        mu, logvar = self.mu(h), self.logvar(h)
        if not self.training:
            return mu, mu, logvar
        eps = torch.randn_like(mu) if eps is None else eps
        return mu + torch.exp(0.5 * logvar) * eps, mu, logvar


class _SequenceOnly:
    """A recurrent layer returning only its output sequence (batch_first by default, zero initial state)."""

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = True):
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first=batch_first)

    def forward(self, x: torch.Tensor, hx=None) -> torch.Tensor:  # noqa: D102
        return super().forward(x, hx)[0]


class LSTM(_SequenceOnly, nn.LSTM):
    """``nn.LSTM`` returning only the output sequence (the presets' layer)."""


class GRU(_SequenceOnly, nn.GRU):
    """``nn.GRU`` returning only the output sequence."""


class LastStep(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, -1]


class RepeatSteps(nn.Module):
    def __init__(self, steps: int):
        super().__init__()
        self.steps = steps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.unsqueeze(1).expand(-1, self.steps, -1)



# ---------------------------------------------------------------------------------- builders ----
@builds(L.Linear)
def _linear(l: L.Linear) -> nn.Module:
    return nn.Linear(l.in_features, l.out_features, bias=l.bias)


@builds(L.Activation)
def _activation(l: L.Activation) -> nn.Module:
    return _ACTIVATIONS[l.name]()


@builds(L.Conv2d)
def _conv2d(l: L.Conv2d) -> nn.Module:
    return nn.Conv2d(l.in_channels, l.out_channels, l.kernel_size, stride=l.stride, padding=l.padding,
                     dilation=l.dilation, groups=l.groups, bias=l.bias, padding_mode=l.padding_mode)


@builds(L.Conv1d)
def _conv1d(l: L.Conv1d) -> nn.Module:
    return nn.Conv1d(l.in_channels, l.out_channels, l.kernel_size, stride=l.stride, padding=l.padding,
                     dilation=l.dilation, groups=l.groups, bias=l.bias, padding_mode=l.padding_mode)


@builds(L.ConvTranspose2d)
def _conv_transpose2d(l: L.ConvTranspose2d) -> nn.Module:
    return nn.ConvTranspose2d(l.in_channels, l.out_channels, l.kernel_size, stride=l.stride, padding=l.padding,
                              output_padding=l.output_padding, groups=l.groups, bias=l.bias, dilation=l.dilation)


@builds(L.Flatten)
def _flatten(l: L.Flatten) -> nn.Module:
    return nn.Flatten()


@builds(L.Unflatten)
def _unflatten(l: L.Unflatten) -> nn.Module:
    return nn.Unflatten(1, l.shape)


@builds(L.BatchNorm1d)
def _batchnorm1d(l: L.BatchNorm1d) -> nn.Module:
    return nn.BatchNorm1d(l.num_features, eps=l.eps, momentum=l.momentum, affine=l.affine,
                          track_running_stats=l.track_running_stats)


@builds(L.BatchNorm2d)
def _batchnorm2d(l: L.BatchNorm2d) -> nn.Module:
    return nn.BatchNorm2d(l.num_features, eps=l.eps, momentum=l.momentum, affine=l.affine,
                          track_running_stats=l.track_running_stats)


@builds(L.LayerNorm)
def _layer_norm(l: L.LayerNorm) -> nn.Module:
    return nn.LayerNorm(l.normalized_shape, eps=l.eps, elementwise_affine=l.elementwise_affine, bias=l.bias)


@builds(L.GroupNorm)
def _group_norm(l: L.GroupNorm) -> nn.Module:
    return nn.GroupNorm(l.num_groups, l.num_channels, eps=l.eps, affine=l.affine)


@builds(L.PReLU)
def _prelu(l: L.PReLU) -> nn.Module:
    return nn.PReLU(l.num_parameters, init=l.init)


@builds(L.Embedding)
def _embedding(l: L.Embedding) -> nn.Module:
    return nn.Embedding(l.num_embeddings, l.embedding_dim, padding_idx=l.padding_idx)


@builds(L.Dropout)
def _dropout(l: L.Dropout) -> nn.Module:
    return Dropout(l.p)


@builds(L.GaussianNoise)
def _gaussian_noise(l: L.GaussianNoise) -> nn.Module:
    return GaussianNoise(l.std, l.clip)


@builds(L.MaskingNoise)
def _masking_noise(l: L.MaskingNoise) -> nn.Module:
    return MaskingNoise(l.p)


@builds(L.TiedLinear)
def _tied_linear(l: L.TiedLinear) -> nn.Module:
    return TiedLinear(l.in_features, l.out_features, bias=l.bias)


@builds(L.GaussianHead)
def _gaussian_head(l: L.GaussianHead) -> nn.Module:
    return GaussianHead(l.in_features, l.latent)


def _recurrent(full: type, sequence_only: type):
    def build(l) -> nn.Module:  # torch's own module where the graph takes its whole return value
        return (full if l.returns_state else sequence_only)(l.input_size, l.hidden_size, l.num_layers, l.bias,
                                                            l.batch_first)
    return build


builds(L.LSTM)(_recurrent(nn.LSTM, LSTM))
builds(L.GRU)(_recurrent(nn.GRU, GRU))


@builds(L.LastStep)
def _last_step(l: L.LastStep) -> nn.Module:
    return LastStep()


@builds(L.RepeatSteps)
def _repeat_steps(l: L.RepeatSteps) -> nn.Module:
    return RepeatSteps(l.steps)
