"""The measured reasons behind the presets still below issue 17's target on this CPU (lstm, the denoising
presets at batch 256), in one process:

1. One ``nn.LSTM(64, 64)`` layer over 28 steps (the lstm preset's decoder LSTM), forward and
   forward+backward, ae_jax (``ae_jax.recurrent.LSTM``, jitted) against torch's own LSTM, and a bare
   28-step ``lax.scan`` of the recurrence's one GEMM: what a while-loop iteration costs on XLA:CPU.
2. ``lax.scan(..., unroll=k)`` of the lstm preset's recurrences, whole Adam epochs (``Trainer``).
3. The denoising presets' epoch noise: drawn on the host by ``ae_core.noise.epoch_noise`` (both
   frameworks consume the same draws) and moved to the device.

    python docs/measure/remaining_gaps.py
"""

from __future__ import annotations

import functools
import time

import jax
import jax.numpy as jnp
import numpy as np
import torch
from flax import nnx

import ae_jax.recurrent as recurrent
from ae_core import get_model
from ae_core.noise import epoch_noise
from ae_core.training import TrainConfig
from ae_jax.train import Trainer


def median_ms(f, n: int = 7) -> float:
    f()
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        f()
        times.append(time.perf_counter() - t0)
    return 1000 * float(np.median(times))


def lstm_layer(bs: int) -> None:
    x = np.random.default_rng(0).random((bs, 28, 64), dtype=np.float32)
    graphdef, params = nnx.split(recurrent.LSTM(64, 64, dtype=jnp.float32, rngs=nnx.Rngs(0)))

    def loss(p, x):
        return jnp.sum(nnx.merge(graphdef, p)(x) ** 2)

    fwd, fwd_bwd, xj = jax.jit(loss), jax.jit(jax.grad(loss, argnums=(0, 1))), jnp.asarray(x)
    j_fw = median_ms(lambda: jax.block_until_ready(fwd(params, xj)))
    j_fb = median_ms(lambda: jax.block_until_ready(fwd_bwd(params, xj)))
    layer, xt = torch.nn.LSTM(64, 64, batch_first=True), torch.tensor(x, requires_grad=True)

    def t_fwd():
        with torch.no_grad():
            layer(xt)

    def t_fwd_bwd():
        (layer(xt)[0] ** 2).sum().backward()

    t_fw, t_fb = median_ms(t_fwd), median_ms(t_fwd_bwd)
    k = jnp.asarray(np.random.default_rng(1).random((64, 256), dtype=np.float32))
    loop = jax.jit(lambda h: jax.lax.scan(lambda h, _: (jnp.tanh((h @ k)[:, :64]), None), h, None, length=28)[0])
    g = median_ms(lambda: jax.block_until_ready(loop(jnp.zeros((bs, 64), jnp.float32))))
    print(f"LSTM(64, 64), 28 steps, batch {bs}: ae_jax fwd {j_fw:.2f} ms, fwd+bwd {j_fb:.2f} ms | torch fwd "
          f"{t_fw:.2f} ms, fwd+bwd {t_fb:.2f} ms | ae_jax / torch fwd+bwd {j_fb / t_fb:.2f}x | a bare 28-step scan "
          f"of the (b,64)x(64,256) GEMM: {g:.2f} ms ({1000 * g / 28:.0f} us per iteration)", flush=True)


def lstm_unroll(unroll, bs: int) -> None:
    plain = recurrent._scan

    @functools.partial(jax.jit, static_argnums=0)
    def unrolled(step, carry, proj, k_hh, b_hh):
        return jax.lax.scan(functools.partial(step, k_hh, b_hh), carry, proj, unroll=unroll)

    recurrent._scan = unrolled
    try:
        x = np.random.default_rng(0).random((4000, 28, 28), dtype=np.float32)
        trainer = Trainer("lstm", TrainConfig(batch_size=bs), x, mode="scan")
        t0 = time.perf_counter()
        trainer.train_epoch(0)
        first = time.perf_counter() - t0
        epochs = [median_ms(lambda e=e: trainer.train_epoch(e), 1) for e in range(1, 4)]
    finally:
        recurrent._scan = plain
    print(f"lstm scan epoch, batch {bs}, unroll={unroll}: first epoch (compile) {first:.1f} s, then "
          f"{', '.join(f'{t:.0f}' for t in epochs)} ms", flush=True)


def denoise_noise(name: str, bs: int) -> None:
    spec, steps = get_model(name), 4000 // bs
    draw = median_ms(lambda: epoch_noise(spec, 0, 1, steps, bs, "float32"), 5)
    noise = epoch_noise(spec, 0, 1, steps, bs, "float32")
    put = median_ms(lambda: jax.block_until_ready(jax.device_put(noise)), 5)
    mb = sum(v.nbytes for v in noise.values()) / 1e6
    print(f"{name}, batch {bs}: the epoch's noise is {mb:.1f} MB, drawn on the host in {draw:.1f} ms, "
          f"placed on the device in {put:.1f} ms", flush=True)


if __name__ == "__main__":
    torch.set_num_threads(2)
    for bs in (32, 256):
        lstm_layer(bs)
    for unroll in (1, 4, True):
        lstm_unroll(unroll, 32)
    for name in ("denoise", "denoise_mask"):
        for bs in (32, 256):
            denoise_noise(name, bs)
