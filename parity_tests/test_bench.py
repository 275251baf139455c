"""The benchmark runs every variant on the same batches and reports what docs/benchmarks.md shows."""

import pytest

from ae_core import get_spec
import numpy as np

from ae_parity.bench import (markdown, markdown_jax, matmul_flops_per_example, run_bench, run_jax_bench,
                             run_sweep_bench, sized)


def test_flop_count_of_mlp9_by_hand():
    # Linear MACs: encoder 784*128 + 128*64 + 64*36 + 36*18 + 18*9 = 111,658; the decoder mirrors it.
    # forward + weight grads + input grads (none for the first layer), 2 FLOPs per MAC.
    assert matmul_flops_per_example(get_spec("mlp9")) == 2 * (3 * 2 * 111_658 - 784 * 128)


def test_bench_small_run_reports_every_variant(data_dir):
    report = run_bench("mlp9", [64], epochs=1, source="sample", data_dir=data_dir, limit=512, log=lambda m: None)
    (entry,) = report["batches"]
    names = [r["variant"] for r in entry["results"]]
    assert names == ["tutorial DataLoader", "ae_torch eager (single)", "ae_torch eager (foreach)",
                     "ae_torch eager (fused)", "ae_jax jit step", "ae_jax scan epoch"]
    assert entry["steps"] == 8 and all(r["steps"] == 8 and r["ms_per_epoch"] > 0 for r in entry["results"])
    best = next(r for r in entry["results"] if r["variant"] == entry["best_torch_eager"])
    assert best["vs_torch_eager"] == pytest.approx(1.0)
    scan = entry["results"][-1]
    assert scan["compile_s"] > 0 and entry["floor_ms"] > 0 and entry["gemm_only_ms"] > 0
    assert report["machine"]["matmul_gflops"] > 1
    table = markdown(report)
    assert "| ae_jax scan epoch |" in table and "FLOP floor" in table


def test_sized_repeats_the_digits():
    x = np.arange(12.0).reshape(3, 4)
    y = sized(x, 7)
    assert y.shape == (7, 4) and (y[3:6] == x).all() and (y[6] == x[0]).all()
    assert sized(x, None) is x


def test_sweep_and_jax_only_benches_report_their_tables(data_dir):
    quiet = dict(source="sample", data_dir=data_dir, log=lambda m: None)
    report = run_sweep_bench("mlp9", models=2, batch_sizes=[32], epochs=1, limit=128, run_epochs=10, **quiet)
    (entry,) = report["batches"]
    rows = {r["variant"]: r for r in entry["results"]}
    assert list(rows) == ["2 sequential runs", "sweep (own batch orders)", "sweep (shared batch order)"]
    seq = rows["2 sequential runs"]
    assert seq["vs_sequential"] == 1.0 and seq["end_to_end_vs_sequential"] == 1.0
    for r in rows.values():  # model-samples/s = 2 models x 4 steps x 32 over the epoch time
        assert r["model_samples_per_s"] == pytest.approx(2 * 4 * 32 / (r["ms_per_epoch_all_models"] / 1e3))
    assert entry["solo_compile_s"] > 0 and entry["sweep_compile_s"] > 0 and entry["max_speedup"] > 0
    assert "| 32 | sweep (own batch orders) |" in markdown_jax(report)

    report = run_jax_bench("mlp9", batch_sizes=[32], epochs=1, limit=64, size=96, **quiet)
    (entry,) = report["batches"]
    assert report["n_train"] == 96 and entry["steps"] == 3 and entry["compile_s"] > 0
    assert [r["variant"] for r in entry["results"]] == ["scan epoch (highest)", "scan epoch (default)",
                                                       "jit step (highest)"]
    assert "| 32 | scan epoch (default) |" in markdown_jax(report)
