"""``ae-parity bench --sweep M``: a sweep of M models (``ae_jax.sweep.SweepTrainer``, vmap) against the
same M models trained one after another, in this process."""

from __future__ import annotations

import dataclasses

from ae_core import get_spec

from ..runner import load_data
from .common import (bench_config, compile_seconds, jax_machine, matmul_flops_per_example, measured_matmul_gflops,
                     round_robin, sized, wall)
from .report import BenchReport


def _entry(spec, models: int, bs: int, steps: int, med: dict[str, float], solo_compile: float, sweep_compile: float,
           run_epochs: int, rate: float) -> dict:
    """One batch size's entry: every variant against the sequential runs, per epoch and end to end."""
    # what M models' matmuls alone would take at the machine's measured matmul rate: no variant can be
    # faster, so sequential / this is the largest speed-up any sweep could show here
    floor_ms = 1e3 * models * matmul_flops_per_example(spec) * steps * bs / (rate * 1e9)
    seq = med[f"{models} sequential runs"]
    seq_total = models * solo_compile + run_epochs * seq
    results = []
    for name, s in med.items():
        total = seq_total if name.endswith("runs") else sweep_compile + run_epochs * s
        results.append({"variant": name, "ms_per_epoch_all_models": 1e3 * s,
                        "model_samples_per_s": models * steps * bs / s, "vs_sequential": seq / s,
                        "end_to_end_s": total, "end_to_end_vs_sequential": seq_total / total})
    return {"batch_size": bs, "steps": steps, "solo_compile_s": solo_compile, "sweep_compile_s": sweep_compile,
            "results": results, "flop_floor_ms": floor_ms, "max_speedup": 1e3 * seq / floor_ms}


def run_sweep_bench(preset: str = "mlp9", models: int = 8, batch_sizes=(32, 256), epochs: int = 3,
                    source: str = "auto", data_dir=None, limit: int | None = None, size: int | None = None,
                    run_epochs: int = 10, log=print) -> BenchReport:
    """A sweep of ``models`` models (seeds 0..M-1) against the same models trained one after another
    (M solo scanned trainers), same batches, epochs round-robin; throughput in model-samples/s.
    Compile times are measured ahead of time; "end to end" adds them to ``run_epochs`` epochs (M solo
    programs to compile sequentially, one for the sweep)."""
    from ae_jax.numerics import matmul_precision
    from ae_jax.sweep import SweepTrainer, grid
    from ae_jax.train import Trainer

    spec = get_spec(preset)
    data = load_data(spec, source, data_dir, "float32", limit=limit)
    x = sized(data.x_train, size)
    report = BenchReport("sweep", spec.name, epochs, jax_machine(), data=data.source, n_train=len(x), models=models,
                         run_epochs=run_epochs)
    members = grid(range(models), [1e-3])
    rate = measured_matmul_gflops()
    report.machine["matmul_gflops"] = rate
    with matmul_precision("highest"):  # the solo runs, the sweeps and the AOT compiles alike
        for bs in batch_sizes:
            log(f"batch {bs}: {models} solo runs and the sweeps of {models}, compiling, then {epochs} timed "
                f"epochs each ...")
            config = bench_config(epochs, bs, spec)
            solos = [Trainer(spec, dataclasses.replace(config, seed=m.seed), x, mode="scan") for m in members]
            sweeps = {order: SweepTrainer(spec, config, members, x, batch_order=order) for order in ("own", "shared")}
            solo_compile, sweep_compile = compile_seconds(solos[0]), compile_seconds(sweeps["own"])
            sequential = wall(lambda e, solos=solos: [s.train_epoch(e) for s in solos])
            med = round_robin({f"{models} sequential runs": sequential,
                               "sweep (own batch orders)": wall(sweeps["own"].train_epoch),
                               "sweep (shared batch order)": wall(sweeps["shared"].train_epoch)}, epochs)
            entry = _entry(spec, models, bs, len(x) // bs, med, solo_compile, sweep_compile, run_epochs, rate)
            report.batches.append(entry)
            log(report.batch_text(entry))
    return report
