"""What every bench mode shares: the round-robin timing loop, the wall-clock wrapper, the ahead-of-time
compile time, the FLOP count and the machine's matmul rate, MNIST-shaped data of any size, machine info.

Timing methodology (all modes): epochs are timed round-robin (variant A epoch k, variant B epoch k, ...;
only one variant computes at a time) so that load on a shared machine hits every variant alike; the
median epoch is reported, after one untimed warm-up epoch (which includes JAX compilation). Compile
time is measured separately, ahead of time (``trainer.lower().compile()``).
"""

from __future__ import annotations

import platform
import time

import numpy as np

from ae_core.optim import OptimizerConfig
from ae_core.layers import Linear
from ae_core.training import TrainConfig


def bench_config(epochs: int, batch_size: int, spec=None) -> TrainConfig:
    """The training config every bench variant uses: float32, Adam, ``epochs`` timed epochs + the warm-up,
    and ``spec``'s own loss (the VAE's negative ELBO; mse otherwise)."""
    from ae_core.training import default_loss

    return TrainConfig(epochs=epochs + 1, batch_size=batch_size, optimizer=OptimizerConfig("adam"),
                       loss="mse" if spec is None else default_loss(spec), dtype="float32")


def matmul_flops_per_example(spec) -> int:
    """Forward + backward matmul/convolution FLOPs per example: 2 FLOPs per multiply-accumulate of the
    forward, the weight gradient and the input gradient of every layer with weights, except the first
    layer's input gradient (nothing needs it)."""
    macs = [layer.macs(shape) for layer, shape in spec.layer_input_shapes() if hasattr(layer, "macs")]
    return 2 * (3 * sum(macs) - macs[0])


def measured_matmul_gflops(n: int = 2048, repeats: int = 5) -> float:
    """float32 GFLOP/s of a large square matmul under XLA (the machine's practical peak), at the matmul
    precision of the caller's context."""
    import jax
    import jax.numpy as jnp

    a = jnp.asarray(np.random.default_rng(0).standard_normal((n, n)), jnp.float32)
    f = jax.jit(lambda a: a @ a)
    f(a).block_until_ready()
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        f(a).block_until_ready()
        best = min(best, time.perf_counter() - t)
    return 2 * n ** 3 / best / 1e9


def gemm_only_ms(spec, batch_size: int, steps: int, repeats: int = 5) -> float | None:
    """Time of an epoch that does nothing but the model's matmuls at their real shapes (forward, weight
    gradient, input gradient), as one compiled scan -- what XLA's GEMMs alone cost on this machine.
    None for models with convolutions (their GEMMs are not plain matmuls)."""
    if spec.has("conv2d", "conv_transpose2d"):
        return None
    import jax
    import jax.numpy as jnp

    linears = [l for l in (*spec.encoder, *spec.decoder) if isinstance(l, Linear)]
    rng = np.random.default_rng(0)
    ws = [jnp.asarray(rng.standard_normal((l.in_features, l.out_features)) * 0.01, jnp.float32) for l in linears]
    xs = [jnp.asarray(rng.standard_normal((batch_size, l.in_features)), jnp.float32) for l in linears]
    dys = [jnp.asarray(rng.standard_normal((batch_size, l.out_features)), jnp.float32) for l in linears]

    @jax.jit
    def epoch(ws, xs, dys):
        def body(acc, _):
            total = acc
            for i, (w, x, dy) in enumerate(zip(ws, xs, dys)):
                x = x + total * 1e-30  # a data dependency so no iteration is hoisted or dropped
                total = total + jnp.sum(x @ w) + jnp.sum(x.T @ dy)
                if i:  # the first layer's input gradient is never needed
                    total = total + jnp.sum(dy @ w.T)
            return total, None

        return jax.lax.scan(body, jnp.float32(0), None, length=steps)[0]

    epoch(ws, xs, dys).block_until_ready()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        epoch(ws, xs, dys).block_until_ready()
        times.append(time.perf_counter() - t)
    return 1e3 * float(np.median(times))


def round_robin(epoch_seconds: dict, epochs: int) -> dict[str, float]:
    """Median seconds per epoch of each variant, epochs round-robin (variant A epoch k, variant B epoch k,
    ...) after one untimed warm-up epoch (which compiles); ``epoch_seconds[name](epoch)`` runs one epoch
    and returns its seconds."""
    times = {name: [] for name in epoch_seconds}
    for epoch in range(epochs + 1):
        for name, run in epoch_seconds.items():
            seconds = run(epoch)
            if epoch:
                times[name].append(seconds)
    return {name: float(np.median(ts)) for name, ts in times.items()}


def wall(fn):
    """``fn(epoch)`` (which returns once the epoch's results are on the host) as a function returning its
    wall-clock seconds."""

    def run(epoch):
        t = time.perf_counter()
        fn(epoch)
        return time.perf_counter() - t

    return run


def compile_seconds(trainer) -> float:
    """Ahead-of-time compile time of the whole-epoch program of an ``ae_jax`` ``Trainer`` or ``SweepTrainer``
    (whose epoch also takes the per-model learning rates)."""
    lowered = trainer.lower()
    t = time.perf_counter()
    lowered.compile()
    return time.perf_counter() - t


def sized(x: np.ndarray, size: int | None) -> np.ndarray:
    """``x`` with ``size`` rows: the digits repeated (or cut) -- MNIST-shaped data of any size, e.g. the
    full 60,000 x 784 for timings on a machine that holds only the offline sample."""
    return x if size is None else np.resize(x, (size, *x.shape[1:]))


def host_machine() -> dict:
    """The host, without importing either framework (the side-by-side bench's parent process)."""
    return {"platform": platform.platform(), "processor": platform.processor()}


def jax_machine() -> dict:
    """The host and JAX's devices (the JAX-only and sweep benches, which run JAX in this process)."""
    import jax

    return {"platform": platform.platform(), "jax": jax.__version__, "devices": [str(d) for d in jax.devices()],
            "device_kind": jax.devices()[0].device_kind}
