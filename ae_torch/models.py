"""The reference PyTorch autoencoders, built from an ``ae_core`` spec.

A spec is built as a model graph (``spec.to_graph()``, ``ae_core.lowering``), the one way every model
is built: :class:`Autoencoder` is the torch graph module (``ae_torch/graph.py``) of that graph. The
module tree is the tutorials' own: ``encoder`` and ``decoder`` are ``nn.Sequential`` of torch modules
(one per layer spec, from the builders in ``ae_torch/layers.py``), so ``state_dict()`` keys are
``encoder.0.weight`` etc. and a state dict saved by hand-written tutorial code loads with
``strict=True``; a spec with module names (``ModelSpec.names``: the ``vae`` preset's ``fc1`` ... ``fc4``)
has those names. Compare with ``ae_jax/models.py``: the same classes, the same methods, the same tree.

Train-mode randomness (dropout masks, denoising corruption, the VAE's eps) is *supplied*:
``model(x, noise)`` with ``noise = ae_core.noise.draw_noise(spec, ...)``, keyed by layer name, so the
JAX model can be given the very same numbers. Without ``noise`` a training-mode torch model draws
from torch's RNG, as plain torch code does (not reproducible in JAX).
"""

from __future__ import annotations

import torch

from ae_core import ModelSpec, check_dtype, get_spec, init_state_dict
from ae_core.graph import Graph

from .graph import GraphModule
from .numerics import torch_dtype
from .weights import load_state_dict


class Autoencoder(GraphModule):
    """``x_hat = decode(encode(x))``; x is (batch, *spec.input_shape).

    A graph module of ``spec.to_graph()`` (``ae_core.lowering``): the layers are built and run the way a
    ported torch model's are (``ae_torch.graph``), the module tree is the tutorials'.
    ``noise``: ``{layer name: array}`` from ``ae_core.noise`` for the train-mode random layers.
    """

    def __init__(self, spec: ModelSpec):
        super().__init__(spec.to_graph())
        self.spec = spec

    def decode_logits(self, z: torch.Tensor, noise=None) -> torch.Tensor:
        """The decoder without its final Sigmoid (for BCE from logits)."""
        if not self.spec.has_logits:
            raise ValueError(f"{self.spec.name}: the decoder does not end in a Sigmoid, it has no logits")
        return self.run("decode_logits", z, noise=noise)

    def outputs(self, x: torch.Tensor, noise=None) -> dict[str, torch.Tensor]:
        """Everything a loss needs, in one pass: ``code``, ``recon``, and where the model has them,
        ``logits`` (decoder ending in Sigmoid) and ``mu`` / ``logvar`` (VAE)."""
        return dict(self.run("outputs", x, noise=noise))

    def corrupted(self, x: torch.Tensor, noise=None) -> torch.Tensor:
        """What the encoder sees in training: ``x`` through the corruption layers (in train mode)."""
        if not self.spec.corrupt:
            return x
        layers = [self.layers[n.target] for n in self.graph.methods["corrupt"].nodes]
        was = [m.training for m in layers]
        for m in layers:
            m.train()
        try:
            return self.run("corrupt", x, noise=noise)
        finally:
            for m, mode in zip(layers, was):
                m.train(mode)

    def forward(self, x: torch.Tensor, noise=None) -> torch.Tensor:
        return self.run("forward", x, noise=noise)


def build(name_or_spec: str | ModelSpec | Graph, *, dtype="float32", seed: int | None = None,
          device: str | torch.device | None = None) -> Autoencoder | GraphModule:
    """A preset (by name), a spec or a model graph as a torch module.

    ``seed=None``: torch's own initialisation (torch RNG). ``seed=S``: the framework-free initial
    weights of ``ae_core.init_state_dict(spec, S)`` -- the same numbers ``ae_jax.build(seed=S)`` gets.
    """
    dtype = check_dtype(dtype)
    spec = name_or_spec if isinstance(name_or_spec, Graph) else get_spec(name_or_spec)
    model = (GraphModule(spec) if isinstance(spec, Graph) else Autoencoder(spec)).to(dtype=torch_dtype(dtype),
                                                                                      device=device)
    if seed is not None:
        load_state_dict(model, init_state_dict(spec, seed, dtype))
    return model


