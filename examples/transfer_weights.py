"""Move weights from PyTorch to Flax NNX and back, and check both give the same reconstructions.

    python examples/transfer_weights.py --preset mlp9
"""

import argparse

import jax
import numpy as np
import torch
from flax import nnx

import ae_jax
import ae_torch
from ae_core import mnist, model_inputs, get_spec


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="mlp9")
    parser.add_argument("--data", default="auto", choices=mnist.SOURCES)
    parser.add_argument("--out", default="weights.safetensors")
    args = parser.parse_args(argv)
    jax.config.update("jax_default_matmul_precision", "highest")

    # 1. A torch model, initialised by torch as the tutorials do.
    torch_model = ae_torch.build(args.preset)

    # 2. The same architecture in Flax NNX; copy the weights over (strict: every name and shape checked).
    jax_model = ae_jax.build(args.preset, rngs=nnx.Rngs(0))
    ae_jax.load_state_dict(jax_model, torch_model.state_dict())

    # 3. A real MNIST batch through both.
    digits = mnist.load("test", args.data)
    x = model_inputs(get_spec(args.preset), digits.images[:256])
    with torch.no_grad():
        x_hat_torch = torch_model(torch.from_numpy(x)).numpy()
    x_hat_jax = np.asarray(jax_model(x))
    print(f"reconstructions: max |jax - torch| = {np.abs(x_hat_jax - x_hat_torch).max():.2e} (float32)")

    # 4. Save from JAX in torch naming/layout; plain torch reads it back bit for bit.
    ae_jax.save_weights(jax_model, args.out)
    again = ae_torch.build(args.preset)
    ae_torch.load_weights(again, args.out)
    same = all(torch.equal(a, b) for a, b in zip(again.state_dict().values(), torch_model.state_dict().values()))
    print(f"wrote {args.out}; torch -> jax -> file -> torch round trip bit-exact: {same}")


if __name__ == "__main__":
    main()
