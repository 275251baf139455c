"""Load the weights trained by train_torch.py and train_jax.py into BOTH frameworks, compare, and plot.

    python examples/train_torch.py && python examples/train_jax.py
    python examples/compare_and_plot.py torch_ae.safetensors jax_ae.safetensors
"""

import argparse

import jax
import numpy as np
import torch

import ae_jax
import ae_torch
from ae_core import get_spec, mnist, model_inputs
from ae_parity import plots


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("torch_weights")
    p.add_argument("jax_weights")
    p.add_argument("--preset", default="mlp9")
    p.add_argument("--data", default="auto")
    p.add_argument("--out", default="compare.png")
    args = p.parse_args(argv)
    jax.config.update("jax_default_matmul_precision", "highest")

    spec = get_spec(args.preset)
    test = mnist.load("test", args.data)
    x = model_inputs(spec, test.images)
    rows = {}
    for name, path in (("trained in torch", args.torch_weights), ("trained in jax", args.jax_weights)):
        tm, jm = ae_torch.build(spec), ae_jax.build(spec)
        ae_torch.load_weights(tm, path)  # the same file into both frameworks
        ae_jax.load_weights(jm, path)
        with torch.no_grad():
            in_torch = tm(torch.from_numpy(x)).numpy()
        in_jax = np.asarray(jm(x))
        print(f"{name}: test MSE {np.mean((in_torch - x) ** 2):.5f}; run in torch vs run in jax: "
              f"max |diff| {np.abs(in_torch - in_jax).max():.1e}")
        rows[name] = in_jax
    pick = plots.one_per_digit(test.labels)
    path = plots.reconstructions(args.out, x[pick], {k: v[pick] for k, v in rows.items()},
                                 "test digits: original / trained in torch / trained in jax")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
