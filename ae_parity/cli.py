"""``ae-parity``: the command line.

Bad arguments print a clear message and exit with code 2; data/checkpoint problems exit with 1.
"""

from __future__ import annotations

import argparse
import sys

from ae_core import DTYPES, PRESETS, DEFAULT_PRESET
from ae_core.mnist import SOURCES


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse already exits 2; make the message name the command
        self.print_usage(sys.stderr)
        self.exit(2, f"{self.prog}: error: {message}\n")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", choices=SOURCES, default="auto",
                   help="MNIST source: full (download if absent), sample (offline 5k digits), auto (default)")
    p.add_argument("--data-dir", default=None, help="data folder (default: $AE_PARITY_DATA or ./data)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="ae-parity", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    demo = sub.add_parser("demo", help="build a preset in both frameworks from the same weights; print parity")
    demo.add_argument("--preset", choices=sorted(PRESETS), default=DEFAULT_PRESET)
    demo.add_argument("--batch-size", type=_positive_int, default=64)
    demo.add_argument("--seed", type=int, default=0)
    _data_args(demo)

    par = sub.add_parser("parity", help="forward / loss / gradient parity table for a preset and dtype")
    par.add_argument("--preset", choices=sorted(PRESETS), default=DEFAULT_PRESET)
    par.add_argument("--dtype", choices=DTYPES, default="float32")
    par.add_argument("--batch-size", type=_positive_int, default=64)
    par.add_argument("--seed", type=int, default=0)
    _data_args(par)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from ae_core.mnist import MnistFileError, MnistUnavailableError
    from ae_core.weights import CheckpointError, StateDictError

    try:
        if args.command == "demo":
            from .demo import run_demo

            return run_demo(args)
        if args.command == "parity":
            from .demo import run_parity

            return run_parity(args, dtypes=[args.dtype])
    except (MnistFileError, MnistUnavailableError, CheckpointError, StateDictError) as e:
        print(f"ae-parity: error: {e}", file=sys.stderr)
        return 1
    except ValueError as e:  # an argument that parses but cannot work (e.g. batch larger than the data)
        print(f"ae-parity {args.command}: error: {e}", file=sys.stderr)
        return 2
    raise AssertionError(args.command)


if __name__ == "__main__":
    sys.exit(main())
