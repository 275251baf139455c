"""The benchmark runs every variant on the same batches and reports what docs/benchmarks.md shows."""

import pytest

from ae_core import get_spec
from ae_parity.bench import markdown, matmul_flops_per_example, run_bench


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
