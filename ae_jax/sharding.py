"""Many devices and many hosts, with JAX's own machinery (``jax.sharding`` + ``jax.distributed``).

Data parallelism is a *layout*, not a different program: the train step is the same global-view
function as on one device, jit-compiled over a ``Mesh`` with one axis, ``"data"``. Parameters,
optimizer state, the device-resident dataset and the epoch's batch indices are replicated on every
device; inside the step the gathered batch is constrained to ``P("data")`` (each device keeps its slice
of the batch, no communication), and XLA's SPMD partitioner inserts the all-reduce that the batch mean
in the loss implies -- gradients, BatchNorm batch statistics and the loss value are reduced by XLA,
never by hand. Results equal single-device training up to the order of floating-point additions
(measured: float64 <= 1e-15 per step, docs/training.md).

Multi-host ("multi-controller"): every process runs this same program; :func:`initialize` starts
``jax.distributed`` (explicit coordinator / process count / process id, or the cluster's environment:
Cloud TPU, Slurm, Open MPI, Kubernetes), after which ``jax.devices()`` lists every device of every
process and the mesh spans them all. Arrays are built with ``jax.make_array_from_callback`` so each
process places only its own shards; replicated results are readable on every process.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from ae_core.errors import UsageError

DATA_AXIS = "data"


class DistributedError(RuntimeError):
    """``jax.distributed`` did not start (coordinator unreachable, timeout, JAX already running)."""


def initialize(coordinator: str | None = None, num_processes: int | None = None, process_id: int | None = None,
               *, auto: bool = False, local_device_ids: Sequence[int] | None = None,
               timeout_s: int = 300) -> bool:
    """Start ``jax.distributed`` once, before any JAX computation. Returns whether it was started.

    - explicit: ``coordinator="host:port"`` (process 0's address), ``num_processes`` and ``process_id``,
      all three or none;
    - ``auto=True``: let JAX read them from the cluster (Cloud TPU pod slices, Slurm ``srun``, Open MPI
      ``mpirun``, Kubernetes, or the ``JAX_COORDINATOR_ADDRESS`` variable);
    - neither: a single process; nothing is started.

    A process that cannot reach the coordinator within ``timeout_s`` is terminated by JAX's own
    coordination client (it aborts the process; there is no Python exception to catch), so a wrong
    address fails loudly, not silently.
    """
    given = {"coordinator": coordinator, "num_processes": num_processes, "process_id": process_id}
    if any(v is not None for v in given.values()) and not all(v is not None for v in given.values()):
        missing = ", ".join(f"--{k.replace('_', '-')}" for k, v in given.items() if v is None)
        raise UsageError(f"multi-host needs --coordinator, --num-processes and --process-id together; "
                               f"missing {missing}")
    if coordinator is None and not auto:
        return False
    if coordinator is not None:
        host, sep, port = coordinator.rpartition(":")
        if not sep or not host or not port.isdigit():
            raise UsageError(f"--coordinator {coordinator!r}: expected HOST:PORT (process 0's address)")
        if num_processes < 1:
            raise UsageError(f"--num-processes must be >= 1, got {num_processes}")
        if not 0 <= process_id < num_processes:
            raise UsageError(f"--process-id must be in [0, {num_processes}), got {process_id}")
    if jax.distributed.is_initialized():
        return True
    kwargs = {"initialization_timeout": timeout_s}
    if local_device_ids is not None:
        kwargs["local_device_ids"] = list(local_device_ids)
    try:
        jax.distributed.initialize(coordinator, num_processes, process_id, **kwargs)
    except (RuntimeError, ValueError) as e:
        hint = ("; --distributed found no cluster to join (Cloud TPU, Slurm, Open MPI, Kubernetes or "
                "JAX_COORDINATOR_ADDRESS): pass --coordinator, --num-processes and --process-id instead"
                if coordinator is None else "")
        raise DistributedError(f"jax.distributed.initialize failed: {e}{hint}") from e
    return True


def is_main_process() -> bool:
    """Process 0 of a multi-host run (always True in a single process): the one that writes files."""
    return jax.process_index() == 0


def resolve_devices(devices) -> list[jax.Device]:
    """``"all"`` (every device of every process), a count ``N`` (the first N; single process only), or a
    list of devices."""
    every = jax.devices()
    if isinstance(devices, str):
        if devices == "all":
            return every
        if devices.isdigit():
            devices = int(devices)
        else:
            raise UsageError(f"devices {devices!r}: expected 'all', a count or a list of devices")
    if isinstance(devices, int):
        if not 1 <= devices <= len(every):
            raise UsageError(f"asked for {devices} devices; this {'job' if jax.process_count() > 1 else 'machine'} "
                             f"has {len(every)} ({every[0].platform})")
        if jax.process_count() > 1 and devices != len(every):
            raise UsageError(f"a multi-host run uses every device (--devices all); asked for {devices} of "
                             f"{len(every)}")
        return every[:devices]
    devices = list(devices)
    if not devices:
        raise ValueError("an empty list of devices")
    return devices


def data_mesh(devices="all", axis: str = DATA_AXIS) -> Mesh:
    """A 1-D mesh over ``devices`` with one axis: ``"data"`` (a batch split over devices), or another name
    (a sweep splits its models over ``"models"``)."""
    return Mesh(np.array(resolve_devices(devices)), (axis,))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def leading_split(mesh: Mesh) -> NamedSharding:
    """The leading axis (a batch's examples, a sweep's models) split over the 1-D mesh's axis."""
    (axis,) = mesh.axis_names
    return NamedSharding(mesh, P(axis))


def put(tree, sharding: NamedSharding):
    """Every leaf of ``tree`` (host or device arrays, the same on every process) as a global array laid
    out by ``sharding``; each process places only the shards its own devices hold."""

    def one(a):
        host = np.asarray(a)
        return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])

    return jax.tree.map(one, tree)


def check_divisible(count: int, mesh: Mesh, what: str = "batch size {}") -> None:
    """``count`` things (the batch's examples, a sweep's models) must split evenly over the mesh's devices;
    ``what`` names them in the error, ``{}`` standing for the count."""
    n = mesh.devices.size
    if count % n:
        raise UsageError(f"{what.format(count)} does not split evenly over {n} devices; use a multiple of {n}")


def environment_summary() -> str:
    """One line: processes, devices, and the variables a cluster launcher set (for logs)."""
    launcher = [k for k in ("SLURM_JOB_ID", "OMPI_COMM_WORLD_SIZE", "TPU_WORKER_HOSTNAMES", "JAX_COORDINATOR_ADDRESS")
                if k in os.environ]
    return (f"process {jax.process_index()}/{jax.process_count()}, {jax.local_device_count()} local of "
            f"{jax.device_count()} devices ({jax.devices()[0].platform})"
            + (f", launcher env: {', '.join(launcher)}" if launcher else ""))
