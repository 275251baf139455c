"""The reference PyTorch autoencoders, built from an ``ae_core`` spec.

The module tree is the tutorials' own: ``encoder`` and ``decoder`` are ``nn.Sequential`` of torch
modules, so ``state_dict()`` keys are ``encoder.0.weight`` etc. and a state dict saved by hand-written
tutorial code loads with ``strict=True``. Compare with ``ae_jax/models.py``: the same classes, the
same methods, the same tree.

Train-mode randomness (dropout masks, denoising corruption, the VAE's eps) is *supplied*:
``model(x, noise)`` with ``noise = ae_core.noise.draw_noise(spec, ...)``, keyed by layer name, so the
JAX model can be given the very same numbers. Without ``noise`` a training-mode torch model draws
from torch's RNG, as plain torch code does (not reproducible in JAX).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from ae_core import ModelSpec, check_dtype, get_spec, init_state_dict
from ae_core import spec as S
from ae_core.spec import LayerSpec

TORCH_DTYPES = {"float32": torch.float32, "float64": torch.float64}

_ACTIVATIONS = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "gelu": nn.GELU,  # exact erf GELU (approximate="none"), torch's default
    "identity": nn.Identity,
}


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


class LSTM(nn.LSTM):
    """``nn.LSTM(input_size, hidden_size, batch_first=True)`` returning only the output sequence."""

    def __init__(self, input_size: int, hidden_size: int):
        super().__init__(input_size, hidden_size, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102 (zero initial state)
        return super().forward(x)[0]


class LastStep(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, -1]


class RepeatSteps(nn.Module):
    def __init__(self, steps: int):
        super().__init__()
        self.steps = steps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.unsqueeze(1).expand(-1, self.steps, -1)


def make_layer(layer: LayerSpec) -> nn.Module:
    """One torch module for one layer spec."""
    if isinstance(layer, S.Linear):
        return nn.Linear(layer.in_features, layer.out_features, bias=layer.bias)
    if isinstance(layer, S.Activation):
        return _ACTIVATIONS[layer.name]()
    if isinstance(layer, S.Conv2d):
        return nn.Conv2d(layer.in_channels, layer.out_channels, layer.kernel_size, stride=layer.stride,
                         padding=layer.padding, bias=layer.bias)
    if isinstance(layer, S.ConvTranspose2d):
        return nn.ConvTranspose2d(layer.in_channels, layer.out_channels, layer.kernel_size, stride=layer.stride,
                                  padding=layer.padding, output_padding=layer.output_padding, bias=layer.bias)
    if isinstance(layer, S.Flatten):
        return nn.Flatten()
    if isinstance(layer, S.Unflatten):
        return nn.Unflatten(1, layer.shape)
    if isinstance(layer, S.BatchNorm1d):
        return nn.BatchNorm1d(layer.num_features, eps=layer.eps, momentum=layer.momentum)
    if isinstance(layer, S.BatchNorm2d):
        return nn.BatchNorm2d(layer.num_features, eps=layer.eps, momentum=layer.momentum)
    if isinstance(layer, S.Dropout):
        return Dropout(layer.p)
    if isinstance(layer, S.GaussianNoise):
        return GaussianNoise(layer.std, layer.clip)
    if isinstance(layer, S.MaskingNoise):
        return MaskingNoise(layer.p)
    if isinstance(layer, S.TiedLinear):
        return TiedLinear(layer.in_features, layer.out_features, bias=layer.bias)
    if isinstance(layer, S.GaussianHead):
        return GaussianHead(layer.in_features, layer.latent)
    if isinstance(layer, S.LSTM):
        return LSTM(layer.input_size, layer.hidden_size)
    if isinstance(layer, S.LastStep):
        return LastStep()
    if isinstance(layer, S.RepeatSteps):
        return RepeatSteps(layer.steps)
    raise TypeError(f"ae_torch has no module for layer spec {layer!r}")


class Autoencoder(nn.Module):
    """``x_hat = decode(encode(x))``; x is (batch, *spec.input_shape).

    ``noise``: ``{layer name: array}`` from ``ae_core.noise`` for the train-mode random layers.
    """

    def __init__(self, spec: ModelSpec):
        super().__init__()
        self.spec = spec
        if spec.corrupt:  # parameter-free: adds no state_dict entries
            self.corrupt = nn.Sequential(*(make_layer(l) for l in spec.corrupt))
        self.encoder = nn.Sequential(*(make_layer(l) for l in spec.encoder))
        self.decoder = nn.Sequential(*(make_layer(l) for l in spec.decoder))

    def _run(self, part: str, h: torch.Tensor, noise, stop: int | None = None, stats: dict | None = None):
        for i, layer in enumerate(list(getattr(self, part))[:stop]):
            name = f"{part}.{i}"
            if isinstance(layer, TiedLinear):
                h = layer(h, self.get_submodule(self.spec.decoder[i].tied_to).weight)
            elif isinstance(layer, GaussianHead):
                h, mu, logvar = layer(h, _get(noise, name))
                if stats is not None:
                    stats.update(mu=mu, logvar=logvar)
            elif isinstance(layer, (Dropout, GaussianNoise, MaskingNoise)):
                h = layer(h, _get(noise, name))
            else:
                h = layer(h)
        return h

    def encode(self, x: torch.Tensor, noise=None) -> torch.Tensor:
        """The code (for a VAE in eval mode: the mean; in train mode: a sample)."""
        return self._run("encoder", x, noise)

    def decode(self, z: torch.Tensor, noise=None) -> torch.Tensor:
        return self._run("decoder", z, noise)

    def decode_logits(self, z: torch.Tensor, noise=None) -> torch.Tensor:
        """The decoder without its final Sigmoid (for BCE from logits)."""
        if not isinstance(self.decoder[-1], nn.Sigmoid):
            raise ValueError(f"{self.spec.name}: the decoder does not end in a Sigmoid, it has no logits")
        return self._run("decoder", z, noise, stop=-1)

    def outputs(self, x: torch.Tensor, noise=None) -> dict[str, torch.Tensor]:
        """Everything a loss needs, in one pass: ``code``, ``recon``, and where the model has them,
        ``logits`` (decoder ending in Sigmoid) and ``mu`` / ``logvar`` (VAE)."""
        out: dict[str, torch.Tensor] = {}
        if self.spec.corrupt:
            x = self._run("corrupt", x, noise)
        out["code"] = z = self._run("encoder", x, noise, stats=out)
        if isinstance(self.decoder[-1], nn.Sigmoid):
            out["logits"] = self._run("decoder", z, noise, stop=-1)
            out["recon"] = self.decoder[-1](out["logits"])
        else:
            out["recon"] = self._run("decoder", z, noise)
        return out

    def corrupted(self, x: torch.Tensor, noise=None) -> torch.Tensor:
        """What the encoder sees in training: ``x`` through the corruption layers (in train mode)."""
        if not self.spec.corrupt:
            return x
        was = self.corrupt.training
        self.corrupt.train()
        try:
            return self._run("corrupt", x, noise)
        finally:
            self.corrupt.train(was)

    def forward(self, x: torch.Tensor, noise=None) -> torch.Tensor:
        if self.spec.corrupt:
            x = self._run("corrupt", x, noise)
        return self.decode(self.encode(x, noise), noise)


def _get(noise, name: str):
    if noise is None or name not in noise:
        return None
    return torch.as_tensor(noise[name])


def build(name_or_spec: str | ModelSpec, *, dtype="float32", seed: int | None = None,
          device: str | torch.device | None = None) -> Autoencoder:
    """A preset (by name) or a spec as a torch module.

    ``seed=None``: torch's own initialisation (torch RNG). ``seed=S``: the framework-free initial
    weights of ``ae_core.init_state_dict(spec, S)`` -- the same numbers ``ae_jax.build(seed=S)`` gets.
    """
    spec = get_spec(name_or_spec)
    dtype = check_dtype(dtype)
    model = Autoencoder(spec).to(dtype=TORCH_DTYPES[dtype], device=device)
    if seed is not None:
        sd = init_state_dict(spec, seed, dtype)
        model.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()}, strict=True)
    return model


def model_dtype(model: nn.Module) -> str:
    """"float32" or "float64": the dtype of a model's parameters (which must all agree)."""
    dtypes = {p.dtype for p in model.parameters()}
    if len(dtypes) != 1:
        raise ValueError(f"model parameters have mixed dtypes {sorted(map(str, dtypes))}")
    return check_dtype(dtypes.pop())
