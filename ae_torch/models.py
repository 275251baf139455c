"""The reference PyTorch autoencoders, built from an ``ae_core`` spec.

The module tree is the tutorials' own: ``encoder`` and ``decoder`` are ``nn.Sequential`` of
``nn.Linear`` and activation modules, so ``state_dict()`` keys are ``encoder.0.weight`` etc. and a
state dict saved by hand-written tutorial code loads with ``strict=True``. Compare with
``ae_jax/models.py``: the same classes, the same methods, the same tree.
"""

from __future__ import annotations

import torch
from torch import nn

from ae_core import ModelSpec, check_dtype, get_spec, init_state_dict
from ae_core.spec import Activation, Conv2d, ConvTranspose2d, Flatten, LayerSpec, Linear, Unflatten

TORCH_DTYPES = {"float32": torch.float32, "float64": torch.float64}

_ACTIVATIONS = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "gelu": nn.GELU,  # exact erf GELU (approximate="none"), torch's default
    "identity": nn.Identity,
}


def make_layer(layer: LayerSpec) -> nn.Module:
    """One torch module for one layer spec."""
    if isinstance(layer, Linear):
        return nn.Linear(layer.in_features, layer.out_features, bias=layer.bias)
    if isinstance(layer, Activation):
        return _ACTIVATIONS[layer.name]()
    if isinstance(layer, Conv2d):
        return nn.Conv2d(layer.in_channels, layer.out_channels, layer.kernel_size, stride=layer.stride,
                         padding=layer.padding, bias=layer.bias)
    if isinstance(layer, ConvTranspose2d):
        return nn.ConvTranspose2d(layer.in_channels, layer.out_channels, layer.kernel_size, stride=layer.stride,
                                  padding=layer.padding, output_padding=layer.output_padding, bias=layer.bias)
    if isinstance(layer, Flatten):
        return nn.Flatten()
    if isinstance(layer, Unflatten):
        return nn.Unflatten(1, layer.shape)
    raise TypeError(f"ae_torch has no module for layer spec {layer!r}")


class Autoencoder(nn.Module):
    """``x_hat = decode(encode(x))``; x is (batch, *spec.input_shape)."""

    def __init__(self, spec: ModelSpec):
        super().__init__()
        self.spec = spec
        self.encoder = nn.Sequential(*(make_layer(l) for l in spec.encoder))
        self.decoder = nn.Sequential(*(make_layer(l) for l in spec.decoder))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)

    def decode_logits(self, z: torch.Tensor) -> torch.Tensor:
        """The decoder without its final Sigmoid (for BCE from logits)."""
        if not isinstance(self.decoder[-1], nn.Sigmoid):
            raise ValueError(f"{self.spec.name}: the decoder does not end in a Sigmoid, it has no logits")
        return self.decoder[:-1](z)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))


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
