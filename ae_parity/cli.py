"""``ae-parity``: the command line.

Bad arguments print a clear message and exit with code 2; data/checkpoint problems and non-finite
losses exit with 1.
"""

from __future__ import annotations

import argparse
import sys

from ae_core import DEFAULT_PRESET, DTYPES, PRESETS
from ae_core.mnist import SOURCES
from ae_core.optim import OPTIMIZERS, OptimizerConfig
from ae_core.training import LOSSES


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # exit 2 with the command named
        self.print_usage(sys.stderr)
        self.exit(2, f"{self.prog}: error: {message}\n")


def _positive(kind):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a positive {kind.__name__}, got {text!r}") from None
        if not value > 0:
            raise argparse.ArgumentTypeError(f"expected a positive {kind.__name__}, got {value}")
        return value

    return parse


def _int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated positive ints, got {text!r}") from None
    if not values or min(values) <= 0:
        raise argparse.ArgumentTypeError(f"expected comma-separated positive ints, got {text!r}")
    return values


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {value}")
    return value


def _data_args(p):
    p.add_argument("--data", choices=SOURCES, default="auto",
                   help="MNIST source: full (download if absent), sample (offline 5k digits), auto (default)")
    p.add_argument("--data-dir", default=None, help="data folder (default: $AE_PARITY_DATA or ./data)")


def _devices(text: str):
    if text == "all":
        return text
    try:
        return _positive(int)(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"expected 'all' or a positive device count, got {text!r}") from None


def _scale_args(p):
    """Data parallelism over devices and hosts (JAX only)."""
    g = p.add_argument_group("devices and hosts (--framework jax)")
    g.add_argument("--devices", type=_devices, default=None,
                   help="'all' or a count: data-parallel over that many devices (jax.sharding mesh, batch split, "
                        "state replicated); default one device, or all in a multi-host run")
    g.add_argument("--coordinator", default=None, metavar="HOST:PORT",
                   help="multi-host: process 0's address (with --num-processes and --process-id)")
    g.add_argument("--num-processes", type=_positive(int), default=None, help="multi-host: how many processes")
    g.add_argument("--process-id", type=int, default=None, help="multi-host: this process, 0..N-1")
    g.add_argument("--distributed", action="store_true",
                   help="multi-host with everything read from the cluster (Cloud TPU, Slurm, Open MPI, Kubernetes)")


def _start_distributed(args) -> bool:
    """jax.distributed from the flags (before any JAX computation); whether this is a multi-host run."""
    multihost = args.distributed or any(v is not None for v in (args.coordinator, args.num_processes,
                                                               args.process_id))
    if not multihost:
        return False
    if getattr(args, "framework", "jax") != "jax":
        raise ValueError("multi-host training is JAX's (--framework jax)")
    from ae_jax.sharding import initialize

    return initialize(args.coordinator, args.num_processes, args.process_id, auto=args.distributed)


def _float_list(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated positive numbers, got {text!r}") from None
    if not values or not min(values) > 0:
        raise argparse.ArgumentTypeError(f"expected comma-separated positive numbers, got {text!r}")
    return values


def _seed_list(text: str) -> list[int]:
    from ae_jax.sweep import parse_seeds

    try:
        return parse_seeds(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _model_args(p, *, resumable: bool = False, sweep: bool = False):
    """Model/optimizer arguments. With ``resumable``, defaults are None so --resume can tell what was given;
    with ``sweep``, lists of seeds and learning rates."""
    d = (lambda v: None) if resumable else (lambda v: v)
    p.add_argument("--preset", choices=sorted(PRESETS), default=d(DEFAULT_PRESET))
    p.add_argument("--batch-size", type=_positive(int), default=d(32))
    p.add_argument("--optimizer", choices=sorted(OPTIMIZERS), default=d("adam"))
    if sweep:
        p.add_argument("--lr", type=_float_list, default=[1e-3], help="comma-separated learning rates (default 1e-3)")
    else:
        p.add_argument("--lr", type=_positive(float), default=d(1e-3))
    p.add_argument("--weight-decay", type=_non_negative_float, default=None,
                   help="default: torch's default for the optimizer (adam 0, adamw 1e-2, sgd 0)")
    p.add_argument("--momentum", type=_non_negative_float, default=None, help="sgd only (default 0)")
    p.add_argument("--nesterov", action="store_true", default=None, help="sgd with momentum only")
    p.add_argument("--loss", choices=LOSSES, default=None,
                   help="mse, bce (from logits; needs a decoder ending in Sigmoid) or vae (BCE + KL; the vae "
                        "preset); default: vae for a VAE, else mse")
    if sweep:
        p.add_argument("--seeds", type=_seed_list, default=[0], help="initial-weight seeds: 0-7, 0,3,5 or 0-3,10")
        p.add_argument("--batch-order", choices=("own", "shared"), default="own",
                       help="own: each model the batches of its seed (equals its solo run); shared: every model "
                            "the batches of --data-seed (gathered once, faster)")
        p.add_argument("--data-seed", type=int, default=0, help="the batch order of --batch-order shared")
    else:
        p.add_argument("--seed", type=int, default=d(0))
    p.add_argument("--dtype", choices=DTYPES, default=d("float32"))


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="ae-parity", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    demo = sub.add_parser("demo", help="train a preset in both frameworks from the same start; table and pictures")
    _model_args(demo)
    demo.add_argument("--epochs", type=_positive(int), default=10)
    demo.set_defaults(lr=3e-3)
    demo.add_argument("--limit", type=_positive(int), default=None, help="train on the first N examples only")
    demo.add_argument("--out", default="runs/demo", help="where checkpoints, metrics and pictures go")
    _data_args(demo)

    train = sub.add_parser("train", help="train one framework; checkpoint, metrics.json, TensorBoard scalars")
    train.add_argument("--framework", choices=("jax", "torch"), default="jax")
    _model_args(train, resumable=True)
    train.add_argument("--epochs", type=_positive(int), default=None, help="total epochs (default 10)")
    train.add_argument("--limit", type=_positive(int), default=None, help="train on the first N examples only")
    dest = train.add_mutually_exclusive_group(required=True)
    dest.add_argument("--out", help="run directory (new run)")
    dest.add_argument("--resume", metavar="DIR", help="continue the run in DIR (written by either framework)")
    train.add_argument("--torch-impl", choices=("default", "single", "foreach", "fused"), default="default",
                       help="torch optimizer implementation")
    train.add_argument("--jax-mode", choices=("auto", "scan", "step"), default="auto",
                       help="whole epoch as one lax.scan, or a jitted step per batch; auto: scan, except "
                            "convolutional models on CPU (faster as steps there)")
    train.add_argument("--no-progress", action="store_true", help="no progress bars")
    _scale_args(train)
    _data_args(train)

    sweep = sub.add_parser("sweep", help="train every (seed, lr) combination at once in JAX (vmap); per-model "
                                         "runs and a summary")
    _model_args(sweep, sweep=True)
    sweep.add_argument("--epochs", type=_positive(int), default=10)
    sweep.add_argument("--limit", type=_positive(int), default=None, help="train on the first N examples only")
    sweep.add_argument("--devices", type=_devices, default=None,
                       help="'all' or a count: split the models over that many devices (no communication)")
    sweep.add_argument("--out", default="runs/sweep", help="sweep directory: one run directory per model + summary.json")
    _data_args(sweep)

    bench = sub.add_parser("bench", help="training speed side by side: tutorial loop, torch eager, jax step, jax scan")
    bench.add_argument("--preset", choices=sorted(PRESETS), default=DEFAULT_PRESET)
    bench.add_argument("--batch-sizes", type=_int_list, default=[32, 256], help="comma-separated (default 32,256)")
    bench.add_argument("--epochs", type=_positive(int), default=5, help="timed epochs per variant (default 5)")
    bench.add_argument("--limit", type=_positive(int), default=None, help="train on the first N examples only")
    bench.add_argument("--no-loader", action="store_true", help="skip the tutorial DataLoader variant")
    bench.add_argument("--json", default=None, help="also write the full report here")
    bench.add_argument("--markdown", action="store_true", help="print markdown tables (for docs/benchmarks.md)")
    what = bench.add_mutually_exclusive_group()
    what.add_argument("--jax-only", action="store_true",
                      help="ae_jax alone, in this process: scan (precision highest and default) and step, compile "
                           "time (for accelerators)")
    what.add_argument("--sweep", type=_positive(int), default=None, metavar="M",
                      help="a sweep of M models (vmap) against M sequential runs")
    bench.add_argument("--size", type=_positive(int), default=None,
                       help="MNIST-shaped data of this many examples (the digits repeated; e.g. 60000), "
                            "with --jax-only or --sweep")
    _data_args(bench)

    par = sub.add_parser("parity", help="forward / loss / gradient / optimizer-step parity table")
    _model_args(par)
    par.add_argument("--precision", choices=("highest", "default"), default="highest",
                     help="matmul precision: highest (the parity setting) or each framework's default (on GPU: "
                          "TF32, to see what it costs)")
    _data_args(par)

    diag = sub.add_parser("diagnose", help="where does a Flax port diverge from its torch original? layer by layer")
    diag.add_argument("--torch", required=True, metavar="FILE.py:Class", help="the torch nn.Module class")
    diag.add_argument("--flax", required=True, metavar="FILE.py:Class",
                      help="the flax nnx.Module class (built with rngs=nnx.Rngs(0) if it takes rngs)")
    diag.add_argument("--weights", default=None, help="a safetensors state dict loaded into the torch model first")
    diag.add_argument("--batch", choices=("mnist", "random"), default="random",
                      help="MNIST digits (data as for the other commands) or standard normal numbers")
    diag.add_argument("--input-shape", default=None,
                      help="per-example input shape, e.g. 784 or 1,28,28 (default: the torch class's "
                           "`input_shape` attribute, else 784)")
    diag.add_argument("--batch-size", type=_positive(int), default=16)
    diag.add_argument("--flax-layout", choices=("nchw", "nhwc"), default="nchw",
                      help="nhwc: images go to the flax model channels-last")
    diag.add_argument("--mode", choices=("eval", "train"), default="eval")
    diag.add_argument("--dtype", choices=DTYPES, default="float64")
    diag.add_argument("--tol", type=_positive(float), default=None, help="relative tolerance (default 1e-10 / 1e-5)")
    diag.add_argument("--json", action="store_true", help="print the report as JSON (for CI)")
    _data_args(diag)
    return parser


def _load_class(ref: str):
    """``path/to/file.py:ClassName`` -> the class."""
    import importlib.util
    from pathlib import Path

    path, sep, name = ref.rpartition(":")
    if not sep or not path.endswith(".py") or not name:
        raise ValueError(f"{ref!r}: expected FILE.py:ClassName")
    if not Path(path).is_file():
        raise ValueError(f"{ref!r}: no file {path}")
    spec = importlib.util.spec_from_file_location(f"_ae_parity_user_{Path(path).stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not hasattr(module, name):
        raise ValueError(f"{ref!r}: {path} defines no {name}")
    return getattr(module, name)


def _diagnose(args) -> int:
    import inspect

    import numpy as np
    from flax import nnx

    from ae_core.weights import load_safetensors

    from .compare import compare

    if args.dtype == "float64":  # before the flax model is built, or its float64 parameters become float32
        from ae_jax.numerics import enable_x64

        enable_x64()
    torch_cls, flax_cls = _load_class(args.torch), _load_class(args.flax)
    tm = torch_cls()
    if args.weights:
        import torch

        from ae_torch.weights import load_state_dict

        tensors, _ = load_safetensors(args.weights)
        load_state_dict(tm, {k: torch.from_numpy(v) for k, v in tensors.items()})
    takes_rngs = "rngs" in inspect.signature(flax_cls.__init__).parameters
    fm = flax_cls(rngs=nnx.Rngs(0)) if takes_rngs else flax_cls()
    shape = args.input_shape or ",".join(map(str, getattr(torch_cls, "input_shape", (784,))))
    try:
        shape = tuple(int(d) for d in str(shape).split(","))
    except ValueError:
        raise ValueError(f"--input-shape {shape!r}: expected comma-separated ints") from None
    n = args.batch_size
    if args.batch == "mnist":
        from ae_core import mnist
        from ae_core.inputs import pixels

        images = mnist.load("train", args.data, args.data_dir).images[:n]
        x = pixels(images, "float64")
        if x[0].size != int(np.prod(shape)):
            raise ValueError(f"--batch mnist gives 784 values per example, not the input shape {shape}")
        x = x.reshape(n, *shape)
    else:
        x = np.random.default_rng(0).standard_normal((n, *shape))
    flax_input = (lambda a: a.transpose(0, 2, 3, 1)) if args.flax_layout == "nhwc" and x.ndim == 4 else None
    report = compare(tm, fm, x, dtype=args.dtype, mode=args.mode, tol=args.tol, flax_input=flax_input)
    print(report.to_json() if args.json else report.table())
    return 0 if report.ok else 1


def optimizer_config(args, base: OptimizerConfig | None = None) -> OptimizerConfig:
    """From the arguments given (None = not given: OptimizerConfig's defaults, or ``base``'s on resume)."""
    fields = {"name": args.optimizer, "lr": args.lr, "weight_decay": args.weight_decay,
              "momentum": args.momentum, "nesterov": args.nesterov}
    given = {k: v for k, v in fields.items() if v is not None}
    return OptimizerConfig(**{**(vars(base) if base is not None else {}), **given})


def _train(args) -> int:
    from ae_core import get_spec
    from ae_core.training import CHECKPOINT_FORMAT, TrainConfig, default_loss, load_checkpoint

    from .runner import CHECKPOINT, load_data, train_run

    if args.resume:
        from pathlib import Path

        ckpt = load_checkpoint(Path(args.resume) / CHECKPOINT)
        saved = ckpt.config
        conflicts = []
        for name, value, was in (("preset", args.preset, ckpt.spec.name), ("dtype", args.dtype, saved.dtype),
                                 ("batch-size", args.batch_size, saved.batch_size), ("seed", args.seed, saved.seed),
                                 ("loss", args.loss, saved.loss)):
            if value is not None and value != was:
                conflicts.append(f"--{name} {value} (the run has {was})")
        opt = optimizer_config(args, saved.optimizer)
        if opt != saved.optimizer:
            conflicts.append(f"optimizer {opt.to_json()} (the run has {saved.optimizer.to_json()})")
        if conflicts:
            raise ValueError(f"--resume {args.resume}: checkpoint ({CHECKPOINT_FORMAT}) conflicts with "
                             + "; ".join(conflicts))
        spec = ckpt.spec
        config = TrainConfig(epochs=args.epochs or saved.epochs, batch_size=saved.batch_size, optimizer=saved.optimizer,
                             loss=saved.loss, seed=saved.seed, dtype=saved.dtype)
        out = args.resume
    else:
        spec = get_spec(args.preset or DEFAULT_PRESET)
        config = TrainConfig(epochs=args.epochs or 10, batch_size=args.batch_size or 32,
                             optimizer=optimizer_config(args),
                             loss=args.loss or default_loss(spec), seed=0 if args.seed is None else args.seed,
                             dtype=args.dtype or "float32")
        out = args.out
    multihost = _start_distributed(args)
    if args.framework == "torch" and args.devices is not None:
        raise ValueError("--devices is for --framework jax (torch trains on one device here)")
    data = load_data(spec, args.data, args.data_dir, config.dtype, limit=args.limit)
    kwargs = {"impl": args.torch_impl} if args.framework == "torch" else {
        "mode": args.jax_mode, "devices": args.devices or ("all" if multihost else None)}
    metrics = train_run(args.framework, spec, config, out, data=data, resume=bool(args.resume),
                        progress=not args.no_progress, trainer_kwargs=kwargs, log=lambda m: print(m, file=sys.stderr))
    last = metrics["epochs"][-1]
    print(f"{args.framework} {spec.name}: {last['epoch']} epochs, train loss {last['train_loss']:.6f}, "
          f"eval loss {last['eval_loss']:.6f}")
    if metrics.get("written", True):
        print(f"wrote {out}/checkpoint.safetensors, {out}/metrics.json, {out}/tensorboard/")
    else:
        print(f"process {metrics['process']}: nothing written (process 0 writes the run directory)")
    return 0


def _sweep(args) -> int:
    from ae_core import get_spec
    from ae_core.training import TrainConfig, default_loss
    from ae_jax.sweep import grid

    from .runner import load_data
    from .sweep import format_summary, sweep_run

    spec = get_spec(args.preset)
    members = grid(args.seeds, args.lr)
    opt = optimizer_config(argparse.Namespace(**{**vars(args), "lr": args.lr[0]}))
    config = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, optimizer=opt,
                         loss=args.loss or default_loss(spec), seed=args.data_seed, dtype=args.dtype)
    data = load_data(spec, args.data, args.data_dir, config.dtype, limit=args.limit)
    summary = sweep_run(spec, config, members, args.out, data=data, batch_order=args.batch_order,
                        devices=args.devices, log=lambda m: print(m, file=sys.stderr))
    print(format_summary(summary))
    print(f"wrote {args.out}/summary.json and one run directory per model")
    return 0 if summary["best"] is not None else 1


def _jax_errors() -> tuple[type[Exception], ...]:
    """JAX-side errors to report, without importing JAX for a command that never did (torch-only runs)."""
    sharding = sys.modules.get("ae_jax.sharding")
    return (sharding.DistributedError,) if sharding is not None else ()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    from ae_core.mnist import MnistFileError, MnistUnavailableError
    from ae_core.weights import CheckpointError, StateDictError

    from .compare import PortMismatchError
    from .runner import NonFiniteLossError

    reported = (MnistFileError, MnistUnavailableError, CheckpointError, StateDictError, NonFiniteLossError)
    try:
        if args.command == "train":
            return _train(args)
        if args.command == "sweep":
            return _sweep(args)
        if args.command == "bench":
            from .bench import command as bench_command

            return bench_command(args)
        if args.command == "diagnose":
            return _diagnose(args)
        args.optimizer_config = optimizer_config(args)
        if args.command == "demo":
            from .demo import run_demo

            return run_demo(args)
        if args.command == "parity":
            from .demo import run_parity

            return run_parity(args)
    except (*reported, *_jax_errors()) as e:  # evaluated when an exception is matched, after the command ran
        print(f"ae-parity: error: {e}", file=sys.stderr)
        return 1
    except PortMismatchError as e:
        print(f"ae-parity diagnose: error: {e}", file=sys.stderr)
        return 1
    except ValueError as e:  # arguments that parse but cannot work together
        print(f"ae-parity {args.command}: error: {e}", file=sys.stderr)
        return 2
    raise AssertionError(args.command)


if __name__ == "__main__":
    sys.exit(main())
