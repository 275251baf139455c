"""The float32 verdict over a grid: every preset x batch sizes x seeds, one JSON line per compared tensor.

Produced the figures of docs/porting.md ("float32 verdicts"). Threads are set from the environment
before the frameworks start, e.g. one thread on each side:

    OMP_NUM_THREADS=1 XLA_FLAGS="--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1" \
        python docs/measure/float32_grid.py --threads 1 --out grid-1.jsonl
    python docs/measure/float32_grid.py --threads 2 --out grid-2.jsonl
    python docs/measure/float32_grid.py --summarize grid-1.jsonl grid-2.jsonl
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time

import numpy as np


def run(args) -> None:
    import torch

    torch.set_num_threads(args.threads)
    from ae_core import PRESETS, epoch_batches, get_spec, mnist, model_inputs
    from ae_core.optim import OptimizerConfig
    from ae_parity import parity

    kinks = []
    follow = parity.follow_kinks

    @contextlib.contextmanager
    def recording(sides):  # keep every reference's kink statistics
        with follow(sides) as k:
            yield k
        kinks.append(k)

    parity.follow_kinks = recording
    mnist.ensure(args.data_dir, "sample")
    train = mnist.load("train", "sample", args.data_dir)
    presets = args.presets.split(",") if args.presets else sorted(PRESETS)
    with open(args.out, "a") as f:
        for preset in presets:
            spec = get_spec(preset)
            for bs in map(int, args.batch_sizes.split(",")):
                for seed in range(args.seeds):
                    t = time.time()
                    kinks.clear()
                    idx = epoch_batches(seed=seed, epoch=0, n=len(train.images), batch_size=bs)[0]
                    x = model_inputs(spec, train.images[idx], "float64")
                    rows = parity.forward_parity(spec, "float32", x, seed=seed)
                    rows += parity.step_parity(spec, "float32", x, OptimizerConfig("adam", lr=1e-3), seed=seed)
                    for r in rows:
                        f.write(json.dumps({"preset": preset, "batch": bs, "seed": seed, "threads": args.threads,
                                            "quantity": r.quantity, "group": r.group, "jax_err": r.jax_err,
                                            "torch_err": r.torch_err, "ok": r.ok,
                                            "elementwise": r.elementwise_ok is not None}) + "\n")
                    f.write(json.dumps({"preset": preset, "batch": bs, "seed": seed, "threads": args.threads,
                                        "kinks": [[k.near, k.flipped, k.max_ulps] for k in kinks]}) + "\n")
                    f.flush()
                    bad = [r.quantity for r in rows if not r.ok]
                    print(f"{preset} b{bs} s{seed} t{args.threads}: {len(rows)} rows, {len(bad)} NO {bad} "
                          f"({time.time() - t:.1f} s)", flush=True)


def summarize(paths: list[str]) -> None:
    from ae_parity.verdict import REFERENCE_FLOOR_ULPS, REFERENCE_K

    rows = [json.loads(line) for p in paths for line in open(p)]
    kinks = [r for r in rows if "kinks" in r]
    rows = [r for r in rows if "kinks" not in r]
    eps = float(np.finfo(np.float32).eps)
    configs = {(r["preset"], r["batch"], r["seed"], r["threads"]) for r in rows}
    # the verdict at today's K (the "ok" stored was computed at the K of the run; elementwise rows keep it)
    ok = [r["ok"] if r["elementwise"] else r["jax_err"] <= REFERENCE_K * r["torch_err"] + REFERENCE_FLOOR_ULPS * eps
          for r in rows]
    print(f"{len(rows)} rows from {len(configs)} runs (K = {REFERENCE_K:g}, floor {REFERENCE_FLOOR_ULPS} ulps); "
          f"failing rows: {ok.count(False)}")
    for group in ("forward", "loss", "grad", "step"):
        g = [r for r in rows if r["group"] == group]
        ratios = np.array([r["jax_err"] / r["torch_err"] for r in g if r["torch_err"] >= 2 * eps and not r["elementwise"]])
        per_element = sum(r["elementwise"] for r in g)
        extra = max((r["jax_err"] - REFERENCE_K * r["torch_err"]) / eps for r in g if not r["elementwise"]) if g else 0
        print(f"{group:<8} {len(g):>5} rows: ratio median {np.median(ratios):.2f}, p99 {np.quantile(ratios, .99):.2f}, "
              f"max {ratios.max():.2f} (rows with torch err >= 2 ulps); most beyond {REFERENCE_K:g}x torch: {extra:.2f} ulps"
              + (f"; {per_element} Adam rows judged per element" if per_element else ""))
    flips = [k for r in kinks for k in r["kinks"]]
    print(f"ReLU kinks: {len(flips)} references; near the kink (<= 64 ulps) {sum(k[0] for k in flips)}, "
          f"flipped {sum(k[1] for k in flips)} in {sum(1 for k in flips if k[1])} references; "
          f"largest |float32 - float64| ReLU input {max((k[2] for k in flips), default=0):.1f} ulps of its scale")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--presets", default="")
    p.add_argument("--batch-sizes", default="16,32,64,128,256")
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--data-dir", default="data")
    p.add_argument("--out", default="grid.jsonl")
    p.add_argument("--summarize", nargs="*")
    a = p.parse_args()
    summarize(a.summarize) if a.summarize is not None else run(a)
    sys.exit(0)
