"""What ``ae_jax.train.Trainer.train_epoch(mode="step")`` adds around its own compiled step (issue 17):
the trainer's epoch against the same compiled function called bare on the same donated state
(``ae_parity.bench.side_by_side.BareSteps``: the epoch's inputs placed before the clock starts, no loss
fetched), in one process, epochs interleaved (trainer, bare, trainer, ...), median ms per step.

    python docs/measure/trainer_overhead.py [DATA_DIR] [EPOCHS]
"""

from __future__ import annotations

import sys
import time

import jax
import numpy as np

from ae_core import get_spec, mnist, model_inputs
from ae_jax.train import Trainer
from ae_parity.bench.common import bench_config
from ae_parity.bench.side_by_side import BareSteps


def measure(preset: str, batch_size: int, images: np.ndarray, epochs: int) -> tuple[float, float]:
    spec = get_spec(preset)
    x = model_inputs(spec, images, "float32")
    config = bench_config(epochs + 1, batch_size, spec)
    trainer, bare = Trainer(spec, config, x, mode="step"), BareSteps(Trainer(spec, config, x, mode="step"))

    def plain(e):
        t0 = time.perf_counter()
        trainer.train_epoch(e)
        return time.perf_counter() - t0

    def direct(e):
        bare.prepare(e)
        t0 = time.perf_counter()
        bare.train_epoch(e)
        return time.perf_counter() - t0

    steps = len(x) // batch_size
    times = {plain: [], direct: []}
    with jax.default_matmul_precision("highest"):
        for f in times:
            f(0)  # compile
        for e in range(1, epochs + 1):
            for f, out in times.items():
                out.append(1e3 * f(e) / steps)
    return float(np.median(times[plain])), float(np.median(times[direct]))


def main(data_dir: str = "data", epochs: int = 11) -> None:
    images = mnist.load("train", "sample", data_dir).images[:2048]
    print("| preset | batch | Trainer jit step, ms/step | its compiled step bare, ms/step | ratio |")
    print("|---|---:|---:|---:|---:|")
    for preset in ("mlp9", "conv", "vae", "lstm"):
        for bs in (32, 256):
            a, b = measure(preset, bs, images, epochs)
            print(f"| {preset} | {bs} | {a:.3f} | {b:.3f} | {a / b:.3f}x |", flush=True)


if __name__ == "__main__":
    main(*(sys.argv[1:2] or ["data"]), *(int(a) for a in sys.argv[2:3]))
