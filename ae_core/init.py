"""PyTorch's default initial weights, drawn with numpy, so both frameworks start from the same state.

``torch.nn.Linear.reset_parameters`` uses ``kaiming_uniform_(weight, a=sqrt(5))``, i.e.
U(-b, b) with b = gain * sqrt(3 / fan_in), gain = sqrt(2 / (1 + a^2)) = sqrt(1/3)  ->  b = 1/sqrt(fan_in);
the bias is U(-1/sqrt(fan_in), 1/sqrt(fan_in)) too. Conv2d and ConvTranspose2d use the same rule with
torch's fan_in (weight.size(1) * k * k: in_channels for Conv2d, out_channels for ConvTranspose2d). A model initialised here is distributed exactly
like one built by the tutorial code; the values come from numpy's PCG64 so they do not depend on either
framework's RNG. Draw order: parameters in ``spec.param_shapes()`` order, one generator per seed.

Other layers, as torch initialises them: LSTM -- every tensor U(-1/sqrt(hidden), 1/sqrt(hidden));
BatchNorm -- weight 1, bias 0, running_mean 0, running_var 1, num_batches_tracked 0; a VAE head's two
Linears and a tied Linear's bias -- the Linear rule with their own fan_in.
"""

from __future__ import annotations

import math

import numpy as np

from .spec import LSTM, BatchNorm1d, BatchNorm2d, Conv2d, ConvTranspose2d, GaussianHead, Linear, ModelSpec, SpecError, TiedLinear


def linear_bound(fan_in: int) -> float:
    return 1.0 / math.sqrt(fan_in)


def init_state_dict(spec: ModelSpec, seed: int, dtype="float32") -> dict[str, np.ndarray]:
    """A canonical state dict (torch names and layout, buffers included) with PyTorch's default init."""
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([int(seed), 0x1A17])))
    out: dict[str, np.ndarray] = {}
    for part, i, layer in spec.layers():
        shapes = layer.param_shapes()
        prefix = f"{part}.{i}."
        if isinstance(layer, (Linear, Conv2d, ConvTranspose2d, TiedLinear, GaussianHead, LSTM)):
            bound = linear_bound(layer.fan_in)
            for pname, shape in shapes.items():
                out[prefix + pname] = rng.uniform(-bound, bound, size=shape).astype(dtype)
        elif isinstance(layer, (BatchNorm1d, BatchNorm2d)):
            c = layer.num_features
            out.update({prefix + "weight": np.ones(c, dtype), prefix + "bias": np.zeros(c, dtype),
                        prefix + "running_mean": np.zeros(c, dtype), prefix + "running_var": np.ones(c, dtype),
                        prefix + "num_batches_tracked": np.zeros((), np.int64)})
        elif shapes:
            raise SpecError(f"no default initialiser for layer kind {layer.kind!r}")
    return out
