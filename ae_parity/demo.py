"""The demo: MNIST, one preset in both frameworks from the same weights, a parity table."""

from __future__ import annotations

import numpy as np

from ae_core import epoch_batches, get_spec, model_inputs
from ae_core import mnist

from .parity import format_table, forward_parity, summarize


def first_batch(spec, source: str, data_dir, batch_size: int, seed: int) -> tuple[np.ndarray, str]:
    """The first shuffled training batch (framework-free order) as model inputs, and the data source."""
    data = mnist.load("train", source, data_dir)
    idx = epoch_batches(seed, 0, len(data), batch_size)[0]
    return model_inputs(spec, data.images[idx], "float64"), data.source


def run_parity(args, dtypes) -> int:
    spec = get_spec(args.preset)
    x, source = first_batch(spec, args.data, args.data_dir, args.batch_size, args.seed)
    ok = True
    for dtype in dtypes:
        rows = forward_parity(spec, dtype, x, seed=args.seed)
        title = (f"\n{spec.name} | {dtype} | matmul precision highest | batch {len(x)} of MNIST "
                 f"({source}) | weights: ae_core seed {args.seed}, shared by both frameworks")
        print(format_table(rows, title))
        worst = summarize(rows)
        print("worst: " + ", ".join(f"{k} {v:.2e}" for k, v in worst.items()))
        ok &= all(r.ok for r in rows)
    print("\nPARITY OK" if ok else "\nPARITY FAILED")
    return 0 if ok else 1


def run_demo(args) -> int:
    spec = get_spec(args.preset)
    print(f"ae-parity demo: {spec.name} ({spec.description})")
    print(f"  encoder {spec.describe('encoder')}  |  decoder {spec.describe('decoder')}  |  "
          f"{spec.num_params():,} parameters")
    return run_parity(args, dtypes=["float32", "float64"])
