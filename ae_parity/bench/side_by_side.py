"""``ae-parity bench``: training speed, side by side, same model, same batches.

Variants (each trains its own copy of the same initial model along the same batch sequence):
- ``tutorial DataLoader``: torchvision MNIST + ``ToTensor`` + ``DataLoader`` + ``torch.optim.Adam``
  (torch's default implementation) -- the tutorials' loop;
- ``ae_torch eager (<impl>)``: the dataset as one tensor, indexed per batch; each torch optimizer
  implementation (single-tensor, foreach, fused) is measured and the fastest is the reference;
- ``ae_jax jit step``: one compiled train step per batch, called from Python;
- ``ae_jax scan epoch``: the whole epoch as one compiled ``lax.scan``;
- ``ae_jax step function, bare``: the jit step's own compiled function called in a loop on the same
  donated state, its epoch's inputs placed on the device before the clock starts and no loss fetched:
  what the jit step would cost with nothing of the Trainer around it (its per-epoch batch order and
  noise, their transfer, the losses' transfer back);
- for a model with convolutions, ``ae_jax jit step, plain convs`` and ``ae_jax scan epoch, plain
  convs``: the same with every convolution XLA's own (``conv_form="plain"``) instead of the default
  form (``ae_jax.convforms``: GEMMs for the dilated ones on the CPU).

Each framework lives in its own worker process, as in real use: with a torch trainer active in the
same process on this 2-core machine, the JAX epoch measured 107-110 ms against 62-64 ms alone (not
thread affinity; ``OMP_WAIT_POLICY=PASSIVE`` helped partly, at the price of a 4x slower torch). One
bench run drives both workers; epochs are timed round-robin (variant A epoch k, variant B epoch k, ...;
only one variant computes at a time) so that load on a shared machine hits every variant alike. The
median epoch is reported, after one warm-up epoch (which includes JAX compilation). Compile time is
measured separately, ahead of time (``lower().compile()``).
The FLOP floor is the model's matmul FLOPs per epoch divided by the machine's measured float32 matmul
rate (large square matmuls), i.e. the time the epoch would take if every GEMM ran at peak.
The JAX worker computes everything at matmul precision "highest" (a context, not a process-wide
setting): the trainers, the GEMM-only epoch and the measured matmul rate.
"""

from __future__ import annotations

import contextlib
import functools
import time
from dataclasses import asdict, dataclass

from ae_core import get_spec, mnist
from ae_core.training import TrainConfig

from ..runner import load_data
from .common import (bench_config, compile_seconds, gemm_only_ms, host_machine, matmul_flops_per_example,
                     measured_matmul_gflops, round_robin)
from .report import BenchReport


@dataclass
class Result:
    variant: str
    batch_size: int
    steps: int
    ms_per_epoch: float
    samples_per_s: float
    vs_torch_eager: float = float("nan")  # >1: faster than the best ae_torch eager
    compile_s: float | None = None


TORCH_VARIANTS = ("tutorial DataLoader", "ae_torch eager (single)", "ae_torch eager (foreach)",
                  "ae_torch eager (fused)")
JAX_VARIANTS = ("ae_jax jit step", "ae_jax scan epoch", "ae_jax step function, bare")


class BareSteps:
    """A trainer's compiled step called directly (``Trainer.step_function`` on ``Trainer.state_leaves``):
    ``prepare(epoch)`` places the epoch's inputs (untimed), ``train_epoch(epoch)`` runs the steps."""

    def __init__(self, trainer):
        self.trainer, self.inputs = trainer, None

    def prepare(self, epoch: int) -> None:
        import numpy as np

        t = self.trainer
        idx, noise = t.place(t.epoch_inputs(epoch))
        self.inputs = (idx, noise, [t.place(np.int32(i)) for i in range(len(idx))])

    def train_epoch(self, epoch: int) -> None:
        import jax

        t, (idx, noise, steps) = self.trainer, self.inputs
        leaves, fn, values = t.state_leaves, t.step_function, []
        with jax.default_matmul_precision(t.precision):  # the program train_epoch runs, not another one
            for step in steps:
                leaves, value = fn(leaves, t.x, idx, noise, step)
                values.append(value)
        jax.block_until_ready(values)
        t.state_leaves, t.step = leaves, t.step + len(steps)


def _numerics(framework: str):
    """The JAX worker's matmul precision, "highest", as a context (the torch worker never imports JAX)."""
    if framework != "jax":
        return contextlib.nullcontext()
    from ae_jax.numerics import matmul_precision

    return matmul_precision("highest")


def has_image_loader(spec) -> bool:
    """Whether the tutorial DataLoader variant (torchvision's images through ``ToTensor``) feeds ``spec``."""
    return spec.input in ("mnist", "mnist_image")


def _make_variants(framework: str, preset: str, config: TrainConfig, source: str, data_dir, limit, include_loader):
    spec = get_spec(preset)
    data = load_data(spec, source, data_dir, "float32", limit=limit)
    variants = {}
    if framework == "torch":
        import torchvision.transforms as T

        from ae_torch.data import mnist_dataset
        from ae_torch.train import Trainer

        if include_loader:  # (run_bench has dropped it for a preset that does not eat images)
            dataset = mnist_dataset("train", source, data_dir, transform=T.ToTensor())  # (1, 28, 28)
            dataset.data, dataset.targets = dataset.data[: len(data.x_train)], dataset.targets[: len(data.x_train)]
            variants["tutorial DataLoader"] = (Trainer(spec, config, dataset=dataset), {})
        for impl in ("single", "foreach", "fused"):
            variants[f"ae_torch eager ({impl})"] = (Trainer(spec, config, data.x_train, impl=impl), {})
    else:
        from ae_jax.train import Trainer

        variants["ae_jax jit step"] = (Trainer(spec, config, data.x_train), {"mode": "step"})
        variants["ae_jax scan epoch"] = (Trainer(spec, config, data.x_train), {"mode": "scan"})
        variants["ae_jax step function, bare"] = (BareSteps(Trainer(spec, config, data.x_train, mode="step")), {})
        if spec.has("conv2d", "conv_transpose2d", "conv1d"):  # the convolutions as XLA's own, beside the default
            plain = Trainer(spec, config, data.x_train, conv_form="plain")
            variants["ae_jax jit step, plain convs"] = (plain, {"mode": "step"})
            variants["ae_jax scan epoch, plain convs"] = (Trainer(spec, config, data.x_train, conv_form="plain"),
                                                          {"mode": "scan"})
    return spec, data, variants


def _worker_info(framework: str, spec, config: TrainConfig, data, variants) -> dict:
    info = {"variants": list(variants), "n_train": len(data.x_train), "data": data.source}
    if framework == "jax":
        import jax

        info.update(compile_s=compile_seconds(variants["ae_jax scan epoch"][0]),
                    gemm_only_ms=gemm_only_ms(spec, config.batch_size, len(data.x_train) // config.batch_size),
                    matmul_gflops=measured_matmul_gflops(), jax=jax.__version__,
                    devices=[str(d) for d in jax.devices()])
    else:
        import torch

        info.update(torch=torch.__version__, torch_threads=torch.get_num_threads())
    return info


def worker(conn, framework: str, preset: str, config: TrainConfig, source: str, data_dir, limit, include_loader):
    """A framework's variants in their own process; answers ("epoch", name, k) with seconds."""
    try:
        with _numerics(framework):
            spec, data, variants = _make_variants(framework, preset, config, source, data_dir, limit, include_loader)
            conn.send(("ready", _worker_info(framework, spec, config, data, variants)))
            while True:
                msg = conn.recv()
                if msg[0] == "stop":
                    return
                _, name, epoch = msg
                trainer, kwargs = variants[name]
                if hasattr(trainer, "prepare"):
                    trainer.prepare(epoch)
                t = time.perf_counter()
                trainer.train_epoch(epoch, **kwargs)
                conn.send(("time", time.perf_counter() - t))
    except Exception as e:  # report, don't hang the parent
        conn.send(("error", f"{framework} worker: {type(e).__name__}: {e}"))


class _Workers:
    def __init__(self, preset, config, source, data_dir, limit, include_loader):
        import multiprocessing as mp

        ctx = mp.get_context("spawn")
        self.conns, self.procs, self.info = {}, [], {}
        for framework in ("torch", "jax"):
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=worker, args=(child, framework, preset, config, source, data_dir, limit,
                                                     include_loader), daemon=True)
            proc.start()
            self.conns[framework], self.procs = parent, self.procs + [proc]
        for framework, conn in self.conns.items():
            self.info[framework] = self._recv(conn, "ready")

    @staticmethod
    def _recv(conn, kind):
        msg = conn.recv()
        if msg[0] == "error":
            raise RuntimeError(msg[1])
        assert msg[0] == kind, msg
        return msg[1]

    def epoch(self, name: str, epoch: int) -> float:
        conn = self.conns["torch" if name in TORCH_VARIANTS else "jax"]
        conn.send(("epoch", name, epoch))
        return self._recv(conn, "time")

    def close(self):
        for conn in self.conns.values():
            conn.send(("stop",))
        for proc in self.procs:
            proc.join(timeout=30)


def _entry(spec, bs: int, med: dict[str, float], jinfo: dict, include_loader: bool) -> dict:
    """One batch size's entry: every variant against the best ae_torch eager, the scan epoch against the
    FLOP floor, the GEMMs alone and (with the loader) the tutorial loop."""
    steps = jinfo["n_train"] // bs
    results = {name: Result(name, bs, steps, 1e3 * seconds, steps * bs / seconds) for name, seconds in med.items()}
    eager = [r for name, r in results.items() if name.startswith("ae_torch eager")]
    best_eager = min(eager, key=lambda r: r.ms_per_epoch)
    for r in results.values():
        r.vs_torch_eager = best_eager.ms_per_epoch / r.ms_per_epoch
    scan = results["ae_jax scan epoch"]
    scan.compile_s = jinfo["compile_s"]
    flops = matmul_flops_per_example(spec) * steps * bs
    floor_ms = 1e3 * flops / (jinfo["matmul_gflops"] * 1e9)
    entry = {"batch_size": bs, "steps": steps, "results": [asdict(r) for r in results.values()],
             "best_torch_eager": best_eager.variant, "flops_per_epoch": flops, "floor_ms": floor_ms,
             "scan_vs_floor": scan.ms_per_epoch / floor_ms, "gemm_only_ms": jinfo["gemm_only_ms"],
             "scan_vs_gemm_only": scan.ms_per_epoch / jinfo["gemm_only_ms"] if jinfo["gemm_only_ms"] else None}
    if include_loader:
        entry["scan_vs_tutorial"] = results["tutorial DataLoader"].ms_per_epoch / scan.ms_per_epoch
    if "ae_jax step function, bare" in results:  # what the Trainer adds around its compiled step
        entry["jit_step_vs_bare"] = (results["ae_jax jit step"].ms_per_epoch
                                     / results["ae_jax step function, bare"].ms_per_epoch)
    return entry


def run_bench(preset: str = "mlp9", batch_sizes=(32, 256), epochs: int = 5, source: str = "auto",
              data_dir=None, include_loader: bool = True, limit: int | None = None, log=print) -> BenchReport:
    """The side-by-side bench (module docstring): fresh torch and JAX workers per batch size."""
    spec = get_spec(preset)
    # resolved once, here: the workers get "full" or "sample", never "auto" -- each worker is its own
    # process, and on "auto" each would try the download again and print the fallback again (and could
    # even read another source than this one if the network came back in between)
    source, _ = mnist.ensure(data_dir, source)
    report = BenchReport("side_by_side", spec.name, epochs, host_machine())
    if include_loader and not has_image_loader(spec):
        include_loader = False
        report.skipped.append(f"tutorial DataLoader: it reads images, and {spec.name} eats {spec.input}")
        log(f"skipped the {report.skipped[-1]}")
    for bs in batch_sizes:
        log(f"batch {bs}: starting a torch and a jax worker, building and compiling every variant, then "
            f"{epochs} timed epochs each, interleaved ...")
        workers = _Workers(preset, bench_config(epochs, bs, spec), source, data_dir, limit, include_loader)
        try:
            tinfo, jinfo = workers.info["torch"], workers.info["jax"]
            med = round_robin({name: functools.partial(workers.epoch, name)
                               for name in tinfo["variants"] + jinfo["variants"]}, epochs)
        finally:
            workers.close()
        report.data, report.n_train = jinfo["data"], jinfo["n_train"]
        report.machine.update(jax_devices=jinfo["devices"], torch_threads=tinfo["torch_threads"],
                              matmul_gflops=jinfo["matmul_gflops"])
        report.versions = {"jax": jinfo["jax"], "torch": tinfo["torch"]}
        entry = _entry(spec, bs, med, jinfo, include_loader)
        report.batches.append(entry)
        log(report.batch_text(entry))
    return report
