"""``ae-parity bench``: training speed, side by side in one process, same model, same batches.

Variants (each trains its own copy of the same initial model along the same batch sequence):
- ``tutorial DataLoader``: torchvision MNIST + ``ToTensor`` + ``DataLoader`` + ``torch.optim.Adam``
  (torch's default implementation) -- the tutorials' loop;
- ``ae_torch eager (<impl>)``: the dataset as one tensor, indexed per batch; each torch optimizer
  implementation (single-tensor, foreach, fused) is measured and the fastest is the reference;
- ``ae_jax jit step``: one compiled train step per batch, called from Python;
- ``ae_jax scan epoch``: the whole epoch as one compiled ``lax.scan``.

Each framework lives in its own worker process, as in real use: with a torch trainer active in the
same process on this 2-core machine, the JAX epoch measured 107-110 ms against 62-64 ms alone (not
thread affinity; ``OMP_WAIT_POLICY=PASSIVE`` helped partly, at the price of a 4x slower torch). One
bench run drives both workers; epochs are timed round-robin (variant A epoch k, variant B epoch k, ...;
only one variant computes at a time) so that load on a shared machine hits every variant alike. The
median epoch is reported, after one warm-up epoch (which includes JAX compilation). Compile time is
measured separately, ahead of time (``lower().compile()``).
The FLOP floor is the model's matmul FLOPs per epoch divided by the machine's measured float32 matmul
rate (large square matmuls), i.e. the time the epoch would take if every GEMM ran at peak.
"""

from __future__ import annotations

import functools
import json
import platform
import time
from dataclasses import asdict, dataclass

import numpy as np

from ae_core import get_spec, mnist
from ae_core.optim import OptimizerConfig
from ae_core.spec import Linear
from ae_core.training import TrainConfig

from .runner import load_data


@dataclass
class Result:
    variant: str
    batch_size: int
    steps: int
    ms_per_epoch: float
    samples_per_s: float
    vs_torch_eager: float = float("nan")  # >1: faster than the best ae_torch eager
    compile_s: float | None = None


def matmul_flops_per_example(spec) -> int:
    """Forward + backward matmul/convolution FLOPs per example: 2 FLOPs per multiply-accumulate of the
    forward, the weight gradient and the input gradient of every layer with weights, except the first
    layer's input gradient (nothing needs it)."""
    macs = [layer.macs(shape) for layer, shape in spec.layer_input_shapes() if hasattr(layer, "macs")]
    return 2 * (3 * sum(macs) - macs[0])


def measured_matmul_gflops(n: int = 2048, repeats: int = 5) -> float:
    """float32 GFLOP/s of a large square matmul under XLA (the machine's practical peak)."""
    import jax
    import jax.numpy as jnp

    a = jnp.asarray(np.random.default_rng(0).standard_normal((n, n)), jnp.float32)
    f = jax.jit(lambda a: a @ a)
    f(a).block_until_ready()
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        f(a).block_until_ready()
        best = min(best, time.perf_counter() - t)
    return 2 * n ** 3 / best / 1e9


def gemm_only_ms(spec, batch_size: int, steps: int, repeats: int = 5) -> float:
    """Time of an epoch that does nothing but the model's matmuls at their real shapes (forward, weight
    gradient, input gradient), as one compiled scan -- what XLA's GEMMs alone cost on this machine.
    None for models with convolutions (their GEMMs are not plain matmuls)."""
    if any(layer.kind in ("conv2d", "conv_transpose2d") for layer in (*spec.encoder, *spec.decoder)):
        return None
    import jax
    import jax.numpy as jnp

    linears = [l for l in (*spec.encoder, *spec.decoder) if isinstance(l, Linear)]
    rng = np.random.default_rng(0)
    ws = [jnp.asarray(rng.standard_normal((l.in_features, l.out_features)) * 0.01, jnp.float32) for l in linears]
    xs = [jnp.asarray(rng.standard_normal((batch_size, l.in_features)), jnp.float32) for l in linears]
    dys = [jnp.asarray(rng.standard_normal((batch_size, l.out_features)), jnp.float32) for l in linears]

    @jax.jit
    def epoch(ws, xs, dys):
        def body(acc, _):
            total = acc
            for i, (w, x, dy) in enumerate(zip(ws, xs, dys)):
                x = x + total * 1e-30  # a data dependency so no iteration is hoisted or dropped
                total = total + jnp.sum(x @ w) + jnp.sum(x.T @ dy)
                if i:  # the first layer's input gradient is never needed
                    total = total + jnp.sum(dy @ w.T)
            return total, None

        return jax.lax.scan(body, jnp.float32(0), None, length=steps)[0]

    epoch(ws, xs, dys).block_until_ready()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        epoch(ws, xs, dys).block_until_ready()
        times.append(time.perf_counter() - t)
    return 1e3 * float(np.median(times))


def _round_robin(epoch_seconds: dict, epochs: int) -> dict[str, float]:
    """Median seconds per epoch of each variant, epochs round-robin (variant A epoch k, variant B epoch k,
    ...) after one untimed warm-up epoch (which compiles); ``epoch_seconds[name](epoch)`` runs one epoch
    and returns its seconds."""
    times = {name: [] for name in epoch_seconds}
    for epoch in range(epochs + 1):
        for name, run in epoch_seconds.items():
            seconds = run(epoch)
            if epoch:
                times[name].append(seconds)
    return {name: float(np.median(ts)) for name, ts in times.items()}


def _wall(fn):
    """``fn(epoch)`` (which returns once the epoch's results are on the host) as a function returning its
    wall-clock seconds."""

    def run(epoch):
        t = time.perf_counter()
        fn(epoch)
        return time.perf_counter() - t

    return run


def _compile_seconds(trainer) -> float:
    """Ahead-of-time compile time of the whole-epoch program of an ``ae_jax`` ``Trainer`` or ``SweepTrainer``
    (whose epoch also takes the per-model learning rates)."""
    lowered = trainer.lower()
    t = time.perf_counter()
    lowered.compile()
    return time.perf_counter() - t


TORCH_VARIANTS = ("tutorial DataLoader", "ae_torch eager (single)", "ae_torch eager (foreach)",
                  "ae_torch eager (fused)")
JAX_VARIANTS = ("ae_jax jit step", "ae_jax scan epoch")


def _make_variants(framework: str, preset: str, config: TrainConfig, source: str, data_dir, limit, include_loader):
    spec = get_spec(preset)
    data = load_data(spec, source, data_dir, "float32", limit=limit)
    variants = {}
    if framework == "torch":
        import torchvision.transforms as T

        from ae_torch.data import mnist_dataset
        from ae_torch.train import Trainer

        if include_loader:
            if spec.input not in ("mnist", "mnist_image"):
                raise ValueError(f"the tutorial DataLoader variant reads images; {spec.name} eats {spec.input} "
                                 f"(use --no-loader)")
            dataset = mnist_dataset("train", source, data_dir, transform=T.ToTensor())  # (1, 28, 28)
            dataset.data, dataset.targets = dataset.data[: len(data.x_train)], dataset.targets[: len(data.x_train)]
            variants["tutorial DataLoader"] = (Trainer(spec, config, dataset=dataset), {})
        for impl in ("single", "foreach", "fused"):
            variants[f"ae_torch eager ({impl})"] = (Trainer(spec, config, data.x_train, impl=impl), {})
    else:
        import jax

        from ae_jax.train import Trainer

        jax.config.update("jax_default_matmul_precision", "highest")
        variants["ae_jax jit step"] = (Trainer(spec, config, data.x_train), {"mode": "step"})
        variants["ae_jax scan epoch"] = (Trainer(spec, config, data.x_train), {"mode": "scan"})
    return spec, data, variants


def _worker(conn, framework: str, preset: str, config: TrainConfig, source: str, data_dir, limit, include_loader):
    """A framework's variants in their own process; answers ("epoch", name, k) with seconds."""
    try:
        spec, data, variants = _make_variants(framework, preset, config, source, data_dir, limit, include_loader)
        info = {"variants": list(variants), "n_train": len(data.x_train), "data": data.source}
        if framework == "jax":
            import jax

            info.update(compile_s=_compile_seconds(variants["ae_jax scan epoch"][0]),
                        gemm_only_ms=gemm_only_ms(spec, config.batch_size, len(data.x_train) // config.batch_size),
                        matmul_gflops=measured_matmul_gflops(), jax=jax.__version__,
                        devices=[str(d) for d in jax.devices()])
        else:
            import torch

            info.update(torch=torch.__version__, torch_threads=torch.get_num_threads())
        conn.send(("ready", info))
        while True:
            msg = conn.recv()
            if msg[0] == "stop":
                return
            _, name, epoch = msg
            trainer, kwargs = variants[name]
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
            proc = ctx.Process(target=_worker, args=(child, framework, preset, config, source, data_dir, limit,
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


def run_bench(preset: str = "mlp9", batch_sizes=(32, 256), epochs: int = 5, source: str = "auto",
              data_dir=None, include_loader: bool = True, limit: int | None = None, log=print) -> dict:
    spec = get_spec(preset)
    mnist.ensure(data_dir, source)  # fetch/write the files once, before the workers read them
    report = {"preset": spec.name, "epochs_timed": epochs, "batches": [],
              "machine": {"platform": platform.platform(), "processor": platform.processor()}}
    for bs in batch_sizes:
        config = TrainConfig(epochs=epochs + 1, batch_size=bs, optimizer=OptimizerConfig("adam"), dtype="float32")
        workers = _Workers(preset, config, source, data_dir, limit, include_loader)
        try:
            tinfo, jinfo = workers.info["torch"], workers.info["jax"]
            med = _round_robin({name: functools.partial(workers.epoch, name)
                                for name in tinfo["variants"] + jinfo["variants"]}, epochs)
        finally:
            workers.close()
        report.update(data=jinfo["data"], n_train=jinfo["n_train"])
        report["machine"].update(jax_devices=jinfo["devices"], torch_threads=tinfo["torch_threads"],
                                 matmul_gflops=jinfo["matmul_gflops"])
        report["versions"] = {"jax": jinfo["jax"], "torch": tinfo["torch"]}
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
        report["batches"].append(entry)
        log(format_batch(entry))
    return report


def format_batch(entry: dict) -> str:
    lines = [f"\nbatch {entry['batch_size']} ({entry['steps']} steps/epoch)",
             f"{'variant':<28} {'ms/epoch':>9} {'samples/s':>11} {'vs best ae_torch eager':>23} {'compile':>8}"]
    for r in entry["results"]:
        comp = f"{r['compile_s']:.2f}s" if r["compile_s"] is not None else ""
        lines.append(f"{r['variant']:<28} {r['ms_per_epoch']:>9.1f} {r['samples_per_s']:>11,.0f} "
                     f"{r['vs_torch_eager']:>22.2f}x {comp:>8}")
    lines.append(f"FLOP floor: {entry['flops_per_epoch'] / 1e9:.2f} GFLOP/epoch at the measured matmul rate = "
                 f"{entry['floor_ms']:.1f} ms; scan epoch = {entry['scan_vs_floor']:.2f}x the floor"
                 + (f"; the same GEMMs alone take {entry['gemm_only_ms']:.1f} ms "
                    f"(scan epoch = {entry['scan_vs_gemm_only']:.2f}x that)" if entry["gemm_only_ms"] else "")
                 + (f"; {entry['scan_vs_tutorial']:.1f}x faster than the tutorial loop" if "scan_vs_tutorial" in entry
                    else ""))
    return "\n".join(lines)


def markdown(report: dict) -> str:
    """The report as markdown tables (for docs/benchmarks.md)."""
    m = report["machine"]
    out = [f"preset `{report['preset']}`, MNIST {report['data']} ({report['n_train']:,} training examples), float32, "
           f"Adam, median of {report['epochs_timed']} epochs after a warm-up epoch, each framework in its own worker "
           f"process, epochs round-robin; {m['jax_devices']}, torch threads "
           f"{m['torch_threads']}, measured matmul rate {m['matmul_gflops']:.0f} GFLOP/s; "
           f"jax {report['versions']['jax']}, torch {report['versions']['torch']}", ""]
    for entry in report["batches"]:
        gemm = (f"; the model's GEMMs alone, at their shapes: {entry['gemm_only_ms']:.1f} ms, scan epoch = "
                f"{entry['scan_vs_gemm_only']:.2f}x that" if entry["gemm_only_ms"] else "")
        out += [f"**batch {entry['batch_size']}** ({entry['steps']} steps/epoch; FLOP floor {entry['floor_ms']:.1f} ms, "
                f"scan epoch = {entry['scan_vs_floor']:.2f}x floor{gemm})", "",
                "| variant | ms/epoch | samples/s | vs best ae_torch eager | compile |", "|---|---:|---:|---:|---:|"]
        for r in entry["results"]:
            comp = f"{r['compile_s']:.2f} s" if r["compile_s"] is not None else ""
            out.append(f"| {r['variant']} | {r['ms_per_epoch']:.1f} | {r['samples_per_s']:,.0f} | "
                       f"{r['vs_torch_eager']:.2f}x | {comp} |")
        out.append("")
    return "\n".join(out)


def save(report: dict, path) -> None:
    with open(path, "w") as f:
        json.dump(report, f, indent=1)


# ------------------------------------------------------------------ JAX alone, and sweeps ----
def sized(x: np.ndarray, size: int | None) -> np.ndarray:
    """``x`` with ``size`` rows: the digits repeated (or cut) -- MNIST-shaped data of any size, e.g. the
    full 60,000 x 784 for timings on a machine that holds only the offline sample."""
    return x if size is None else np.resize(x, (size, *x.shape[1:]))


def _machine() -> dict:
    import jax

    return {"platform": platform.platform(), "jax": jax.__version__, "devices": [str(d) for d in jax.devices()],
            "device_kind": jax.devices()[0].device_kind}


def run_jax_bench(preset: str = "mlp9", batch_sizes=(32, 256), epochs: int = 5, source: str = "auto",
                  data_dir=None, limit: int | None = None, size: int | None = None, log=print) -> dict:
    """ae_jax alone, in this process: the scanned epoch at matmul precision "highest" and "default"
    (TF32 on GPUs: what it buys in speed) and the jitted step, with ahead-of-time compile times. For
    accelerators, where the torch reference of ``run_bench`` is not what is being measured."""
    import jax

    from ae_jax.train import Trainer

    spec = get_spec(preset)
    data = load_data(spec, source, data_dir, "float32", limit=limit)
    x = sized(data.x_train, size)
    report = {"kind": "jax", "preset": spec.name, "n_train": len(x), "data": data.source, "epochs_timed": epochs,
              "machine": _machine(), "batches": []}
    for bs in batch_sizes:
        config = TrainConfig(epochs=epochs + 1, batch_size=bs, optimizer=OptimizerConfig("adam"), dtype="float32")
        trainers = {"scan epoch (highest)": (Trainer(spec, config, x, precision="highest", mode="scan"), "scan"),
                    "scan epoch (default)": (Trainer(spec, config, x, precision="default", mode="scan"), "scan"),
                    "jit step (highest)": (Trainer(spec, config, x, precision="highest", mode="step"), "step")}
        with jax.default_matmul_precision("highest"):
            compile_s = _compile_seconds(trainers["scan epoch (highest)"][0])
        med = _round_robin({name: _wall(functools.partial(tr.train_epoch, mode=mode))
                            for name, (tr, mode) in trainers.items()}, epochs)
        steps = len(x) // bs
        entry = {"batch_size": bs, "steps": steps, "compile_s": compile_s,
                 "results": [{"variant": name, "ms_per_epoch": 1e3 * s, "samples_per_s": steps * bs / s}
                             for name, s in med.items()]}
        report["batches"].append(entry)
        log(f"batch {bs} ({steps} steps/epoch, {len(x):,} examples): "
            + ", ".join(f"{r['variant']} {r['ms_per_epoch']:.1f} ms" for r in entry["results"])
            + f"; compile {compile_s:.2f} s")
    return report


def run_sweep_bench(preset: str = "mlp9", models: int = 8, batch_sizes=(32, 256), epochs: int = 3,
                    source: str = "auto", data_dir=None, limit: int | None = None, size: int | None = None,
                    run_epochs: int = 10, log=print) -> dict:
    """A sweep of ``models`` models (seeds 0..M-1) against the same models trained one after another
    (M solo scanned trainers), same batches, epochs round-robin; throughput in model-samples/s.
    Compile times are measured ahead of time; "end to end" adds them to ``run_epochs`` epochs (M solo
    programs to compile sequentially, one for the sweep)."""
    import jax

    from ae_jax.sweep import SweepTrainer, grid
    from ae_jax.train import Trainer

    spec = get_spec(preset)
    data = load_data(spec, source, data_dir, "float32", limit=limit)
    x = sized(data.x_train, size)
    report = {"kind": "sweep", "preset": spec.name, "models": models, "n_train": len(x), "data": data.source,
              "epochs_timed": epochs, "run_epochs": run_epochs, "machine": _machine(), "batches": []}
    members = grid(range(models), [1e-3])
    rate = measured_matmul_gflops()
    report["machine"]["matmul_gflops"] = rate
    with jax.default_matmul_precision("highest"):  # the solo runs, the sweeps and the AOT compiles alike
        for bs in batch_sizes:
            config = TrainConfig(epochs=epochs + 1, batch_size=bs, optimizer=OptimizerConfig("adam"), dtype="float32")
            solos = [Trainer(spec, member_cfg, x, mode="scan") for member_cfg in
                     (TrainConfig(**{**vars(config), "seed": m.seed}) for m in members)]
            sweeps = {order: SweepTrainer(spec, config, members, x, batch_order=order) for order in ("own", "shared")}
            solo_compile, sweep_compile = _compile_seconds(solos[0]), _compile_seconds(sweeps["own"])
            sequential = _wall(lambda e, solos=solos: [s.train_epoch(e) for s in solos])
            med = _round_robin({f"{models} sequential runs": sequential,
                                "sweep (own batch orders)": _wall(sweeps["own"].train_epoch),
                                "sweep (shared batch order)": _wall(sweeps["shared"].train_epoch)}, epochs)
            steps = len(x) // bs
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
            entry = {"batch_size": bs, "steps": steps, "solo_compile_s": solo_compile, "sweep_compile_s": sweep_compile,
                     "results": results, "flop_floor_ms": floor_ms, "max_speedup": 1e3 * seq / floor_ms}
            report["batches"].append(entry)
            log(format_sweep_batch(entry, report))
    return report


def format_sweep_batch(entry: dict, report: dict) -> str:
    lines = [f"\nbatch {entry['batch_size']} ({entry['steps']} steps/epoch, {report['models']} models; compile: "
             f"solo {entry['solo_compile_s']:.2f} s, sweep {entry['sweep_compile_s']:.2f} s)",
             f"{'variant':<28} {'ms/epoch':>9} {'model-samples/s':>16} {'vs sequential':>14} "
             f"{'end to end, ' + str(report['run_epochs']) + ' epochs':>24}"]
    for r in entry["results"]:
        lines.append(f"{r['variant']:<28} {r['ms_per_epoch_all_models']:>9.1f} {r['model_samples_per_s']:>16,.0f} "
                     f"{r['vs_sequential']:>13.2f}x {r['end_to_end_s']:>15.2f} s ({r['end_to_end_vs_sequential']:.2f}x)")
    lines.append(f"FLOP floor of {report['models']} models' epoch: {entry['flop_floor_ms']:.1f} ms at the measured matmul "
                 f"rate ({report['machine']['matmul_gflops']:.0f} GFLOP/s): no sweep can beat the sequential runs by "
                 f"more than {entry['max_speedup']:.2f}x here")
    return "\n".join(lines)


def markdown_jax(report: dict) -> str:
    m = report["machine"]
    out = [f"preset `{report['preset']}`, {report['n_train']:,} MNIST-shaped examples ({report['data']} digits"
           f"{', repeated' if report['n_train'] > 5000 else ''}), float32, Adam, median of {report['epochs_timed']} "
           f"epochs after a warm-up; {m['device_kind']} ({m['devices'][0]}), jax {m['jax']}", ""]
    if report["kind"] == "jax":
        out += ["| batch | variant | ms/epoch | samples/s | compile (scan, AOT) |", "|---:|---|---:|---:|---:|"]
        for e in report["batches"]:
            for i, r in enumerate(e["results"]):
                compile_s = f"{e['compile_s']:.2f} s" if i == 0 else ""
                out.append(f"| {e['batch_size']} | {r['variant']} | {r['ms_per_epoch']:.1f} | "
                           f"{r['samples_per_s']:,.0f} | {compile_s} |")
        return "\n".join(out)
    out += [f"| batch | variant | ms/epoch ({report['models']} models) | model-samples/s | vs sequential | "
            f"end to end, {report['run_epochs']} epochs (compile included) |", "|---:|---|---:|---:|---:|---:|"]
    for e in report["batches"]:
        for r in e["results"]:
            out.append(f"| {e['batch_size']} | {r['variant']} | {r['ms_per_epoch_all_models']:.1f} | "
                       f"{r['model_samples_per_s']:,.0f} | {r['vs_sequential']:.2f}x | {r['end_to_end_s']:.2f} s "
                       f"({r['end_to_end_vs_sequential']:.2f}x) |")
        out.append(f"| {e['batch_size']} | compile; FLOP floor of the {report['models']} models' epoch | solo "
                   f"{e['solo_compile_s']:.2f} s, sweep {e['sweep_compile_s']:.2f} s | floor {e['flop_floor_ms']:.1f} ms"
                   f" | at most {e['max_speedup']:.2f}x possible | |")
    return "\n".join(out)


def command(args) -> int:
    """``ae-parity bench`` (temporary: the bench package's own ``command`` replaces this one)."""
    common = dict(source=args.data, data_dir=args.data_dir, limit=args.limit)
    if args.sweep:
        report = run_sweep_bench(args.preset, args.sweep, args.batch_sizes, args.epochs, size=args.size, **common)
    elif args.jax_only:
        report = run_jax_bench(args.preset, args.batch_sizes, args.epochs, size=args.size, **common)
    elif args.size is not None:
        raise ValueError("--size is for --jax-only and --sweep (the side-by-side bench reads the files)")
    else:
        report = run_bench(args.preset, args.batch_sizes, args.epochs, include_loader=not args.no_loader, **common)
    if args.json:
        save(report, args.json)
    if args.markdown:
        print("\n" + (markdown(report) if "kind" not in report else markdown_jax(report)))
    return 0
