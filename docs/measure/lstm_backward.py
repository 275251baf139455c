"""An LSTM recurrence with a hand-written backward (``jax.custom_vjp``: the reverse scan computes only the
gate gradients and the hidden state's, the recurrent weight's gradient is one GEMM over all steps after
the loop) against JAX's own autodiff of ``lax.scan``: exactness (float64 and float32) and fwd+bwd time.
Measured for issue 17 and not adopted (no gain on XLA:CPU; docs/benchmarks.md).

    python docs/measure/lstm_backward.py
"""
import time, functools, numpy as np, jax, jax.numpy as jnp
jax.config.update("jax_enable_x64", True)
def step(k, b, carry, xp):
    h, c = carry
    i, f, g, o = jnp.split(xp + (h @ k + b), 4, axis=-1)
    c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
    h = jax.nn.sigmoid(o) * jnp.tanh(c)
    return (h, c), h
def plain(proj, h0, c0, k, b):
    (h, c), hs = jax.lax.scan(functools.partial(step, k, b), (h0, c0), proj)
    return hs, h, c

@jax.custom_vjp
def fused(proj, h0, c0, k, b):
    return _fwd(proj, h0, c0, k, b)[0]
def _fwd(proj, h0, c0, k, b):
    def body(carry, xp):
        h, c = carry
        i, f, g, o = jnp.split(xp + (h @ k + b), 4, axis=-1)
        i, f, g, o = jax.nn.sigmoid(i), jax.nn.sigmoid(f), jnp.tanh(g), jax.nn.sigmoid(o)
        c2 = f * c + i * g
        tc = jnp.tanh(c2)
        h2 = o * tc
        return (h2, c2), (h2, jnp.concatenate([i, f, g, o], -1), c, tc)
    (h, c), (hs, acts, cprev, tcs) = jax.lax.scan(body, (h0, c0), proj)
    hprev = jnp.concatenate([h0[None], hs[:-1]], 0)
    return (hs, h, c), (acts, cprev, tcs, hprev, k)
def _bwd(res, cot):
    acts, cprev, tcs, hprev, k = res
    dhs, dhT, dcT = cot
    kt = k.T
    def body(carry, xs):
        dh, dc = carry
        dh_out, a, cp, tc = xs
        i, f, g, o = jnp.split(a, 4, axis=-1)
        dh = dh + dh_out
        do = dh * tc
        dc = dc + dh * o * (1 - tc * tc)
        di, df, dg, dcp = dc * g, dc * cp, dc * i, dc * f
        dz = jnp.concatenate([di * i * (1 - i), df * f * (1 - f), dg * (1 - g * g), do * o * (1 - o)], -1)
        return (dz @ kt, dcp), dz
    (dh0, dc0), dzs = jax.lax.scan(body, (dhT, dcT), (dhs, acts, cprev, tcs), reverse=True)
    dk = jnp.einsum("tnh,tng->hg", hprev, dzs)
    db = dzs.sum((0, 1))
    return dzs, dh0, dc0, dk, db
fused.defvjp(lambda *a: _fwd(*a), _bwd)

def loss(f, proj, h0, c0, k, b):
    hs, h, c = f(proj, h0, c0, k, b)
    return jnp.sum(jnp.sin(hs)) + jnp.sum(h * 0.3) + jnp.sum(c ** 2)
for dt in (jnp.float64, jnp.float32):
  for N in (32, 256):
    r = np.random.default_rng(0)
    T, H = 28, 64
    args = [jnp.asarray(r.standard_normal(s) * 0.5, dt) for s in [(T, N, 4 * H), (N, H), (N, H), (H, 4 * H), (4 * H,)]]
    gp = jax.jit(jax.value_and_grad(functools.partial(loss, plain), argnums=(0, 1, 2, 3, 4)))
    gf = jax.jit(jax.value_and_grad(functools.partial(loss, fused), argnums=(0, 1, 2, 3, 4)))
    vp, Gp = gp(*args); vf, Gf = gf(*args)
    err = max(float(jnp.max(jnp.abs(a - b)) / (jnp.max(jnp.abs(a)) + 1e-300)) for a, b in zip(Gp, Gf))
    def tm(f, args=args):
        jax.block_until_ready(f(*args)); ts = []
        for _ in range(9):
            t0 = time.perf_counter(); jax.block_until_ready(f(*args)); ts.append(time.perf_counter() - t0)
        return 1000 * np.median(ts)
    print(f"{dt.__name__} N={N}: value diff {abs(float(vp - vf)):.1e}, grads max rel {err:.1e}; plain {tm(gp):.2f} ms, fused {tm(gf):.2f} ms", flush=True)
