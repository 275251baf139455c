"""``ae-parity sweep``: many (seed, learning rate) models trained at once (``ae_jax.sweep``), one run
directory per model and a summary.

    OUT/summary.json                      every member's final losses and status; the best configuration
    OUT/<seedS-lrL>/checkpoint.safetensors the same files as ``ae-parity train`` writes, so any member can
    OUT/<seedS-lrL>/metrics.json           be resumed alone (``ae-parity train --resume``) in either framework

A member whose loss goes non-finite (a learning rate too high) is marked diverged and keeps its last
good checkpoint; the others train on (vmapped models do not interact).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np

from ae_core import ModelSpec, UsageError, get_spec
from ae_core.files import atomic_write
from ae_core.training import TrainConfig

from .rundir import CHECKPOINT, LOCK, METRICS, RunDir, RunLock, check_out_dir, clear_run
from .runner import Data

SUMMARY = "summary.json"


def sweep_run(spec: str | ModelSpec, config: TrainConfig, members, out_dir, *, data: Data, batch_order: str = "own",
              devices=None, overwrite: bool = False, log=print) -> dict:
    """Train every member for ``config.epochs`` epochs; write per-member runs and ``summary.json``.

    Before anything is allocated, the memory the sweep needs is estimated and said, and a sweep that does
    not fit is refused (:func:`check_memory`). ``out_dir`` is refused when it holds a sweep (``overwrite``:
    replace its summary and member runs), and is locked while the sweep writes it (``RunLock``; a
    ``train --resume`` of one member takes the same lock, shared)."""
    spec, members = get_spec(spec), list(members)
    out = check_sweep_dir(out_dir, overwrite)
    check_memory(spec, config, len(members), data, batch_order, devices, log)
    with RunLock(out):
        if overwrite:  # the sweep there: its summary and member runs (no member is resumed now: the lock)
            (out / SUMMARY).unlink(missing_ok=True)
            for member in _member_runs(out):
                clear_run(member)
                (member / LOCK).unlink(missing_ok=True)
                if not any(member.iterdir()):
                    member.rmdir()
        return _sweep(spec, config, members, out, data, batch_order, devices, log)


def _member_runs(out: Path) -> list[Path]:
    return sorted({p.parent for name in (CHECKPOINT, METRICS) for p in out.glob(f"*/{name}")}) if out.is_dir() else []


def check_sweep_dir(out_dir, overwrite: bool) -> Path:
    """The sweep's folder, refused (UsageError, one line) when unusable, or holding a sweep (a summary, or
    member runs in its folders) unless ``overwrite``."""
    out = check_out_dir(out_dir, overwrite=True)
    held = [p for p in (out / SUMMARY, *(d / name for d in _member_runs(out)
                                         for name in (CHECKPOINT, METRICS))) if p.exists()]
    if held and not overwrite:
        raise UsageError(f"--out {out} already holds a sweep ({held[0].relative_to(out)}"
                         + (f" and {len(held) - 1} more" if len(held) > 1 else "")
                         + "): replace it with --overwrite, or write elsewhere")
    return out


def _sweep(spec, config, members, out: Path, data: Data, batch_order, devices, log) -> dict:
    from ae_jax.sweep import SweepTrainer

    trainer = SweepTrainer(spec, config, members, data.x_train, data.x_eval, batch_order=batch_order,
                           devices=devices)
    members = trainer.members
    runs = [{"name": m.name, "run": RunDir(out / m.name, "jax", spec, trainer.member_config(i), data.settings(),
                                           sweep={"init_seed": m.seed, "lr": m.lr, "batch_order": batch_order,
                                                  "models": len(members)}),
             "status": "ok", "diverged_at": None} for i, m in enumerate(members)]
    out.mkdir(parents=True, exist_ok=True)
    epoch_times = []
    for epoch in range(config.epochs):
        t0 = time.perf_counter()
        losses = trainer.train_epoch(epoch)  # (steps, models)
        seconds = time.perf_counter() - t0
        epoch_times.append(seconds)
        evals = trainer.evaluate()
        for i, run in enumerate(runs):
            if run["status"] != "ok":
                continue
            bad = np.flatnonzero(~np.isfinite(losses[:, i]))
            if bad.size or not np.isfinite(evals[i]):
                step = int(bad[0]) if bad.size else len(losses) - 1
                run.update(status="diverged", diverged_at={"epoch": epoch + 1, "step": step + 1})
                log(f"{run['name']}: non-finite loss in epoch {epoch + 1}, step {step + 1}; "
                    + ("its last good checkpoint is kept" if epoch else "no checkpoint"))
                continue
            run["run"].add_epoch(epoch + 1, losses[:, i], evals[i], seconds)
            # the folder appears with the first good epoch: a model diverged in epoch 1 gets none
            run["run"].write(epoch + 1, trainer.step, trainer.model_state(i), trainer.optimizer_state(i))
        finite = evals[np.isfinite(evals)]
        log(f"epoch {epoch + 1}/{config.epochs}: {len(members)} models in {seconds:.2f} s "
            f"({len(members) * len(losses) * config.batch_size / seconds:,.0f} model-samples/s); "
            + (f"best eval loss {finite.min():.5f}" if finite.size else "every model diverged"))
    summary = summarize(spec, config, batch_order, runs, epoch_times, trainer)
    atomic_write(out / SUMMARY, json.dumps(summary, indent=1).encode())
    return summary


def summarize(spec, config: TrainConfig, batch_order: str, runs, epoch_times, trainer) -> dict:
    from ae_jax.sweep import lr_text

    rows = []
    for run in runs:
        epochs, sweep = run["run"].epochs, run["run"].metrics["sweep"]
        last = epochs[-1] if epochs else None
        best = min(epochs, key=lambda e: e["eval_loss"]) if epochs else None
        rows.append({"name": run["name"], "seed": sweep["init_seed"], "lr": sweep["lr"], "status": run["status"],
                     "diverged_at": run["diverged_at"],
                     "epochs": len(epochs), "train_loss": last["train_loss"] if last else None,
                     "eval_loss": last["eval_loss"] if last else None,
                     "best_eval_loss": best["eval_loss"] if best else None, "best_epoch": best["epoch"] if best else None,
                     "dir": str(run["run"].path) if epochs else None})
    ok = [r for r in rows if r["status"] == "ok"]
    by_lr = {}
    for lr in dict.fromkeys(r["lr"] for r in rows):
        group = [r for r in rows if r["lr"] == lr]
        finals = [r["eval_loss"] for r in group if r["status"] == "ok"]
        by_lr[lr_text(lr)] = {"lr": lr, "models": len(group), "diverged": len(group) - len(finals),
                            "mean_eval_loss": float(np.mean(finals)) if finals else None,
                            "std_eval_loss": float(np.std(finals)) if finals else None}
    complete = [v for v in by_lr.values() if v["diverged"] == 0]
    steady = np.median(epoch_times[1:]) if len(epoch_times) > 1 else epoch_times[0]
    return {"preset": spec.name, "config": json.loads(config.to_json()), "batch_order": batch_order,
            "models": len(rows), "epochs": config.epochs,
            "devices": None if trainer.mesh is None else int(trainer.mesh.devices.size),
            "epoch_time_s": epoch_times,
            "model_samples_per_s": len(rows) * trainer.n // config.batch_size * config.batch_size / steady,
            "members": rows, "by_lr": by_lr,
            "best": min(ok, key=lambda r: r["eval_loss"])["name"] if ok else None,
            "best_lr": min(complete, key=lambda v: v["mean_eval_loss"])["lr"] if complete else None}


def format_summary(summary: dict) -> str:
    lines = [f"sweep {summary['preset']}: {summary['models']} models x {summary['epochs']} epochs "
             f"(batch order: {summary['batch_order']}), {summary['model_samples_per_s']:,.0f} model-samples/s",
             f"{'member':<22} {'train loss':>11} {'eval loss':>11} {'best eval':>11} {'(epoch)':>7}  status"]
    rank = sorted(summary["members"], key=lambda r: (r["status"] != "ok", r["eval_loss"] or np.inf))
    for r in rank:
        if r["epochs"]:
            lines.append(f"{r['name']:<22} {r['train_loss']:>11.6f} {r['eval_loss']:>11.6f} "
                         f"{r['best_eval_loss']:>11.6f} {r['best_epoch']:>7}  {r['status']}"
                         + (f" at epoch {r['diverged_at']['epoch']}, step {r['diverged_at']['step']}"
                            if r["diverged_at"] else ""))
        else:
            at = r["diverged_at"]
            lines.append(f"{r['name']:<22} {'-':>11} {'-':>11} {'-':>11} {'-':>7}  {r['status']} at epoch "
                         f"{at['epoch']}, step {at['step']} (no checkpoint)")
    if len(summary["by_lr"]) > 1 or any(v["models"] > 1 for v in summary["by_lr"].values()):
        lines.append("by learning rate (eval loss over seeds): " + "; ".join(
            f"lr {k}: " + (f"{v['mean_eval_loss']:.6f} +- {v['std_eval_loss']:.6f}" if v["mean_eval_loss"] is not None
                           else "all diverged") + (f" ({v['diverged']} diverged)" if v["diverged"] else "")
            for k, v in summary["by_lr"].items()))
    lines.append(f"best model: {summary['best']}" + (f"; best learning rate (mean over seeds): {summary['best_lr']:g}"
                                                    if summary["best_lr"] is not None else ""))
    return "\n".join(lines)


# ------------------------------------------------------------------------------ memory, before it is used ----
GB = 1e9


def memory_estimate(spec: ModelSpec, config: TrainConfig, models: int, n_train: int, n_eval: int,
                    batch_order: str = "own") -> dict:
    """What a sweep of ``models`` models allocates, in bytes, by part (before anything is built): per model
    its weights and buffers, optimizer slots, gradients, the activations of one step (kept for the backward
    pass, and their cotangents) and its convolutions' GEMM operands (:func:`conv_patches`), its epoch's
    batch indices and noise, and the host copies made while it is
    initialised and written; shared, the data. ``per_model`` and ``shared`` sum them."""
    b = np.dtype(config.dtype).itemsize
    params = sum(int(np.prod(s)) for s in spec.param_shapes().values())
    state = sum(int(np.prod(s)) for s in spec.state_shapes().values()) - params
    slots = len(config.optimizer.state_slots)
    graph = spec.to_graph()
    nodes = graph.methods["forward"].nodes
    activations = sum(int(np.prod(n.shape[1:])) for n in nodes if n.shape)  # per example
    patches = conv_patches(graph)  # per example; 0 where the convolutions are XLA's own
    noise = sum(int(np.prod(shape)) for _, shape, _ in spec.noise_shapes().values())  # per example
    inputs = n_train * (4 + noise * b)  # an epoch's batch indices (int32) and noise
    per_model = {"weights and buffers": (params + state) * b, "optimizer state": slots * params * b,
                 "gradients": params * b, "activations": 2 * config.batch_size * activations * b,
                 "conv patches": 2 * config.batch_size * patches * b,
                 "epoch inputs": inputs if batch_order == "own" else 0,
                 "host copies": (3 * (params + state) + slots * params) * b}
    pixels = int(np.prod(graph.input_shape))
    shared = {"data": (n_train + n_eval) * pixels * b, "epoch inputs": inputs if batch_order == "shared" else 0}
    return {"per_model": sum(per_model.values()), "shared": sum(shared.values()), "models": models,
            "total": models * sum(per_model.values()) + sum(shared.values()),
            "parts": {k: models * v for k, v in per_model.items()} | {f"{k} (shared)": v for k, v in shared.items() if v}}


def conv_patches(graph) -> int:
    """Numbers per example of the GEMM operands (im2col patches, ...) the convolutions' GEMM forms keep for
    the backward pass (``ae_jax.convforms``), where a sweep's "auto" form takes them (the CPU); else 0."""
    from ae_jax.convforms import ConvForm, gemm_numbers

    if not ConvForm("auto").uses_gemm():
        return 0
    nodes = graph.methods["forward"].nodes
    shapes = {n.name: n.shape for n in nodes} | {name: (1, *graph.input_shape) for name in
                                                 graph.methods["forward"].inputs}
    kinds = {"conv1d": "conv", "conv2d": "conv", "conv_transpose2d": "conv_transpose"}
    total = 0
    for n in nodes:
        layer = graph.modules.get(n.target) if n.op == "module" else None
        kind = kinds.get(getattr(layer, "kind", ""))
        if kind is None or not n.args or getattr(n.args[0], "name", None) not in shapes:
            continue
        total += gemm_numbers(kind, shapes[n.args[0].name][2:], n.shape[2:], layer.kernel, layer.strides,
                              layer.in_channels, layer.out_channels)
    return total


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text()
    except OSError:  # not Linux, or no cgroup v2
        return None


def _meminfo_available() -> int | None:
    """Linux's MemAvailable, capped by the cgroup's (a container's) memory limit; None if unknown."""
    out = [int(line.split()[1]) * 1024 for line in (_read("/proc/meminfo") or "").splitlines()
           if line.startswith("MemAvailable:")]
    limit, current = _read("/sys/fs/cgroup/memory.max"), _read("/sys/fs/cgroup/memory.current")
    if limit and current and limit.strip().isdigit() and current.strip().isdigit():  # "max": no limit
        out.append(int(limit) - int(current))
    if not out:
        try:
            out.append(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
        except (ValueError, OSError, AttributeError):
            return None
    return min(out)


def available_memory(devices=None) -> tuple[int | None, str]:
    """``(bytes, where)``: the memory a sweep can use -- the host's when JAX computes on the CPU, else what is
    free on the accelerators it uses (``bytes_limit - bytes_in_use`` of each)."""
    import jax

    from ae_jax import sharding

    used = list(sharding.data_mesh(devices).devices.flat) if devices is not None else jax.devices()[:1]
    if used[0].platform == "cpu":
        return _meminfo_available(), "host memory available"
    stats = [d.memory_stats() or {} for d in used]
    if not all("bytes_limit" in s for s in stats):
        return None, f"{used[0].platform} memory"
    free = sum(s["bytes_limit"] - s.get("bytes_in_use", 0) for s in stats)
    return free, f"free on {len(used)} {used[0].platform} device(s)"


def check_memory(spec: ModelSpec, config: TrainConfig, models: int, data: Data, batch_order: str, devices=None,
                 log=print) -> dict:
    """Estimate the sweep's memory and say it; refuse (UsageError, with the estimate and how many models
    fit) when it exceeds what is available."""
    est = memory_estimate(spec, config, models, len(data.x_train), 0 if data.x_eval is None else len(data.x_eval),
                          batch_order)
    free, where = available_memory(devices)
    line = f"{models} models of {spec.name} ({config.dtype}, batch {config.batch_size}) need about {est['total'] / GB:.3g} GB"
    if free is not None and est["total"] > free:
        fit = max(0, int((free - est["shared"]) // est["per_model"]))
        largest = max(est["parts"].items(), key=lambda kv: kv[1])
        raise UsageError(f"sweep: {line}, more than the {free / GB:.3g} GB {where} (the largest part: {largest[0]}, "
                         f"{largest[1] / GB:.3g} GB): at most {fit} such models fit; sweep fewer seeds or "
                         f"learning rates")
    log(f"sweep: {line}" + (f" of the {free / GB:.3g} GB {where}" if free is not None else ""))
    return est
