"""``ae-parity doctor``: what a bug report about a parity difference needs first -- the versions of every
package involved, the devices JAX sees, thread counts and matmul precision of both frameworks.

Works with either framework (or both) missing and without a GPU: a package that is not installed, or that
fails to import, is reported as such, never raised.
"""

from __future__ import annotations

import json
import os
import platform
import sys
from importlib.metadata import PackageNotFoundError, version

PACKAGES = ("ae-parity", "jax", "jaxlib", "flax", "optax", "torch", "torchvision", "numpy", "safetensors")
EXTRAS = ("matplotlib", "tqdm", "tensorboard", "mlxtend")
ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "XLA_FLAGS", "JAX_PLATFORMS", "JAX_ENABLE_X64",
       "JAX_DEFAULT_MATMUL_PRECISION", "CUDA_VISIBLE_DEVICES", "AE_PARITY_DATA", "AE_PARITY_OFFLINE")
MISSING = "not installed"


def version_of(name: str) -> str:
    """An installed distribution's version, or "not installed"."""
    try:
        return version(name)
    except PackageNotFoundError:
        return MISSING


def _problem(e: BaseException) -> str:
    return f"unavailable ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"


def _import_failure(name: str, e: Exception) -> dict:
    """A framework that does not import: not installed, or installed and broken (the error, in one line)."""
    return {"status": MISSING if version_of(name) == MISSING else _problem(e)}


def _jax() -> dict:
    try:
        import jax
    except Exception as e:  # any import failure is the report, not a crash
        return _import_failure("jax", e)
    try:
        devices = [f"{d.platform}:{d.id} {d.device_kind}" for d in jax.devices()]
        backend = jax.default_backend()
    except Exception as e:  # e.g. a broken accelerator plugin: still report the rest
        devices, backend = [_problem(e)], "unknown"
    return {"status": "ok", "default_backend": backend, "devices": devices,
            "default_matmul_precision": str(jax.config.jax_default_matmul_precision or "default (backend's)"),
            # XLA:CPU runs its intra-op work on one thread per usable CPU (cpus_usable above) unless XLA_FLAGS
            # says otherwise (environment below)
            "x64_enabled": bool(jax.config.jax_enable_x64)}


def _torch() -> dict:
    try:
        import torch
    except Exception as e:  # any import failure is the report, not a crash
        return _import_failure("torch", e)
    cuda = torch.cuda.is_available()
    return {"status": "ok", "threads": torch.get_num_threads(), "interop_threads": torch.get_num_interop_threads(),
            "float32_matmul_precision": torch.get_float32_matmul_precision(),
            "cuda_available": cuda, "cuda_devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
            if cuda else [], "cuda_matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
            "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32, "mkldnn": torch.backends.mkldnn.is_available()}


def _blas() -> list[str]:
    """The native thread pools loaded in this process (BLAS, OpenMP) and their thread counts (threadpoolctl,
    where installed: a dependency of the extras)."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return ["unknown (threadpoolctl not installed)"]
    return [f"{p.get('internal_api')} {p.get('version') or ''} ({p.get('prefix')}): {p.get('num_threads')} threads"
            for p in threadpool_info()]


def report() -> dict:
    """Everything ``doctor`` prints, as a dict."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count()
    return {"python": sys.version.split()[0], "platform": platform.platform(), "machine": platform.machine(),
            "cpus_usable": cpus, "packages": {name: version_of(name) for name in PACKAGES},
            "optional": {name: version_of(name) for name in EXTRAS},
            "environment": {k: os.environ[k] for k in ENV if k in os.environ},
            "jax": _jax(), "torch": _torch(), "thread_pools": _blas()}


def render(r: dict) -> str:
    lines = [f"python {r['python']} on {r['platform']} ({r['machine']}), {r['cpus_usable']} usable CPUs", "packages:"]
    lines += [f"  {k:<12} {v}" for k, v in r["packages"].items()]
    lines += ["optional (extras):"] + [f"  {k:<12} {v}" for k, v in r["optional"].items()]
    for framework in ("jax", "torch"):
        info = dict(r[framework])
        status = info.pop("status")
        lines.append(f"{framework}: {status}")
        lines += [f"  {k:<26} {', '.join(map(str, v)) if isinstance(v, list) else v}" for k, v in info.items()]
    lines.append("native thread pools (after importing both): " + ("; ".join(r["thread_pools"]) or "none loaded"))
    missing = [k for k, v in r["packages"].items() if v == MISSING and k != "ae-parity"]
    missing += [k for k in ("jax", "torch") if r[k]["status"] not in ("ok", MISSING)]
    if missing:
        lines.append(f"missing: {', '.join(missing)} -- commands that need them say so; install with "
                     "pip install 'ae-parity[all]'")
    lines.append("environment: " + (", ".join(f"{k}={v}" for k, v in r["environment"].items()) or "(none of "
                                    + ", ".join(ENV[:4]) + ", ... set)"))
    return "\n".join(lines)


def doctor(as_json: bool = False) -> str:
    r = report()
    return json.dumps(r, indent=2) if as_json else render(r)
