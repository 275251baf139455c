"""The benchmark runs every variant on the same batches and reports what docs/benchmarks.md shows."""

import json

import numpy as np
import pytest

from ae_core import get_spec
from ae_parity.bench import (BenchReport, gemm_only_ms, matmul_flops_per_example, run_bench,
                             run_jax_bench, run_sweep_bench, sized)


def test_flop_count_of_mlp9_by_hand():
    # Linear MACs: encoder 784*128 + 128*64 + 64*36 + 36*18 + 18*9 = 111,658; the decoder mirrors it.
    # forward + weight grads + input grads (none for the first layer), 2 FLOPs per MAC.
    assert matmul_flops_per_example(get_spec("mlp9")) == 2 * (3 * 2 * 111_658 - 784 * 128)


@pytest.fixture(scope="module")
def reports(data_dir):
    """One tiny run of each bench mode, shared by the tests below (each mode costs seconds of compiling)."""
    quiet = dict(source="sample", data_dir=data_dir, log=lambda m: None)
    return {"side_by_side": run_bench("mlp9", [64], epochs=1, limit=512, **quiet),
            "sweep": run_sweep_bench("mlp9", models=2, batch_sizes=[32], epochs=1, limit=128, run_epochs=10, **quiet),
            "jax": run_jax_bench("mlp9", batch_sizes=[32], epochs=1, limit=64, size=96, **quiet)}


def test_bench_small_run_reports_every_variant(reports):
    report = reports["side_by_side"]
    assert isinstance(report, BenchReport) and report.kind == "side_by_side"
    (entry,) = report.batches
    names = [r["variant"] for r in entry["results"]]
    assert names == ["tutorial DataLoader", "ae_torch eager (single)", "ae_torch eager (foreach)",
                     "ae_torch eager (fused)", "ae_jax jit step", "ae_jax scan epoch", "ae_jax step function, bare"]
    assert entry["steps"] == 8 and all(r["steps"] == 8 and r["ms_per_epoch"] > 0 for r in entry["results"])
    best = next(r for r in entry["results"] if r["variant"] == entry["best_torch_eager"])
    assert best["vs_torch_eager"] == pytest.approx(1.0)
    scan = next(r for r in entry["results"] if r["variant"] == "ae_jax scan epoch")
    assert entry["jit_step_vs_bare"] > 0 and "its compiled step function called bare" in report.text()
    assert scan["compile_s"] > 0 and entry["floor_ms"] > 0 and entry["gemm_only_ms"] > 0
    assert report.machine["matmul_gflops"] > 1 and report.n_train == 512 and report.data == "sample"
    table = report.markdown()
    assert "| ae_jax scan epoch |" in table and "FLOP floor" in table
    assert "ae_jax scan epoch" in report.text() and "x faster than the tutorial loop" in report.text()


def test_sized_repeats_the_digits():
    x = np.arange(12.0).reshape(3, 4)
    y = sized(x, 7)
    assert y.shape == (7, 4) and (y[3:6] == x).all() and (y[6] == x[0]).all()
    assert sized(x, None) is x


def test_sweep_and_jax_only_benches_report_their_tables(reports):
    report = reports["sweep"]
    (entry,) = report.batches
    rows = {r["variant"]: r for r in entry["results"]}
    assert list(rows) == ["2 sequential runs", "sweep (own batch orders)", "sweep (shared batch order)"]
    seq = rows["2 sequential runs"]
    assert seq["vs_sequential"] == 1.0 and seq["end_to_end_vs_sequential"] == 1.0
    for r in rows.values():  # model-samples/s = 2 models x 4 steps x 32 over the epoch time
        assert r["model_samples_per_s"] == pytest.approx(2 * 4 * 32 / (r["ms_per_epoch_all_models"] / 1e3))
    assert entry["solo_compile_s"] > 0 and entry["sweep_compile_s"] > 0 and entry["max_speedup"] > 0
    assert "| 32 | sweep (own batch orders) |" in report.markdown()

    report = reports["jax"]
    (entry,) = report.batches
    assert report.n_train == 96 and entry["steps"] == 3 and entry["compile_s"] > 0
    assert [r["variant"] for r in entry["results"]] == ["scan epoch (highest)", "scan epoch (default)",
                                                       "jit step (highest)"]
    assert "| 32 | scan epoch (default) |" in report.markdown()


def test_the_three_modes_give_one_report_type(reports, tmp_path):
    headers = {"side_by_side": "| variant | ms/epoch | samples/s | vs best ae_torch eager | compile |",
               "jax": "| batch | variant | ms/epoch | samples/s | compile (scan, AOT) |",
               "sweep": "| batch | variant | ms/epoch (2 models) | model-samples/s | vs sequential | "
                        "end to end, 10 epochs (compile included) |"}
    for kind, report in reports.items():
        assert type(report) is BenchReport and report.kind == kind and report.preset == "mlp9"
        assert report.data == "sample" and report.epochs_timed == 1 and len(report.batches) == 1
        assert headers[kind] in report.markdown().splitlines()
        assert report.text().strip().startswith(f"batch {report.batches[0]['batch_size']} (")
        path = tmp_path / f"{kind}.json"
        report.save(path)
        saved = json.loads(path.read_text())
        assert saved["kind"] == kind and saved == json.loads(json.dumps(report.to_dict()))
        assert BenchReport.from_dict(saved).markdown() == report.markdown()
    assert "scan_vs_tutorial" in reports["side_by_side"].batches[0]  # with the tutorial loop
    assert set(reports["side_by_side"].to_dict()) == {"kind", "preset", "epochs_timed", "batches", "machine", "data",
                                                      "n_train", "versions", "skipped"}
    assert set(reports["sweep"].to_dict()) == {"kind", "preset", "models", "n_train", "data", "epochs_timed",
                                               "run_epochs", "machine", "batches"}
    assert set(reports["jax"].to_dict()) == {"kind", "preset", "n_train", "data", "epochs_timed", "machine", "batches"}


def test_a_report_without_kind_reads_as_side_by_side_and_unknown_kinds_fail():
    assert BenchReport.from_dict({"preset": "mlp9", "epochs_timed": 1, "machine": {}}).kind == "side_by_side"
    with pytest.raises(ValueError, match="unknown bench report kind"):
        BenchReport("torch", "mlp9", 1, {})


def test_gemm_only_is_none_for_convolutions():
    assert gemm_only_ms(get_spec("conv"), 32, 2) is None
    assert gemm_only_ms(get_spec("mlp9"), 8, 2, repeats=1) > 0


def test_the_jax_worker_computes_at_highest_and_leaves_the_process_precision_alone(data_dir, monkeypatch):
    # the worker runs here, in this process, under a process-wide "default" (conftest sets "highest"): its
    # GEMM-only epoch and matmul rate must still run at "highest" (a context), and "default" must survive it
    import multiprocessing as mp

    import jax

    from ae_parity.bench import side_by_side
    from ae_parity.bench.common import bench_config

    seen = []
    for name in ("gemm_only_ms", "measured_matmul_gflops"):
        fn = getattr(side_by_side, name)
        monkeypatch.setattr(side_by_side, name, lambda *a, fn=fn, **k: seen.append(
            jax.config.jax_default_matmul_precision) or fn(*a, **k))
    parent, child = mp.Pipe()
    parent.send(("epoch", "ae_jax scan epoch", 0))
    parent.send(("stop",))
    before = jax.config.jax_default_matmul_precision
    jax.config.update("jax_default_matmul_precision", "default")
    try:
        side_by_side.worker(child, "jax", "mlp9", bench_config(1, 32), "sample", data_dir, 64, False)
        after = jax.config.jax_default_matmul_precision
    finally:
        jax.config.update("jax_default_matmul_precision", before)
    kind, info = parent.recv()
    assert kind == "ready", info
    assert info["variants"] == ["ae_jax jit step", "ae_jax scan epoch", "ae_jax step function, bare"] and info["n_train"] == 64
    assert info["compile_s"] > 0 and info["gemm_only_ms"] > 0 and info["matmul_gflops"] > 0
    kind, seconds = parent.recv()
    assert kind == "time" and seconds > 0
    assert seen == ["highest", "highest"] and after == "default"


def test_bench_command_writes_json_and_prints_markdown(data_dir, tmp_path, capsys):
    from ae_parity.cli import main

    common = ["bench", "--preset", "mlp9", "--batch-sizes", "32", "--epochs", "1", "--limit", "64",
              "--data", "sample", "--data-dir", str(data_dir)]
    assert main(common + ["--size", "96"]) == 2  # --size without --jax-only / --sweep
    assert "--size is for --jax-only and --sweep" in capsys.readouterr().err
    path = tmp_path / "bench.json"
    assert main(common + ["--jax-only", "--json", str(path), "--markdown"]) == 0
    out = capsys.readouterr().out
    assert "| batch | variant | ms/epoch | samples/s | compile (scan, AOT) |" in out
    assert "batch 32 (2 steps/epoch, 64 examples): scan epoch (highest)" in out
    saved = json.loads(path.read_text())
    assert saved["kind"] == "jax" and saved["n_train"] == 64 and len(saved["batches"]) == 1


@pytest.mark.parametrize("preset", ["vae", "lstm"])
def test_every_preset_benches_with_its_own_loss_and_inputs(data_dir, preset):
    """The bench crashed for the VAE (it trained it on mse, which a VAE refuses) and for lstm (the tutorial
    DataLoader feeds images, lstm eats rows): the VAE gets its ELBO, lstm's loader variant is skipped."""
    import multiprocessing as mp

    from ae_parity.bench import side_by_side
    from ae_parity.bench.common import bench_config

    spec = get_spec(preset)
    config = bench_config(1, 32, spec)
    assert config.loss == ("vae" if preset == "vae" else "mse")
    assert side_by_side.has_image_loader(spec) == (preset == "vae")
    parent, child = mp.Pipe()
    parent.send(("epoch", "ae_torch eager (fused)", 0))
    parent.send(("stop",))
    side_by_side.worker(child, "torch", preset, config, "sample", data_dir, 64, side_by_side.has_image_loader(spec))
    kind, info = parent.recv()
    assert kind == "ready", info
    assert ("tutorial DataLoader" in info["variants"]) == (preset == "vae")
    kind, seconds = parent.recv()
    assert kind == "time" and seconds > 0


def test_the_bare_step_variant_computes_what_the_jit_step_computes(train):
    """The bench's bare variant calls the jit step's own compiled function on the same inputs: after two
    epochs its trainer holds bit for bit the state of a trainer that ran train_epoch(mode="step")."""
    from ae_core import model_inputs
    from ae_jax.train import Trainer
    from ae_parity.bench.common import bench_config
    from ae_parity.bench.side_by_side import BareSteps

    spec = get_spec("conv_bn")
    x = model_inputs(spec, train.images[:96], "float32")
    config = bench_config(1, 32, spec)
    plain, bare = Trainer(spec, config, x, mode="step"), BareSteps(Trainer(spec, config, x, mode="step"))
    for epoch in range(2):
        plain.train_epoch(epoch)
        bare.prepare(epoch)
        bare.train_epoch(epoch)
    assert bare.trainer.step == plain.step
    assert bare.trainer.compiled_count() == plain.compiled_count() == {"step": 1, "epoch": 0, "eval": 0}
    for part in ("model_state", "optimizer_state"):
        a, b = getattr(plain, part)(), getattr(bare.trainer, part)()
        assert sorted(a) == sorted(b)
        for k in a:
            np.testing.assert_array_equal(a[k], b[k], err_msg=k)
