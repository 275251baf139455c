"""The reference PyTorch autoencoders, built from an ``ae_core`` spec.

The module tree is the tutorials' own: ``encoder`` and ``decoder`` are ``nn.Sequential`` of torch
modules (one per layer spec, from the builders in ``ae_torch/layers.py``), so ``state_dict()`` keys are
``encoder.0.weight`` etc. and a state dict saved by hand-written tutorial code loads with
``strict=True``. Compare with ``ae_jax/models.py``: the same classes, the same methods, the same tree.

Train-mode randomness (dropout masks, denoising corruption, the VAE's eps) is *supplied*:
``model(x, noise)`` with ``noise = ae_core.noise.draw_noise(spec, ...)``, keyed by layer name, so the
JAX model can be given the very same numbers. Without ``noise`` a training-mode torch model draws
from torch's RNG, as plain torch code does (not reproducible in JAX).
"""

from __future__ import annotations

import torch
from torch import nn

from ae_core import ModelSpec, check_dtype, get_spec, init_state_dict

from .layers import make_layer
from .numerics import torch_dtype
from .weights import load_state_dict


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
        """Run ``part``'s layers (up to ``stop``); each gets the extra inputs its spec asks for and hands
        its extra outputs (the VAE head's mu, logvar) to ``stats``."""
        for i, (spec, layer) in enumerate(list(zip(getattr(self.spec, part), getattr(self, part)))[:stop]):
            extra = [self._input(what, spec, f"{part}.{i}", noise) for what in spec.inputs]
            h = layer(h, *extra)
            if spec.outputs:
                h, *values = h
                if stats is not None:
                    stats.update(zip(spec.outputs, values))
        return h

    def _input(self, what: str, spec, name: str, noise):
        if what == "noise":
            return _get(noise, name)
        if what == "tied_weight":
            return self.get_submodule(spec.tied_to).weight
        raise TypeError(f"ae_torch does not know how to supply {what!r} to {spec}")

    def encode(self, x: torch.Tensor, noise=None) -> torch.Tensor:
        """The code (for a VAE in eval mode: the mean; in train mode: a sample)."""
        return self._run("encoder", x, noise)

    def decode(self, z: torch.Tensor, noise=None) -> torch.Tensor:
        return self._run("decoder", z, noise)

    def decode_logits(self, z: torch.Tensor, noise=None) -> torch.Tensor:
        """The decoder without its final Sigmoid (for BCE from logits)."""
        if not self.spec.has_logits:
            raise ValueError(f"{self.spec.name}: the decoder does not end in a Sigmoid, it has no logits")
        return self._run("decoder", z, noise, stop=-1)

    def outputs(self, x: torch.Tensor, noise=None) -> dict[str, torch.Tensor]:
        """Everything a loss needs, in one pass: ``code``, ``recon``, and where the model has them,
        ``logits`` (decoder ending in Sigmoid) and ``mu`` / ``logvar`` (VAE)."""
        out: dict[str, torch.Tensor] = {}
        if self.spec.corrupt:
            x = self._run("corrupt", x, noise)
        out["code"] = z = self._run("encoder", x, noise, stats=out)
        if self.spec.has_logits:
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
    model = Autoencoder(spec).to(dtype=torch_dtype(dtype), device=device)
    if seed is not None:
        load_state_dict(model, init_state_dict(spec, seed, dtype))
    return model


