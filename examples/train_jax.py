"""Train the same autoencoder in JAX: a jit-compiled train step, then a whole epoch in one lax.scan.

    python examples/train_jax.py --epochs 10
"""

import argparse
import time

import jax
import jax.numpy as jnp
import optax
from flax import nnx

import ae_jax
from ae_core import epoch_batches, get_spec, mnist, model_inputs


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="mlp9")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--limit", type=int, default=None, help="use only the first N training digits")
    p.add_argument("--data", default="auto")
    p.add_argument("--out", default="jax_ae.safetensors")
    args = p.parse_args(argv)

    spec = get_spec(args.preset)
    digits = mnist.load("train", args.data)
    x = jnp.asarray(model_inputs(spec, digits.images[: args.limit]))  # the whole dataset, on the device
    model = ae_jax.build(spec, seed=0)  # the same initial weights as examples/train_torch.py
    tx = optax.adam(args.lr)

    # Split the module once into a static graph and arrays; the hot loop is a pure function of arrays.
    graphdef, params = nnx.split(model)
    opt_state = tx.init(params)

    def loss_fn(params, batch):
        reconstructed = nnx.merge(graphdef, params)(batch)
        return jnp.mean((reconstructed - batch) ** 2)  # nn.MSELoss(), not optax.l2_loss (0.5x)

    def train_step(carry, idx):
        params, opt_state = carry
        loss, grads = jax.value_and_grad(loss_fn)(params, x[idx])  # batch gathered on the device
        updates, opt_state = tx.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), loss

    @jax.jit
    def train_epoch(params, opt_state, batches):  # one compiled program per epoch
        (params, opt_state), losses = jax.lax.scan(train_step, (params, opt_state), batches)
        return params, opt_state, losses

    for epoch in range(args.epochs):
        batches = epoch_batches(seed=0, epoch=epoch, n=len(x), batch_size=args.batch_size)
        t = time.perf_counter()
        params, opt_state, losses = train_epoch(params, opt_state, batches)
        print(f"epoch {epoch + 1}: loss {float(losses.mean()):.5f} ({time.perf_counter() - t:.3f}s)")

    nnx.update(model, params)
    ae_jax.save_weights(model, args.out)  # torch names and layout: ae_torch.load_weights reads it
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
