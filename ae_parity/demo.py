"""The demo: one preset trained in PyTorch and in JAX from the same start on the same batches.

Prints the forward/gradient parity summary, a side-by-side table per epoch (loss torch, loss jax,
difference, epoch time each), and writes three pictures, each with the two frameworks on the same axes and
their difference beside them: reconstructions (original / torch / jax / |torch - jax|), both loss curves on
one plot over their difference, and the test codes coloured by digit (3-D for ``tanh3``, else on the torch
codes' first two principal axes) beside their per-digit distance.

Each long step says what runs before it runs (a status line, a progress line per training epoch), so
the terminal is never silent for long without saying why.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from ae_core import epoch_batches, get_spec
from ae_core.noise import batch_noise
from ae_core.training import TrainConfig, default_loss

from . import plots
from .parity import format_table, forward_parity, step_parity, summarize
from .runner import Data, load_data, optional, train_run


def parity_rows(spec, dtype: str, data: Data, batch_size: int, seed: int, optimizer, loss: str | None = None,
                precision: str = "highest") -> list:
    idx = epoch_batches(seed, 0, len(data.x_train), batch_size)[0]
    x = data.x_train[idx].astype(np.float64)
    return (forward_parity(spec, dtype, x, seed=seed, loss=loss, precision=precision)
            + step_parity(spec, dtype, x, optimizer, seed=seed, loss=loss, precision=precision))


def run_parity(args) -> int:
    spec = get_spec(args.preset)
    data = load_data(spec, args.data, args.data_dir, "float64")
    rows = parity_rows(spec, args.dtype, data, args.batch_size, args.seed, args.optimizer_config, args.loss,
                       args.precision)
    import jax

    print(format_table(rows, f"{spec.name} | {args.dtype} | matmul precision {args.precision} | JAX on "
                             f"{jax.devices()[0].platform}, torch on cpu | batch {args.batch_size} "
                             f"of MNIST ({data.source}) | weights: ae_core seed {args.seed}, shared | "
                             f"step: {args.optimizer_config.name} lr {args.optimizer_config.lr:g}"))
    ok = all(r.ok for r in rows)
    print("worst: " + ", ".join(f"{k} {v:.2e}" for k, v in summarize(rows).items()))
    print("\nPARITY OK" if ok else "\nPARITY FAILED")
    return 0 if ok else 1


def run_demo(args) -> int:
    spec = get_spec(args.preset)
    config = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, optimizer=args.optimizer_config,
                         loss=args.loss or default_loss(spec), seed=args.seed, dtype=args.dtype)
    out = Path(args.out)
    print(f"ae-parity demo: {spec.name} ({spec.description})")
    print(f"  encoder {spec.describe('encoder')} | decoder {spec.describe('decoder')} | "
          f"{spec.num_params():,} parameters")
    data = load_data(spec, args.data, args.data_dir, args.dtype, limit=args.limit)
    print(f"  data: MNIST {data.source}: {len(data.x_train):,} train / {len(data.x_eval):,} test examples")

    # 1. the same weights and batch in both frameworks: forward, gradients, one optimizer step
    ok = True
    print("\n1. parity on one batch, same weights (matmul precision highest):")
    for dtype in ("float32", "float64"):
        print(f"   {dtype}: ", end="", flush=True)  # the line's status while both frameworks compile and run
        try:
            rows = parity_rows(spec, dtype, data, config.batch_size, config.seed, config.optimizer, config.loss)
        except BaseException:
            print(flush=True)  # end the status line: the error is reported on a line of its own
            raise
        ok &= all(r.ok for r in rows)
        worst = summarize(rows)
        print(", ".join(f"{k} {v:.1e}" for k, v in worst.items()) +
              ("  ok" if all(r.ok for r in rows) else "  FAILED"))

    # 2. training from the same start on the same batches
    opt = config.optimizer
    print(f"\n2. training {config.epochs} epochs, batch {config.batch_size}, {opt.name} lr {opt.lr:g}, "
          f"{config.loss}, {config.dtype}, seed {config.seed} (same initial weights and batch order):")
    # the demo's own output: each demo run replaces the previous one's (train --out refuses an existing run);
    # one progress line per epoch (stderr, as `train` shows them), the table once both have finished; what
    # the runs skip (an optional extra not installed) is said on stderr, once for both
    runs = {fw: train_run(fw, spec, config, out / fw, data=data, overwrite=True, progress=True, log=_note)
            for fw in ("torch", "jax")}
    head = (f"   {'epoch':>5} {'loss torch':>12} {'loss jax':>12} {'|diff|':>9} {'eval torch':>11} {'eval jax':>11}"
            f" {'time torch':>11} {'time jax':>9} {'speedup':>8}")
    print(head + "\n   " + "-" * (len(head) - 3))
    for et, ej in zip(runs["torch"]["epochs"], runs["jax"]["epochs"]):
        print(f"   {et['epoch']:>5} {et['train_loss']:>12.6f} {ej['train_loss']:>12.6f} "
              f"{abs(et['train_loss'] - ej['train_loss']):>9.1e} {et['eval_loss']:>11.6f} {ej['eval_loss']:>11.6f} "
              f"{et['time_s']:>10.3f}s {ej['time_s']:>8.3f}s {et['time_s'] / ej['time_s']:>7.1f}x")
    step_t = np.concatenate([e["step_losses"] for e in runs["torch"]["epochs"]])
    step_j = np.concatenate([e["step_losses"] for e in runs["jax"]["epochs"]])
    print(f"   per-step loss, max |torch - jax| over {len(step_t)} steps: {np.abs(step_t - step_j).max():.2e}"
          + ("  (float32: trajectories drift apart chaotically from last-bit differences; in float64 they "
             "start ~1e-16 apart and agree for longer)" if config.dtype == "float32" else ""))
    print("   (jax epoch 1 includes compilation)")

    # 3. pictures
    if optional("matplotlib", "pictures", _note):
        print(f"\n3. pictures (the {len(data.x_eval):,} test digits encoded and decoded in both frameworks):",
              flush=True)
        for name, path in pictures(spec, out, data, runs, config).items():
            print(f"   {name:<16} {path}")
    print(f"\ncheckpoints: {out / 'torch' / 'checkpoint.safetensors'}, {out / 'jax' / 'checkpoint.safetensors'}")
    print("PARITY OK" if ok else "PARITY FAILED")
    return 0 if ok else 1


def _note(message: str) -> None:
    print(message, file=sys.stderr)


def pictures(spec, out: Path, data: Data, runs: dict, config: TrainConfig) -> dict[str, Path]:
    import jax.numpy as jnp
    import torch

    import ae_jax
    import ae_torch
    from ae_core.training import load_checkpoint

    tm = ae_torch.build(spec, dtype=config.dtype).eval()
    ae_torch.load_state_dict(tm, load_checkpoint(out / "torch" / "checkpoint.safetensors").model)
    jm = ae_jax.build(spec, dtype=config.dtype, seed=config.seed)  # numpy init (no compiles); replaced next
    jm.eval()
    ae_jax.load_state_dict(jm, load_checkpoint(out / "jax" / "checkpoint.safetensors").model)
    from ae_jax.train import encode_decode

    with torch.no_grad():
        zt = tm.encode(torch.from_numpy(data.x_eval)).numpy()
    zj = np.asarray(encode_decode(jm, jnp.asarray(data.x_eval))[0])
    paths = {}
    title = f"{spec.name}, {config.epochs} epochs, {config.dtype}"
    if spec.input in ("mnist", "mnist_image", "mnist_rows"):
        pick = plots.one_per_digit(data.labels_eval)
        shown, rows = data.x_eval[pick], {}
        if spec.corrupt:  # denoising: the digits corrupted as in training, then cleaned by each model
            noise = batch_noise(spec, config.seed, len(pick), config.dtype)
            with torch.no_grad():
                shown = tm.corrupted(torch.from_numpy(shown), {k: torch.from_numpy(v) for k, v in noise.items()})
                shown = shown.numpy()
            rows["noisy input"] = shown
        with torch.no_grad():
            rows["torch"] = tm(torch.from_numpy(shown)).numpy()
        rows["jax"] = np.asarray(encode_decode(jm, jnp.asarray(shown))[1])
        paths["reconstructions"] = plots.reconstructions(out / "reconstructions.png", data.x_eval[pick], rows,
                                                         f"test digits: original / {' / '.join(rows)} ({title})")
    if spec.is_vae:  # generation: the same draws z ~ N(0, I) decoded by both
        z = np.random.default_rng(config.seed).standard_normal((10, *spec.code_shape)).astype(config.dtype)
        with torch.no_grad():
            st = tm.decode(torch.from_numpy(z)).numpy()
        sj = np.asarray(jm.decode(jnp.asarray(z)))
        paths["prior samples"] = plots.reconstructions(out / "samples.png", None, {"torch": st, "jax": sj},
                                                       f"digits sampled from the prior z ~ N(0, I) ({title})")
    paths["loss curves"] = plots.loss_curves(out / "loss_curves.png", runs, f"training loss ({title})")
    paths["latent scatter"] = plots.latent_scatter(out / "latent.png", {"torch": zt, "jax": zj},
                                                   data.labels_eval, f"test-set codes by digit ({title})")
    return paths
