"""``ae-parity validate``: does the JAX port train as well as the torch original, over whole runs?

Every seed is trained in both frameworks from the same start: torch one seed at a time
(:func:`ae_parity.runner.train_run`, the project's torch trainer), JAX as ONE vmapped sweep over the
seeds (:func:`ae_parity.sweep.sweep_run`, batch order "own"): member ``s`` has seed ``s``'s initial
weights, batch order and noise, i.e. it is the same experiment as the torch run of seed ``s`` (their
checkpoints carry the same training config). The final eval losses are then compared pair by pair
(jax - torch per seed) with the paired TOST of :mod:`ae_parity.equivalence`.

    OUT/torch/<seedS-lrL>/   one torch run directory per seed (checkpoint.safetensors, metrics.json)
    OUT/jax/<seedS-lrL>/     one JAX run directory per seed, OUT/jax/summary.json (the sweep's)
    OUT/validate.json        per-seed losses, the test, margin, verdict, settings
    OUT/eval_curves.png      per-epoch eval loss of every run (default of --plot)
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from pathlib import Path

import numpy as np

from ae_core import ModelSpec, UsageError, get_spec
from ae_core.files import atomic_write
from ae_core.training import TrainConfig

from . import plots
from .equivalence import DEFAULT_ALPHA, Margin, Tost, format_tost, paired_tost
from .runner import Data, train_run
from .sweep import sweep_run

SUMMARY = "validate.json"
PLOT = "eval_curves.png"
VERDICTS = {True: "equivalent", False: "not shown equivalent"}


class DivergedError(RuntimeError):
    """A run whose loss went non-finite: there is no final loss to compare."""


def check_seeds(seeds) -> list[int]:
    """At least two distinct seeds: one pair has no variance, and the test needs one."""
    seeds = [int(s) for s in seeds]
    if len(set(seeds)) != len(seeds):
        raise UsageError(f"seeds repeat: {seeds}")
    if len(seeds) < 2:
        raise UsageError(f"--seeds {','.join(map(str, seeds))}: the paired equivalence test needs at least 2 seeds "
                         "(e.g. --seeds 0-7)")
    return seeds


def _members(seeds, lr: float):
    from ae_jax.sweep import grid

    return grid(seeds, [lr])


def _jax_side(spec, config: TrainConfig, seeds, out: Path, data: Data, lr: float, log) -> dict:
    """All seeds as one vmapped JAX sweep; {seed: per-epoch eval losses}."""
    t0 = time.perf_counter()
    summary = sweep_run(spec, config, _members(seeds, lr), out, data=data, batch_order="own", overwrite=True,
                        log=log)
    seconds = time.perf_counter() - t0
    curves = {}
    for row in summary["members"]:
        if row["status"] != "ok":
            at = row["diverged_at"]
            raise DivergedError(f"jax seed {row['seed']}: non-finite loss in epoch {at['epoch']}, step {at['step']}; "
                                "no final eval loss to compare")
        metrics = json.loads((Path(row["dir"]) / "metrics.json").read_text())
        curves[row["seed"]] = [e["eval_loss"] for e in metrics["epochs"]]
    return {"curves": curves, "dirs": {r["seed"]: r["dir"] for r in summary["members"]}, "time_s": seconds}


def _torch_side(spec, config: TrainConfig, seeds, out: Path, data: Data, log) -> dict:
    """One torch run per seed, each with the training config of the JAX member of that seed."""
    from ae_jax.sweep import member_config

    curves, dirs, t0 = {}, {}, time.perf_counter()
    for member in _members(seeds, config.optimizer.lr):
        path = out / member.name
        metrics = train_run("torch", spec, member_config(config, member, "own"), path, data=data, overwrite=True,
                            log=log)  # validate's own member folders, replaced as its sweep side replaces its own
        curves[member.seed], dirs[member.seed] = [e["eval_loss"] for e in metrics["epochs"]], str(path)
        log(f"torch seed {member.seed}: {config.epochs} epochs, eval loss {curves[member.seed][-1]:.6f}")
    return {"curves": curves, "dirs": dirs, "time_s": time.perf_counter() - t0}


def validate_run(spec: str | ModelSpec, config: TrainConfig, seeds, out_dir, *, data: Data, margin: Margin,
                 alpha: float = DEFAULT_ALPHA, plot=None, jax_lr: float | None = None, log=print) -> dict:
    """Train every seed in both frameworks, test the paired final eval losses; write and return the summary.

    ``config`` is shared (its seed is replaced by each run's); ``jax_lr`` trains the JAX side at another
    learning rate -- a planted difference, to check that the test sees one (tests only)."""
    from .runner import NonFiniteLossError, optional

    spec, seeds, out = get_spec(spec), check_seeds(seeds), Path(out_dir)
    lr = config.optimizer.lr
    jax_side = _jax_side(spec, config, seeds, out / "jax", data, lr if jax_lr is None else jax_lr, log)
    try:
        torch_side = _torch_side(spec, config, seeds, out / "torch", data, log)
    except NonFiniteLossError as e:
        raise DivergedError(f"torch: {e}") from None
    torch_final = np.array([torch_side["curves"][s][-1] for s in seeds])
    jax_final = np.array([jax_side["curves"][s][-1] for s in seeds])
    reference = float(torch_final.mean())
    test = paired_tost(jax_final - torch_final, margin.absolute(reference), alpha)
    plot = Path(plot) if plot is not None else out / PLOT
    opt = config.optimizer
    title = (f"{spec.name}, {config.dtype}, {opt.name} lr {lr:g}, batch {config.batch_size}: eval loss of "
             f"{len(seeds)} seeds per framework")
    if optional("matplotlib", "the eval-curves picture", log):
        plots.eval_curves(plot, torch_side["curves"], jax_side["curves"], title)
    else:
        plot = None
    summary = _summary(spec, config, seeds, data, torch_side, jax_side, torch_final, jax_final, margin, test, plot)
    if jax_lr is not None:
        summary["jax_lr"] = jax_lr
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / SUMMARY, json.dumps(_finite_or_text(summary), indent=1).encode())
    return summary


def _stats(values: np.ndarray) -> dict:
    return {"mean": float(values.mean()), "std": float(values.std(ddof=1))}


def _summary(spec, config, seeds, data, torch_side, jax_side, torch_final, jax_final, margin, test, plot) -> dict:
    diff = jax_final - torch_final
    reference = float(torch_final.mean())
    per_seed = [{"seed": s, "torch": float(t), "jax": float(j), "difference": float(j - t),
                 "relative": float((j - t) / t), "torch_dir": torch_side["dirs"][s], "jax_dir": jax_side["dirs"][s]}
                for s, t, j in zip(seeds, torch_final, jax_final)]
    settings = json.loads(config.to_json())
    settings.pop("seed")  # each run has its own
    return {"preset": spec.name, "seeds": seeds, "config": settings, "data": data.source,
            "train_examples": len(data.x_train), "eval_examples": len(data.x_eval),
            "what": "final eval loss (mean loss over the test split after the last epoch), per seed",
            "per_seed": per_seed, "torch": _stats(torch_final), "jax": _stats(jax_final),
            "difference": _stats(diff),
            "margin": {"value": test.margin, "given": f"{margin.value * 100:g}%" if margin.relative else margin.value,
                       "relative": margin.relative, "how": margin.describe(reference)},
            "test": {"name": "paired TOST (two one-sided t-tests) on jax - torch", **test.to_dict()},
            "verdict": VERDICTS[test.equivalent],
            "curves": {"torch": {str(s): torch_side["curves"][s] for s in seeds},
                       "jax": {str(s): jax_side["curves"][s] for s in seeds}},
            "time_s": {"torch": torch_side["time_s"], "jax": jax_side["time_s"]}, "plot": None if plot is None else str(plot)}


def _finite_or_text(tree):
    """JSON has no infinities (a zero-variance test's t statistics): write them as "inf" / "-inf"."""
    if isinstance(tree, dict):
        return {k: _finite_or_text(v) for k, v in tree.items()}
    if isinstance(tree, list):
        return [_finite_or_text(v) for v in tree]
    if isinstance(tree, float) and math.isinf(tree):
        return "inf" if tree > 0 else "-inf"
    return tree


def format_report(summary: dict) -> str:
    """The side-by-side table of final eval losses, the test and the verdict."""
    c, opt = summary["config"], summary["config"]["optimizer"]
    lines = [f"validate {summary['preset']}: {len(summary['seeds'])} seeds x {c['epochs']} epochs in torch (one "
             f"seed at a time) and jax (one vmapped sweep); {c['dtype']}, {opt['name']} lr {opt['lr']:g}, batch "
             f"{c['batch_size']}, {c['loss']}; MNIST {summary['data']}: {summary['train_examples']:,} train / "
             f"{summary['eval_examples']:,} eval digits"]
    if "jax_lr" in summary:
        lines.append(f"  (planted difference: jax trained at lr {summary['jax_lr']:g})")
    lines += [f"final eval loss   {'torch':>11} {'jax':>11} {'jax - torch':>12} {'relative':>10}"]
    for r in summary["per_seed"]:
        lines.append(f"  seed {r['seed']:<10} {r['torch']:>11.6f} {r['jax']:>11.6f} {r['difference']:>+12.3e} "
                     f"{r['relative']:>+10.2e}")
    t, j, d = summary["torch"], summary["jax"], summary["difference"]
    lines.append(f"  {'mean':<15} {t['mean']:>11.6f} {j['mean']:>11.6f} {d['mean']:>+12.3e} "
                 f"{d['mean'] / t['mean']:>+10.2e}")
    lines.append(f"  {'std (ddof 1)':<15} {t['std']:>11.6f} {j['std']:>11.6f} {d['std']:>12.3e} "
                 f"{d['std'] / t['mean']:>10.2e}")
    lines += format_tost(_tost_from(summary["test"]), summary["margin"]["how"])
    lines.append(f"time: torch {summary['time_s']['torch']:.1f} s ({len(summary['seeds'])} runs), jax "
                 f"{summary['time_s']['jax']:.1f} s (one sweep, compilation included)")
    return "\n".join(lines)


def _tost_from(record: dict) -> Tost:
    fields = {f.name for f in dataclasses.fields(Tost)}
    return Tost(**{k: v for k, v in record.items() if k in fields})
