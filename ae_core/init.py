"""PyTorch's default initial weights, drawn with numpy, so both frameworks start from the same state.

``torch.nn.Linear.reset_parameters`` uses ``kaiming_uniform_(weight, a=sqrt(5))``, i.e.
U(-b, b) with b = gain * sqrt(3 / fan_in), gain = sqrt(2 / (1 + a^2)) = sqrt(1/3)  ->  b = 1/sqrt(fan_in);
the bias is U(-1/sqrt(fan_in), 1/sqrt(fan_in)) too. Conv2d and ConvTranspose2d use the same rule with
torch's fan_in (weight.size(1) * k * k: in_channels for Conv2d, out_channels for ConvTranspose2d). A model
initialised here is distributed exactly like one built by the tutorial code; the values come from numpy's
PCG64 so they do not depend on either framework's RNG. Draw order: layers in execution order, each
layer's parameters in ``param_shapes()`` order, one generator per seed.

Each layer kind's rule is registered beside its spec (``ae_core.layers``): LSTM and GRU -- every tensor
U(-1/sqrt(hidden), 1/sqrt(hidden)); BatchNorm -- weight 1, bias 0, running_mean 0, running_var 1,
num_batches_tracked 0; LayerNorm and GroupNorm -- weight 1, bias 0; PReLU -- every slope its ``init``
(0.25); Embedding -- N(0, 1), the padding row 0; grouped convolutions -- the conv rule with torch's
fan_in (weight.size(1) * kernel size); a VAE head's two Linears and a tied Linear's bias -- the Linear
rule with their own fan_in; parameter-free layers -- nothing.
"""

from __future__ import annotations

import math

import numpy as np

from .graph import Graph
from .layers import LAYER_KINDS, SpecError
from .spec import ModelSpec


def linear_bound(fan_in: int) -> float:
    return 1.0 / math.sqrt(fan_in)


def init_state_dict(spec: ModelSpec | Graph, seed: int, dtype="float32") -> dict[str, np.ndarray]:
    """A canonical state dict (torch names and layout, buffers included) with PyTorch's default init.

    A model graph (``ae_core.graph``): the same rules for its modules, in the torch model's module order
    (``Graph.modules``), under their torch paths."""
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([int(seed), 0x1A17])))
    layers = (spec.modules.items() if isinstance(spec, Graph)
              else ((f"{part}.{i}", layer) for part, i, layer in spec.layers()))
    out: dict[str, np.ndarray] = {}
    for path, layer in layers:
        values = LAYER_KINDS[layer.kind].init(layer, rng, dtype)
        if set(values) != set(layer.state_shapes()):
            raise SpecError(f"the init rule of layer kind {layer.kind!r} gives {sorted(values)}, "
                            f"not its state {sorted(layer.state_shapes())}")
        named = (lambda n: n) if isinstance(spec, Graph) else spec.torch_name  # a spec's module names (ModelSpec.names)
        out.update({named(f"{path}.{name}"): value for name, value in values.items()})
    return out
