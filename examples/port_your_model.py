"""Port your own PyTorch model to Flax NNX and let ae-parity tell you where the port goes wrong.

A small user-style model (not a preset): a strided conv, a flatten, a LayerNorm'd GELU MLP head.
Its first Flax port has one classic bug -- padding='SAME' for the stride-2 conv. The divergence
finder transfers the torch weights, runs both on real digits and names the first diverging layer
with a hint; the fixed port then agrees everywhere.

    python examples/port_your_model.py
    ae-parity diagnose --torch examples/port_your_model.py:TorchNet \\
        --flax examples/port_your_model.py:BuggyFlaxNet --input-shape 1,28,28 --flax-layout nhwc
"""

import argparse
import functools

import jax
import jax.numpy as jnp
import numpy as np
import torch
from flax import nnx
from torch import nn

from ae_core import mnist
from ae_core.inputs import pixels
from ae_jax.layers import Flatten  # NHWC -> NCHW before the reshape, as torch's nn.Flatten sees it
from ae_parity.compare import compare


class TorchNet(nn.Module):
    input_shape = (1, 28, 28)

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 8, 3, stride=2, padding=1), nn.ReLU(), nn.Flatten())
        self.head = nn.Sequential(nn.Linear(8 * 14 * 14, 32), nn.LayerNorm(32), nn.GELU(), nn.Linear(32, 10))

    def forward(self, x):
        return self.head(self.features(x))


class FlaxNet(nnx.Module):
    """The correct port (channels-last images in)."""

    padding = ((1, 1), (1, 1))  # torch's padding=1, on both sides

    def __init__(self, rngs: nnx.Rngs):
        f64 = dict(dtype=jnp.float64, param_dtype=jnp.float64)
        self.features = nnx.Sequential(nnx.Conv(1, 8, (3, 3), strides=2, padding=self.padding, rngs=rngs, **f64),
                                       jax.nn.relu, Flatten())
        self.head = nnx.Sequential(nnx.Linear(8 * 14 * 14, 32, rngs=rngs, **f64),
                                   nnx.LayerNorm(32, epsilon=1e-5, rngs=rngs, **f64),
                                   functools.partial(jax.nn.gelu, approximate=False),
                                   nnx.Linear(32, 10, rngs=rngs, **f64))

    def __call__(self, x):
        return self.head(self.features(x))


class BuggyFlaxNet(FlaxNet):
    """The first attempt: Flax's 'SAME' padding, which at stride 2 pads (0, 1), not torch's (1, 1)."""

    padding = "SAME"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="auto", choices=mnist.SOURCES)
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args(argv)
    jax.config.update("jax_enable_x64", True)

    torch.manual_seed(0)
    torch_model = TorchNet().double()
    x = pixels(mnist.load("train", args.data).images[: args.batch_size], "float64").reshape(-1, 1, 28, 28)
    to_nhwc = functools.partial(np.transpose, axes=(0, 2, 3, 1))

    print("1. the first port:")
    report = compare(torch_model, BuggyFlaxNet(nnx.Rngs(0)), x, flax_input=to_nhwc)
    print(report.table())
    print("\n2. the fixed port (explicit padding):")
    fixed = compare(torch_model, FlaxNet(nnx.Rngs(0)), x, flax_input=to_nhwc)
    print(fixed.table())
    found = report.first is not None and report.first.name == "features.0"
    print(f"\nbug found at the conv: {found}; fixed port agrees: {fixed.ok}")
    return 0 if found and fixed.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
