"""The random inputs of train-mode layers, drawn once with numpy and given to both frameworks.

Dropout masks, denoising corruption and the VAE's reparameterisation noise (and a model graph's
``torch.randn_like`` / dropout draws, ``Graph.noise_shapes()``, keyed by node) are not drawn by torch's or
JAX's RNG (which can never agree): ``ModelSpec.noise_shapes()`` says what a model needs per example,
and this module draws it -- for one batch (:func:`draw_noise`) or a whole epoch (:func:`epoch_noise`,
a function of ``(seed, epoch)`` like the batch order, so a resumed run draws the same noise). Both
trainers consume the same arrays, so a trajectory with dropout or a VAE is the same in both frameworks.

- "bernoulli" (param = keep probability): a 0/1 mask in the model dtype;
- "normal": standard normal, drawn in float64 and rounded to the model dtype;
- "uniform": U[0, 1) (``torch.rand``), likewise.
"""

from __future__ import annotations

import numpy as np

from .graph import Graph
from .graph_training import eval_method
from .spec import ModelSpec

_NOISE_STREAM = 0x6E6F6973  # separates the noise stream from the batch order for the same (seed, epoch)
_EVAL_STREAM = 0x6576616C  # the evaluation's draws, apart from every epoch's


def draw_noise(spec: ModelSpec | Graph, batch_shape: tuple[int, ...] | int, rng: np.random.Generator,
               dtype="float32", shapes: dict | None = None) -> dict[str, np.ndarray]:
    """``{layer name: array of shape (*batch_shape, *per-example shape)}`` for every noisy layer (a model
    graph: every random draw of its forward, by node name); ``shapes``: these instead of
    ``spec.noise_shapes()``."""
    batch_shape = (batch_shape,) if isinstance(batch_shape, int) else tuple(batch_shape)
    out = {}
    for name, (kind, shape, param) in (spec.noise_shapes() if shapes is None else shapes).items():
        size = batch_shape + tuple(shape)
        if kind == "bernoulli":
            out[name] = (rng.random(size) < param).astype(dtype)
        elif kind == "normal":
            out[name] = rng.standard_normal(size).astype(dtype)
        elif kind == "uniform":
            out[name] = rng.random(size).astype(dtype)
        else:  # pragma: no cover - spec layers only declare the two kinds above
            raise ValueError(f"{name}: unknown noise kind {kind!r}")
    return out


def epoch_noise(spec: ModelSpec | Graph, seed: int, epoch: int, steps: int, batch_size: int,
                dtype="float32") -> dict[str, np.ndarray]:
    """The noise of one epoch, (steps, batch_size, ...) per layer; empty for deterministic models."""
    if not spec.noise_shapes():
        return {}
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([int(seed), int(epoch), _NOISE_STREAM])))
    return draw_noise(spec, (steps, batch_size), rng, dtype)


def batch_noise(spec: ModelSpec | Graph, seed: int, batch_size: int, dtype="float32") -> dict[str, np.ndarray]:
    """The noise for one batch (parity checks, examples)."""
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([int(seed), _NOISE_STREAM])))
    return draw_noise(spec, batch_size, rng, dtype)


def eval_noise(spec: ModelSpec | Graph, seed: int, n: int, dtype="float32") -> dict[str, np.ndarray]:
    """The random draws an evaluation pass of ``n`` examples needs, the same at every evaluation: none for
    a preset (its eval mode draws nothing), a model graph's eval-mode normal and uniform draws (a
    ``torch.randn_like`` runs in both modes; dropout is off in eval), from a stream of their own."""
    if not isinstance(spec, Graph):
        return {}
    shapes = {k: v for k, v in spec.noise_shapes(eval_method(spec)).items() if v[0] in ("normal", "uniform")}
    if not shapes:
        return {}
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([int(seed), _NOISE_STREAM, _EVAL_STREAM])))
    return draw_noise(spec, n, rng, dtype, shapes)
