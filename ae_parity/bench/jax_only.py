"""``ae-parity bench --jax-only``: ae_jax alone, in this process (for accelerators, where the torch
reference of the side-by-side bench is not what is being measured)."""

from __future__ import annotations

import functools

from ae_core import get_spec

from ..runner import load_data
from .common import bench_config, compile_seconds, jax_machine, round_robin, sized, wall
from .report import BenchReport


def run_jax_bench(preset: str = "mlp9", batch_sizes=(32, 256), epochs: int = 5, source: str = "auto",
                  data_dir=None, limit: int | None = None, size: int | None = None, log=print) -> BenchReport:
    """ae_jax alone, in this process: the scanned epoch at matmul precision "highest" and "default"
    (TF32 on GPUs: what it buys in speed) and the jitted step, with ahead-of-time compile times. For
    accelerators, where the torch reference of ``run_bench`` is not what is being measured."""
    from ae_jax.numerics import matmul_precision
    from ae_jax.train import Trainer

    spec = get_spec(preset)
    data = load_data(spec, source, data_dir, "float32", limit=limit)
    x = sized(data.x_train, size)
    report = BenchReport("jax", spec.name, epochs, jax_machine(), data=data.source, n_train=len(x))
    for bs in batch_sizes:
        log(f"batch {bs}: building and compiling each variant, then {epochs} timed epochs each ...")
        config = bench_config(epochs, bs, spec)
        trainers = {"scan epoch (highest)": (Trainer(spec, config, x, precision="highest", mode="scan"), "scan"),
                    "scan epoch (default)": (Trainer(spec, config, x, precision="default", mode="scan"), "scan"),
                    "jit step (highest)": (Trainer(spec, config, x, precision="highest", mode="step"), "step")}
        with matmul_precision("highest"):
            compile_s = compile_seconds(trainers["scan epoch (highest)"][0])
        med = round_robin({name: wall(functools.partial(tr.train_epoch, mode=mode))
                           for name, (tr, mode) in trainers.items()}, epochs)
        steps = len(x) // bs
        entry = {"batch_size": bs, "steps": steps, "compile_s": compile_s,
                 "results": [{"variant": name, "ms_per_epoch": 1e3 * s, "samples_per_s": steps * bs / s}
                             for name, s in med.items()]}
        report.batches.append(entry)
        log(report.batch_text(entry))
    return report
