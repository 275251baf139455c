"""``ae-parity bench``: training speed, one module per mode, one report type.

- :func:`run_bench` (``side_by_side.py``): torch and JAX variants side by side, each framework in its own
  worker process;
- :func:`run_jax_bench` (``jax_only.py``): ae_jax alone, in this process (for accelerators);
- :func:`run_sweep_bench` (``sweep.py``): a sweep of M models against M sequential runs.

Each returns a :class:`BenchReport` (``report.py``): its text table per batch, ``markdown()`` (the
tables of docs/benchmarks.md), ``to_dict()`` / ``save(path)`` (JSON). ``common.py`` holds the timing
loop, the compile-time and FLOP helpers the three share.
"""

from __future__ import annotations

from ae_core import UsageError

from .common import gemm_only_ms, matmul_flops_per_example, measured_matmul_gflops, sized
from .jax_only import run_jax_bench
from .report import BenchReport
from .side_by_side import run_bench
from .sweep import run_sweep_bench

__all__ = ["BenchReport", "command", "gemm_only_ms", "matmul_flops_per_example", "measured_matmul_gflops",
           "run_bench", "run_jax_bench", "run_sweep_bench", "sized"]


def run_from_args(args) -> BenchReport:
    """The bench mode the ``ae-parity bench`` arguments ask for."""
    common = dict(source=args.data, data_dir=args.data_dir, limit=args.limit)
    if args.sweep:
        return run_sweep_bench(args.preset, args.sweep, args.batch_sizes, args.epochs, size=args.size, **common)
    if args.jax_only:
        return run_jax_bench(args.preset, args.batch_sizes, args.epochs, size=args.size, **common)
    if args.size is not None:
        raise UsageError("--size is for --jax-only and --sweep (the side-by-side bench reads the files)")
    return run_bench(args.preset, args.batch_sizes, args.epochs, include_loader=not args.no_loader, **common)


def command(args) -> int:
    """``ae-parity bench``: run the mode, write ``--json``, print ``--markdown``."""
    report = run_from_args(args)
    if args.json:
        report.save(args.json)
    if args.markdown:
        print("\n" + report.markdown())
    return 0
