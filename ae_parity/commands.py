"""The ``ae-parity`` commands: one function per subcommand, ``command(args) -> exit code``.

``ae_parity.cli`` parses the arguments and dispatches here. Heavy imports (JAX, torch, the trainers)
happen inside the commands, so a torch-only command never imports JAX. Errors propagate to
``cli.main``, which turns them into messages and exit codes.
"""

from __future__ import annotations

import argparse
import sys

from ae_core import DEFAULT_PRESET, UsageError
from ae_core.optim import OptimizerConfig


def optimizer_config(args, base: OptimizerConfig | None = None) -> OptimizerConfig:
    """From the arguments given (None = not given: OptimizerConfig's defaults, or ``base``'s on resume)."""
    fields = {"name": args.optimizer, "lr": args.lr, "weight_decay": args.weight_decay,
              "momentum": args.momentum, "nesterov": args.nesterov}
    given = {k: v for k, v in fields.items() if v is not None}
    return OptimizerConfig(**{**(vars(base) if base is not None else {}), **given})


def _start_distributed(args) -> bool:
    """jax.distributed from the flags (before any JAX computation); whether this is a multi-host run."""
    multihost = args.distributed or any(v is not None for v in (args.coordinator, args.num_processes,
                                                               args.process_id))
    if not multihost:
        return False
    if getattr(args, "framework", "jax") != "jax":
        raise UsageError("multi-host training is JAX's (--framework jax)")
    from ae_jax.sharding import initialize

    return initialize(args.coordinator, args.num_processes, args.process_id, auto=args.distributed)


def _resumed_config(args):
    """``train --resume``: the checkpoint's spec and config; a flag given that contradicts them is an error."""
    from pathlib import Path

    from ae_core import get_spec
    from ae_core.training import CHECKPOINT_FORMAT, TrainConfig, load_checkpoint

    from .ported import model_from_args
    from .rundir import CHECKPOINT

    ckpt = load_checkpoint(Path(args.resume) / CHECKPOINT)  # a graph run's holds its graph: resumed onto it
    saved = ckpt.config
    conflicts = []
    given = model_from_args(args, saved.dtype, saved.batch_size, saved.seed)  # --graph / --torch, if given
    if given is not None and not given.same_architecture(ckpt.spec):
        flag = f"--graph {args.graph}" if args.graph else f"--torch {args.torch}"
        trained = "another graph" if isinstance(ckpt.spec, type(given)) else "the preset"
        conflicts.append(f"{flag} (the run trained {trained} {ckpt.spec.name})")
    spec_given = getattr(args, "spec", None)
    if spec_given is not None and not (isinstance(ckpt.spec, type(spec_given))
                                       and spec_given.same_architecture(ckpt.spec)):
        conflicts.append(f"--spec {spec_given.name} (the run trained {ckpt.spec.name}, another architecture)")
    preset = None if spec_given is not None else args.preset
    if preset is not None and preset == ckpt.spec.name and not get_spec(preset).same_architecture(ckpt.spec):
        conflicts.append(f"--preset {preset} (the run trained a model of its own named {preset!r}, another "
                         f"architecture: resume without --preset)")
    for name, value, was in (("preset", preset, ckpt.spec.name), ("dtype", args.dtype, saved.dtype),
                             ("batch-size", args.batch_size, saved.batch_size), ("seed", args.seed, saved.seed),
                             ("loss", args.loss, saved.loss)):
        if value is not None and value != was:
            conflicts.append(f"--{name} {value} (the run has {was})")
    opt = optimizer_config(args, saved.optimizer)
    if opt != saved.optimizer:
        conflicts.append(f"optimizer {opt.to_json()} (the run has {saved.optimizer.to_json()})")
    if conflicts:
        raise UsageError(f"--resume {args.resume}: checkpoint ({CHECKPOINT_FORMAT}) conflicts with "
                         + "; ".join(conflicts))
    trained = ckpt.data or {}  # the run's data: honoured unless given (then checked against it, runner)
    args.data = args.data or trained.get("source") or "auto"
    args.limit = args.limit if args.limit is not None else trained.get("limit")
    config = TrainConfig(epochs=args.epochs or saved.epochs, batch_size=saved.batch_size, optimizer=saved.optimizer,
                         loss=saved.loss, seed=saved.seed, dtype=saved.dtype)
    return ckpt.spec, config


def _new_config(args):
    """``train --out``: the spec (or the model graph of --graph / --torch, ``ae_parity.ported``) and config
    from the flags, with the defaults for those not given."""
    from ae_core import get_spec
    from ae_core.training import TrainConfig, check_loss, default_loss

    from .ported import model_from_args

    seed, dtype, batch_size = 0 if args.seed is None else args.seed, args.dtype or "float32", args.batch_size or 32
    spec = model_from_args(args, dtype, batch_size, seed) or get_spec(args.preset or DEFAULT_PRESET)
    config = TrainConfig(epochs=args.epochs or 10, batch_size=batch_size, optimizer=optimizer_config(args),
                         loss=args.loss or default_loss(spec), seed=seed, dtype=dtype)
    check_loss(spec, config.loss)  # before the data are loaded
    return spec, config


def train(args) -> int:
    """``ae-parity train``: one framework, a new run (--out) or a resumed one (--resume)."""
    import importlib.util
    from pathlib import Path

    from .runner import load_data, train_run

    from .rundir import check_out_dir

    if args.overwrite and args.resume:
        raise UsageError("--overwrite replaces the run of --out; --resume continues one: give one of them")
    if args.out is not None:  # refused before any data is read
        check_out_dir(args.out, overwrite=args.overwrite)
    spec, config = _resumed_config(args) if args.resume else _new_config(args)
    args.data = args.data or "auto"
    out = args.resume or args.out
    multihost = _start_distributed(args)
    if args.framework == "torch" and args.devices is not None:
        raise UsageError("--devices is for --framework jax (torch trains on one device here)")
    data = load_data(spec, args.data, args.data_dir, config.dtype, limit=args.limit)
    kwargs = {"impl": args.torch_impl} if args.framework == "torch" else {
        "mode": args.jax_mode, "conv_form": args.conv_form,
        "devices": args.devices or ("all" if multihost else None)}
    metrics = train_run(args.framework, spec, config, out, data=data, resume=bool(args.resume),
                        overwrite=args.overwrite, progress=not args.no_progress, trainer_kwargs=kwargs,
                        early_stop=args.early_stop, log=lambda m: print(m, file=sys.stderr))
    last = metrics["epochs"][-1]
    print(f"{args.framework} {spec.name}: {last['epoch']} epochs, train loss {last['train_loss']:.6f}, "
          f"eval loss {last['eval_loss']:.6f}")
    if metrics.get("written", True):
        from .rundir import BEST, CHECKPOINT, METRICS, TENSORBOARD

        best = metrics["best"]
        kept = [f"{out}/{BEST} (epoch {best['epoch']}, eval loss {best['eval_loss']:.6f})"] if best["file"] else []
        scalars = (Path(out) / TENSORBOARD).is_dir() and importlib.util.find_spec("tensorboard") is not None
        print("wrote " + ", ".join([f"{out}/{CHECKPOINT}", *kept, f"{out}/{METRICS}"]
                                   + ([f"{out}/{TENSORBOARD}/"] if scalars else [])))
    else:
        print(f"process {metrics['process']}: nothing written (process 0 writes the run directory)")
    return 0


def sweep(args) -> int:
    """``ae-parity sweep``: every (seed, lr) combination at once in JAX; 1 when every model diverged."""
    from ae_core import get_spec
    from ae_core.training import TrainConfig, default_loss
    from ae_jax.sweep import grid

    from .runner import load_data
    from .sweep import check_sweep_dir, format_summary, sweep_run

    spec = get_spec(args.preset)
    members = grid(args.seeds, args.lr)
    check_sweep_dir(args.out, args.overwrite)  # before any data is read
    opt = optimizer_config(argparse.Namespace(**{**vars(args), "lr": args.lr[0]}))
    config = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, optimizer=opt,
                         loss=args.loss or default_loss(spec), seed=args.data_seed, dtype=args.dtype)
    data = load_data(spec, args.data, args.data_dir, config.dtype, limit=args.limit)
    summary = sweep_run(spec, config, members, args.out, data=data, batch_order=args.batch_order,
                        devices=args.devices, overwrite=args.overwrite, log=lambda m: print(m, file=sys.stderr))
    print(format_summary(summary))
    print(f"wrote {args.out}/summary.json and one run directory per model")
    return 0 if summary["best"] is not None else 1


def validate(args) -> int:
    """``ae-parity validate``: every seed in torch and in JAX, a paired TOST of the final eval losses; 0 when
    shown equivalent, 1 when not (or a run diverged)."""
    from ae_core import get_spec
    from ae_core.training import TrainConfig, default_loss

    from .runner import load_data
    from .validate import DivergedError, check_seeds, format_report, validate_run

    seeds = check_seeds(args.seeds)  # before any data is read or model trained
    spec = get_spec(args.preset)
    config = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, optimizer=optimizer_config(args),
                         loss=args.loss or default_loss(spec), seed=seeds[0], dtype=args.dtype)
    data = load_data(spec, args.data, args.data_dir, config.dtype, limit=args.limit)
    try:
        summary = validate_run(spec, config, seeds, args.out, data=data, margin=args.margin, alpha=args.alpha,
                               plot=args.plot, log=lambda m: print(m, file=sys.stderr))
    except DivergedError as e:
        print(f"ae-parity validate: error: {e}", file=sys.stderr)
        return 1
    print(format_report(summary))
    picture = f"{summary['plot']}, " if summary["plot"] else ""
    print(f"wrote {args.out}/validate.json, {picture}{args.out}/torch/ and {args.out}/jax/ (one run "
          "directory per seed)")
    return 0 if summary["verdict"] == "equivalent" else 1


def bench(args) -> int:
    """``ae-parity bench``: the handler is ``ae_parity.bench.command``."""
    from .bench import command

    return command(args)


def demo(args) -> int:
    """``ae-parity demo``: both frameworks from the same start; table and pictures."""
    from .demo import run_demo

    args.optimizer_config = optimizer_config(args)
    return run_demo(args)


def parity(args) -> int:
    """``ae-parity parity``: the forward / loss / gradient / optimizer-step parity table."""
    from .demo import run_parity

    args.optimizer_config = optimizer_config(args)
    return run_parity(args)


def _diagnose_models(args):
    """The torch model (with --weights loaded) and the flax model, from their ``FILE.py:NAME`` (or
    ``module:NAME``) references: a class, or a factory function returning the model, called with
    --torch-kwargs / --flax-kwargs (a flax one that takes ``rngs`` gets ``nnx.Rngs(0)`` unless given).
    Whatever goes wrong in the user's file is one UsageError line (``ae_parity.userfiles``).

    The torch model is initialised under a fixed seed (in a forked RNG, so the caller's torch RNG is left
    as it was): the same command gives the same numbers and the same verdict every time."""
    import torch
    from flax import nnx

    from .userfiles import build

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        tm = build(args.torch, "--torch", torch.nn.Module, "torch nn.Module", getattr(args, "torch_kwargs", None),
                   kwargs_flag="--torch-kwargs")
    if args.weights:
        from ae_core.weights import load_safetensors
        from ae_torch.weights import load_state_dict

        tensors, _ = load_safetensors(args.weights)
        load_state_dict(tm, {k: torch.from_numpy(v) for k, v in tensors.items()})
    fm = build(args.flax, "--flax", nnx.Module, "flax nnx.Module", getattr(args, "flax_kwargs", None),
               kwargs_flag="--flax-kwargs", defaults={"rngs": ("nnx.Rngs(0)", lambda: nnx.Rngs(0))})
    return type(tm), tm, fm


def _diagnose_rules(args):
    """--rules: the user's ``{NNX class: (ParamRule, ...)}``, checked, for this comparison only."""
    if getattr(args, "rules", None) is None:
        return None
    from .userfiles import load_rules

    return load_rules(args.rules, "--rules")


def _diagnose_batch(args, torch_cls):
    """The input batch: MNIST digits or standard normal numbers, in the per-example input shape."""
    import numpy as np

    shape = args.input_shape or ",".join(map(str, getattr(torch_cls, "input_shape", (784,))))
    try:
        shape = tuple(int(d) for d in str(shape).split(","))
    except ValueError:
        raise UsageError(f"--input-shape {shape!r}: expected comma-separated ints") from None
    n = args.batch_size
    if args.batch == "random":
        return np.random.default_rng(0).standard_normal((n, *shape))
    from ae_core import mnist
    from ae_core.inputs import pixels

    images = mnist.load("train", args.data, args.data_dir).images[:n]
    x = pixels(images, "float64")
    if x[0].size != int(np.prod(shape)):
        raise UsageError(f"--batch mnist gives 784 values per example, not the input shape {shape}")
    return x.reshape(n, *shape)


def diagnose(args) -> int:
    """``ae-parity diagnose``: where a Flax port diverges from its torch original; 1 when it does."""
    import numpy as np

    from .compare import compare

    if args.dtype == "float64":  # before the flax model is built, or its float64 parameters become float32
        from ae_jax.numerics import enable_x64

        enable_x64()
    torch_cls, tm, fm = _diagnose_models(args)
    x = _diagnose_batch(args, torch_cls)
    channels_last = args.flax_layout == "nhwc" and x.ndim >= 3
    flax_input = (lambda a: np.moveaxis(a, 1, -1)) if channels_last else None
    report = compare(tm, fm, x, dtype=args.dtype, mode=args.mode, tol=args.tol, flax_input=flax_input,
                     flax_layout="nhwc" if channels_last else "nchw",
                     flax_output_layout=getattr(args, "flax_output_layout", None), rules=_diagnose_rules(args),
                     forward_kwargs={name: np.random.default_rng(1 + i).standard_normal((len(x), *dims))
                                     for i, (name, dims) in enumerate(args.noise)} or None)
    print(report.to_json() if args.json else report.table())
    return 0 if report.ok else 1


def port(args) -> int:
    """``ae-parity port``: trace a torch model, write its NNX source, print the parity certificate of that
    very source (imported from the written file); 1 when a row diverges."""
    from pathlib import Path

    import torch

    from ae_core.files import atomic_write
    from ae_jax.numerics import enable_x64, jnp_dtype
    from ae_torch.trace import trace

    from . import codegen
    from .port import certificate, certificate_table, load_source
    from .userfiles import build

    enable_x64()  # the certificate's float64 rows
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        tm = build(args.torch, "--torch", torch.nn.Module, "torch nn.Module", args.torch_kwargs,
                   kwargs_flag="--kwargs").double()
    x = _diagnose_batch(args, type(tm))
    graph = trace(tm, torch.from_numpy(x))
    name = args.class_name or type(tm).__name__
    out = Path(args.out)
    atomic_write(out, codegen.source(graph, class_name=name, origin=args.torch).encode())
    if args.graph_out:
        atomic_write(Path(args.graph_out), graph.to_json().encode())
    cls = load_source(out, codegen.class_name(name))
    rows, notes = certificate(tm, x, make_flax=lambda dtype: cls(dtype=jnp_dtype(dtype)), modes=tuple(args.modes))
    print(f"wrote {out} ({type(tm).__name__} -> class {codegen.class_name(name)}: {len(graph.modules)} layers, "
          f"{len(graph.methods['forward'].nodes)} forward nodes, methods {', '.join(graph.methods)})")
    print(certificate_table(rows, notes))
    return 0 if all(r.ok for _, _, r in rows) else 1


def doctor(args) -> int:
    from .doctor import doctor as report

    print(report(args.json))
    return 0
