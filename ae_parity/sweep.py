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
import time
from pathlib import Path

import numpy as np

from ae_core import ModelSpec, get_spec
from ae_core.files import atomic_write
from ae_core.training import TrainConfig

from .rundir import RunDir
from .runner import Data

SUMMARY = "summary.json"


def sweep_run(spec: str | ModelSpec, config: TrainConfig, members, out_dir, *, data: Data, batch_order: str = "own",
              devices=None, log=print) -> dict:
    """Train every member for ``config.epochs`` epochs; write per-member runs and ``summary.json``."""
    from ae_jax.sweep import SweepTrainer

    spec = get_spec(spec)
    out = Path(out_dir)
    trainer = SweepTrainer(spec, config, members, data.x_train, data.x_eval, batch_order=batch_order,
                           devices=devices)
    members = trainer.members
    runs = [{"name": m.name, "run": RunDir(out / m.name, "jax", spec, trainer.member_config(i), data.source,
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
        by_lr[f"{lr:g}"] = {"lr": lr, "models": len(group), "diverged": len(group) - len(finals),
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
