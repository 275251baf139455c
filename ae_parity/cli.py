"""``ae-parity``: the command line.

Exit codes (``ae_parity.exits``): 0 done / the frameworks agree; 1 a reported problem (divergence, bad
data or checkpoint files, a non-finite loss); 2 usage (bad arguments, or a user's file that cannot be
loaded or built); 3 an internal failure (a bug: please report it). Each failure is one line on stderr;
``--debug`` or ``AE_PARITY_DEBUG=1`` adds the traceback. This module parses the arguments and dispatches
(``HANDLERS``); the commands themselves are in ``ae_parity.commands``.
"""

from __future__ import annotations

import argparse
import sys
import traceback

from ae_core import DEFAULT_PRESET, DTYPES, PRESETS
from ae_core.mnist import SOURCES
from ae_core.optim import OPTIMIZERS
from ae_core.training import LOSSES

from . import argtypes as T
from . import commands, exits


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # exit 2 with the command named
        self.print_usage(sys.stderr)
        self.exit(2, f"{self.prog}: error: {message}\n")




def _data_args(p):
    p.add_argument("--data", choices=SOURCES, default="auto",
                   help="MNIST source: full (download if absent), sample (offline 5k digits), auto (default)")
    p.add_argument("--data-dir", default=None, help="data folder (default: $AE_PARITY_DATA or ./data)")


def _scale_args(p):
    """Data parallelism over devices and hosts (JAX only)."""
    g = p.add_argument_group("devices and hosts (--framework jax)")
    g.add_argument("--devices", type=T.devices, default=None,
                   help="'all' or a count: data-parallel over that many devices (jax.sharding mesh, batch split, "
                        "state replicated); default one device, or all in a multi-host run")
    g.add_argument("--coordinator", default=None, metavar="HOST:PORT",
                   help="multi-host: process 0's address (with --num-processes and --process-id)")
    g.add_argument("--num-processes", type=T.positive(int), default=None, help="multi-host: how many processes")
    g.add_argument("--process-id", type=int, default=None, help="multi-host: this process, 0..N-1")
    g.add_argument("--distributed", action="store_true",
                   help="multi-host with everything read from the cluster (Cloud TPU, Slurm, Open MPI, Kubernetes)")


def _preset_or_spec(p, default) -> None:
    """``--preset NAME`` or ``--spec FILE.json``, one of them; ``main`` puts the spec read into ``args.preset``."""
    which = p.add_mutually_exclusive_group()
    # default None, filled in by parse_args: argparse lets a flag given with its default's value (``--preset
    # mlp9 --spec F``) through a mutually exclusive group unnoticed
    which.add_argument("--preset", choices=sorted(PRESETS), default=None,
                       help=f"a built-in model (default {default})" if default else "a built-in model")
    p.set_defaults(preset_default=default)
    which.add_argument("--spec", type=T.spec_file, default=None, metavar="FILE.json",
                       help="a model spec of your own instead of --preset: JSON written by ModelSpec.to_json(), or "
                            "a checkpoint (.safetensors) whose model to train again")


def _model_args(p, *, resumable: bool = False, sweep: bool = False):
    """Model/optimizer arguments. With ``resumable``, defaults are None so --resume can tell what was given;
    with ``sweep``, lists of seeds and learning rates."""
    d = (lambda v: None) if resumable else (lambda v: v)
    _preset_or_spec(p, d(DEFAULT_PRESET))
    p.add_argument("--batch-size", type=T.positive(int), default=d(32))
    p.add_argument("--optimizer", choices=sorted(OPTIMIZERS), default=d("adam"))
    if sweep:
        p.add_argument("--lr", type=T.float_list, default=[1e-3], help="comma-separated learning rates (default 1e-3)")
    else:
        p.add_argument("--lr", type=T.positive(float), default=d(1e-3))
    p.add_argument("--weight-decay", type=T.non_negative_float, default=None,
                   help="default: torch's default for the optimizer (adam 0, adamw 1e-2, sgd 0)")
    p.add_argument("--momentum", type=T.non_negative_float, default=None, help="sgd only (default 0)")
    p.add_argument("--nesterov", action="store_true", default=None, help="sgd with momentum only")
    p.add_argument("--loss", choices=LOSSES, default=None,
                   help="mse, bce (from logits; needs a decoder ending in Sigmoid) or vae (BCE + KL; the vae "
                        "preset); default: vae for a VAE, else mse")
    if sweep:
        p.add_argument("--seeds", type=T.seed_list, default=[0], help="initial-weight seeds: 0-7, 0,3,5 or 0-3,10")
        p.add_argument("--batch-order", choices=("own", "shared"), default="own",
                       help="own: each model the batches of its seed (equals its solo run); shared: every model "
                            "the batches of --data-seed (gathered once, faster)")
        p.add_argument("--data-seed", type=T.seed, default=0, help="the batch order of --batch-order shared")
    else:
        p.add_argument("--seed", type=T.seed, default=d(0))
    p.add_argument("--dtype", choices=DTYPES, default=d("float32"))


def _add_demo(sub) -> None:
    demo = sub.add_parser("demo", help="train a preset in both frameworks from the same start; table and pictures")
    _model_args(demo)
    demo.add_argument("--epochs", type=T.positive(int), default=10)
    demo.set_defaults(lr=3e-3)
    demo.add_argument("--limit", type=T.positive(int), default=None, help="train on the first N examples only")
    demo.add_argument("--out", default="runs/demo", help="where checkpoints, metrics and pictures go")
    _data_args(demo)


def _add_train(sub) -> None:
    train = sub.add_parser("train", help="train one framework; checkpoint, metrics.json, TensorBoard scalars")
    train.add_argument("--framework", choices=("jax", "torch"), default="jax")
    _model_args(train, resumable=True)
    train.add_argument("--epochs", type=T.positive(int), default=None, help="total epochs (default 10)")
    train.add_argument("--limit", type=T.positive(int), default=None,
                       help="train on the first N examples only (--resume: the run's, recorded in its checkpoint)")
    dest = train.add_mutually_exclusive_group(required=True)
    dest.add_argument("--out", help="run directory (new run)")
    dest.add_argument("--resume", metavar="DIR", help="continue the run in DIR (written by either framework)")
    train.add_argument("--overwrite", action="store_true",
                       help="with --out: replace the run already in DIR (refused without it)")
    train.add_argument("--torch-impl", choices=("default", "single", "foreach", "fused"), default="default",
                       help="torch optimizer implementation")
    train.add_argument("--jax-mode", choices=("auto", "scan", "step"), default="auto",
                       help="whole epoch as one lax.scan, or a jitted step per batch; auto: scan, except "
                            "with --conv-form plain for a convolutional model on CPU (faster as steps there)")
    train.add_argument("--conv-form", choices=("auto", "plain", "gemm"), default="auto",
                       help="how ae_jax computes convolutions: XLA's own (plain), or as GEMMs (exact "
                            "reformulations, faster on XLA:CPU); auto: GEMMs on the CPU, plain elsewhere")
    train.add_argument("--no-progress", action="store_true", help="no progress bars")
    train.add_argument("--early-stop", type=T.positive(int), default=None, metavar="N",
                       help="stop after N epochs in a row without a better eval loss (the best epoch is kept in "
                            "best.safetensors either way)")
    _graph_args(train)
    _scale_args(train)
    _data_args(train)
    train.set_defaults(data=None)  # --resume: the run's source unless given (a new run: auto)


def _graph_args(p):
    """A model of the user's instead of --preset, trained as a model graph (``ae_parity.ported``)."""
    g = p.add_argument_group(
        "a model of your own instead of --preset (a model graph, trained from the seeded init in both frameworks "
        "on its first output vs the input: --loss mse, or bce where that output is a sigmoid's)")
    g.add_argument("--graph", default=None, metavar="FILE.json",
                   help="a model graph file, as ae_core.graph.Graph.to_json() writes it (e.g. of "
                        "ae_torch.trace.trace(model, x))")
    g.add_argument("--torch", default=None, metavar="FILE.py:NAME",
                   help="a torch nn.Module class, or a function returning the model (also module:NAME), traced on "
                        "a batch of the digits")
    g.add_argument("--torch-kwargs", type=T.json_object, default=None, metavar="JSON",
                   help="keyword arguments for the --torch class or function, a JSON object: '{\"width\": 64}'")
    g.add_argument("--input-shape", default=None, metavar="SHAPE",
                   help="--torch: the per-example input shape, 784 values, e.g. 784 or 1,28,28 (default: the "
                        "class's input_shape attribute, else 784)")


def _add_sweep(sub) -> None:
    sweep = sub.add_parser("sweep", help="train every (seed, lr) combination at once in JAX (vmap); per-model "
                                         "runs and a summary")
    _model_args(sweep, sweep=True)
    sweep.add_argument("--epochs", type=T.positive(int), default=10)
    sweep.add_argument("--limit", type=T.positive(int), default=None, help="train on the first N examples only")
    sweep.add_argument("--devices", type=T.devices, default=None,
                       help="'all' or a count: split the models over that many devices (no communication)")
    sweep.add_argument("--out", default="runs/sweep", help="sweep directory: one run directory per model + summary.json")
    sweep.add_argument("--overwrite", action="store_true",
                       help="replace the sweep already in --out (refused without it)")
    _data_args(sweep)


def _add_validate(sub) -> None:
    from .equivalence import DEFAULT_ALPHA, DEFAULT_MARGIN

    val = sub.add_parser("validate", help="every seed trained in torch and in JAX (one vmapped sweep); a paired "
                                          "equivalence test (TOST) of the final eval losses; exit 0 = equivalent")
    _preset_or_spec(val, DEFAULT_PRESET)
    val.add_argument("--seeds", type=T.seed_list, default=list(range(8)),
                     help="at least 2 seeds: 0-7 (default), 0,3,5 or 0-3,10; seed s is the same run in both")
    val.add_argument("--epochs", type=T.positive(int), default=10)
    val.add_argument("--batch-size", type=T.positive(int), default=32)
    val.add_argument("--optimizer", choices=sorted(OPTIMIZERS), default="adam")
    val.add_argument("--lr", type=T.positive(float), default=1e-3)
    val.add_argument("--weight-decay", type=T.non_negative_float, default=None,
                     help="default: torch's default for the optimizer (adam 0, adamw 1e-2, sgd 0)")
    val.add_argument("--momentum", type=T.non_negative_float, default=None, help="sgd only (default 0)")
    val.add_argument("--nesterov", action="store_true", default=None, help="sgd with momentum only")
    val.add_argument("--loss", choices=LOSSES, default=None, help="default: vae for a VAE, else mse")
    val.add_argument("--dtype", choices=DTYPES, default="float32")
    val.add_argument("--limit", type=T.positive(int), default=None, help="train on the first N examples only")
    val.add_argument("--margin", type=T.margin, default=DEFAULT_MARGIN,
                     help="equivalence margin: a percentage of torch's mean final eval loss (e.g. 1%%), or an absolute "
                          "loss difference (e.g. 0.0005); default " + DEFAULT_MARGIN.replace("%", "%%"))
    val.add_argument("--alpha", type=T.alpha, default=DEFAULT_ALPHA, help=f"test level (default {DEFAULT_ALPHA})")
    val.add_argument("--out", default="runs/validate", help="run directories of both frameworks, validate.json")
    val.add_argument("--plot", default=None, help="the eval-loss curves PNG (default OUT/eval_curves.png)")
    _data_args(val)


def _add_bench(sub) -> None:
    bench = sub.add_parser("bench", help="training speed side by side: tutorial loop, torch eager, jax step, jax scan")
    _preset_or_spec(bench, DEFAULT_PRESET)
    bench.add_argument("--batch-sizes", type=T.int_list, default=[32, 256], help="comma-separated (default 32,256)")
    bench.add_argument("--epochs", type=T.positive(int), default=5, help="timed epochs per variant (default 5)")
    bench.add_argument("--limit", type=T.positive(int), default=None, help="train on the first N examples only")
    bench.add_argument("--no-loader", action="store_true", help="skip the tutorial DataLoader variant")
    bench.add_argument("--json", default=None, help="also write the full report here")
    bench.add_argument("--markdown", action="store_true", help="print markdown tables (for docs/benchmarks.md)")
    what = bench.add_mutually_exclusive_group()
    what.add_argument("--jax-only", action="store_true",
                      help="ae_jax alone, in this process: scan (precision highest and default) and step, compile "
                           "time (for accelerators)")
    what.add_argument("--sweep", type=T.positive(int), default=None, metavar="M",
                      help="a sweep of M models (vmap) against M sequential runs")
    bench.add_argument("--size", type=T.positive(int), default=None,
                       help="MNIST-shaped data of this many examples (the digits repeated; e.g. 60000), "
                            "with --jax-only or --sweep")
    _data_args(bench)


def _add_parity(sub) -> None:
    par = sub.add_parser("parity", help="forward / loss / gradient / optimizer-step parity table")
    _model_args(par)
    par.add_argument("--precision", choices=("highest", "default"), default="highest",
                     help="matmul precision: highest (the parity setting) or each framework's default (on GPU: "
                          "TF32, to see what it costs)")
    _data_args(par)


def _add_diagnose(sub) -> None:
    diag = sub.add_parser("diagnose", help="where does a Flax port diverge from its torch original? layer by layer")
    diag.add_argument("--torch", required=True, metavar="FILE.py:NAME",
                      help="the torch nn.Module class, or a function returning the model (also module:NAME)")
    diag.add_argument("--flax", required=True, metavar="FILE.py:NAME",
                      help="the flax nnx.Module class, or a function returning the model (also module:NAME); "
                           "called with rngs=nnx.Rngs(0) if it takes rngs and --flax-kwargs has none")
    diag.add_argument("--torch-kwargs", type=T.json_object, default=None, metavar="JSON",
                      help="keyword arguments for the torch class or function, a JSON object: '{\"width\": 64}'")
    diag.add_argument("--flax-kwargs", type=T.json_object, default=None, metavar="JSON",
                      help="keyword arguments for the flax class or function, a JSON object")
    diag.add_argument("--rules", default=None, metavar="FILE.py:NAME",
                      help="conversion rules for your own NNX layer classes, {NNX class: (ParamRule, ...)} "
                           "(ae_jax.convert; also module:NAME), for this comparison only; subclasses inherit them")
    diag.add_argument("--weights", default=None, help="a safetensors state dict loaded into the torch model first")
    diag.add_argument("--batch", choices=("mnist", "random"), default="random",
                      help="MNIST digits (data as for the other commands) or standard normal numbers")
    diag.add_argument("--input-shape", default=None,
                      help="per-example input shape, e.g. 784 or 1,28,28 (default: the torch class's "
                           "`input_shape` attribute, else 784)")
    diag.add_argument("--batch-size", type=T.positive(int), default=16)
    diag.add_argument("--flax-layout", choices=("nchw", "nhwc"), default="nchw",
                      help="nhwc: images go to the flax model channels-last")
    diag.add_argument("--flax-output-layout", choices=("nchw", "nhwc"), default=None,
                      help="the layout of the flax model's image outputs (default: as the modules that made them "
                           "say, else --flax-layout)")
    diag.add_argument("--mode", choices=("eval", "train"), default="eval")
    diag.add_argument("--dtype", choices=DTYPES, default="float64")
    diag.add_argument("--tol", type=T.positive(float), default=None,
                      help="one fixed relative tolerance for every row (default: 1e-10 in float64; float32 judged "
                           "against a float64 reference)")
    diag.add_argument("--noise", type=T.noise, action="append", default=[], metavar="NAME=SHAPE",
                      help="a forward argument both models take, e.g. the VAE's sampling noise: standard normal "
                           "numbers of shape (batch, *SHAPE), seeded (repeatable)")
    diag.add_argument("--json", action="store_true", help="print the report as JSON (for CI)")
    _data_args(diag)

    port = sub.add_parser("port", help="a torch autoencoder as readable Flax NNX source, with its parity certificate")
    port.add_argument("torch", metavar="FILE.py:NAME", help="the torch nn.Module class, or a function returning it")
    port.add_argument("--kwargs", "--torch-kwargs", dest="torch_kwargs", type=T.json_object, default=None,
                      metavar="JSON", help="keyword arguments for the class or function, a JSON object")
    port.add_argument("--out", required=True, help="the NNX source file to write (e.g. model_nnx.py)")
    port.add_argument("--class-name", default=None, help="the generated class's name (default: the torch class's)")
    port.add_argument("--graph-out", default=None, help="also write the model graph (JSON)")
    port.add_argument("--modes", type=lambda s: s.split(","), default=["eval", "train"],
                      help="modes the certificate compares (default eval,train)")
    port.add_argument("--batch", choices=("mnist", "random"), default="mnist",
                      help="the example batch: MNIST digits (data as for the other commands) or standard normals")
    port.add_argument("--input-shape", default=None,
                      help="per-example input shape, e.g. 784 or 1,28,28 (default: the class's `input_shape`, else 784)")
    port.add_argument("--batch-size", type=T.positive(int), default=8)
    _data_args(port)


# command name -> its handler (ae_parity.commands: args -> exit code)
HANDLERS = {
    "demo": commands.demo,
    "train": commands.train,
    "sweep": commands.sweep,
    "validate": commands.validate,
    "bench": commands.bench,
    "parity": commands.parity,
    "diagnose": commands.diagnose,
    "port": commands.port,
    "doctor": commands.doctor,
}


def _add_doctor(sub) -> None:
    doc = sub.add_parser("doctor", help="versions, devices, threads and matmul precision: paste it into a bug report")
    doc.add_argument("--json", action="store_true", help="print the report as JSON")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="ae-parity", description=__doc__.splitlines()[0])
    from .doctor import version_of

    parser.add_argument("--version", action="version", version=f"%(prog)s {version_of('ae-parity')}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for add in (_add_demo, _add_train, _add_sweep, _add_validate, _add_bench, _add_parity, _add_diagnose,
                _add_doctor):  # the --help order
        add(sub)
    debug = "on a failure, print the traceback too (also AE_PARITY_DEBUG=1)"
    parser.add_argument("--debug", action="store_true", help=debug)
    for command in sub.choices.values():  # after the command too; SUPPRESS: not given leaves the top one
        command.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=debug)
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The arguments of one command; argparse errors: SystemExit(2)."""
    args = build_parser().parse_args(argv)
    if getattr(args, "spec", None) is not None:  # --spec FILE: the spec read stands where a preset name would
        args.preset = args.spec
    elif hasattr(args, "preset_default") and args.preset is None:
        args.preset = args.preset_default
    vars(args).pop("preset_default", None)
    return args


def main(argv: list[str] | None = None) -> int:
    """Run one command; its exit code (``ae_parity.exits``: 0 ok, 1 a reported problem, 2 usage, 3 a bug)."""
    args = parse_args(argv)
    try:
        return HANDLERS[args.command](args)
    except KeyboardInterrupt:
        print(f"ae-parity {args.command}: interrupted", file=sys.stderr)
        return exits.INTERRUPTED
    except Exception as e:  # one line each; the traceback only when asked for
        code, message = exits.failure(e, args.command)
        print(message, file=sys.stderr)
        if exits.debug_wanted(args):
            traceback.print_exception(e)
        return code


if __name__ == "__main__":
    sys.exit(main())
