"""The README's parity tables: every preset, the first shuffled batch of 64 (seed 0) of the MNIST sample.

float32 from a float32_grid.py file (batch 64, seed 0, the given thread count); float64 measured here:

    python docs/measure/parity_tables.py --grid grid-2.jsonl --data-dir data
"""

from __future__ import annotations

import argparse
import json

import numpy as np

GROUPS = ("forward", "loss", "grad", "step")


def float32_table(path: str, threads: int) -> list[str]:
    eps = float(np.finfo(np.float32).eps)
    rows = [json.loads(line) for line in open(path)]
    rows = [r for r in rows if "kinks" not in r and r["batch"] == 64 and r["seed"] == 0 and r["threads"] == threads]
    out = ["| preset | outputs | loss | gradients | Adam step | largest ratio | all rows pass |", "|---|---|---|---|---|---|---|"]
    for preset in sorted({r["preset"] for r in rows}):
        cells = []
        for g in GROUPS:
            worst = max((r for r in rows if r["preset"] == preset and r["group"] == g), key=lambda r: r["jax_err"])
            cells.append(f"{worst['jax_err'] / eps:.1f} / {worst['torch_err'] / eps:.1f}")
        mine = [r for r in rows if r["preset"] == preset]
        ratio = max((r["jax_err"] / r["torch_err"] for r in mine if r["torch_err"] >= 2 * eps and not r["elementwise"]), default=0.0)
        out.append(f"| {preset} | " + " | ".join(cells) + f" | {f'{ratio:.2f}' if ratio else '-'} | {'yes' if all(r['ok'] for r in mine) else 'NO'} |")
    return out


def float64_table(data_dir: str) -> list[str]:
    from ae_core import PRESETS, epoch_batches, get_spec, mnist, model_inputs
    from ae_core.optim import OptimizerConfig
    from ae_jax.numerics import enable_x64
    from ae_parity.parity import forward_parity, step_parity

    enable_x64()
    train = mnist.load("train", "sample", data_dir)
    out = ["| preset | outputs (abs) | loss (rel) | gradients (rel) | Adam step (abs) | all rows within 1e-12 |",
           "|---|---|---|---|---|---|"]
    for preset in sorted(PRESETS):
        spec = get_spec(preset)
        x = model_inputs(spec, train.images[epoch_batches(seed=0, epoch=0, n=len(train.images), batch_size=64)[0]],
                         "float64")
        rows = forward_parity(spec, "float64", x) + step_parity(spec, "float64", x, OptimizerConfig("adam", lr=1e-3))
        worst = [max((r.value for r in rows if r.group == g), default=0.0) for g in GROUPS]
        out.append(f"| {preset} | " + " | ".join(f"{v:.1e}" for v in worst) + f" | {'yes' if all(r.ok for r in rows) else 'NO'} |")
    return out


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--grid", required=True)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--data-dir", default="data")
    a = p.parse_args()
    print("\n".join(float32_table(a.grid, a.threads)), end="\n\n")
    print("\n".join(float64_table(a.data_dir)))
