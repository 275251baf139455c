"""Train the MNIST autoencoder in PyTorch, the way the tutorials do -- on top of ae_torch.

    python examples/train_torch.py --epochs 10
"""

import argparse

import torch
import torchvision.transforms as T

import ae_torch
from ae_core import epoch_batches
from ae_torch.data import mnist_dataset


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="mlp9")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--limit", type=int, default=None, help="use only the first N training digits")
    p.add_argument("--data", default="auto")
    p.add_argument("--out", default="torch_ae.safetensors")
    args = p.parse_args(argv)

    # The dataset, exactly as in the tutorials: torchvision MNIST + ToTensor, flattened to 784 pixels.
    dataset = mnist_dataset("train", args.data, transform=T.Compose([T.ToTensor(), torch.flatten]))
    if args.limit:
        dataset = torch.utils.data.Subset(dataset, range(args.limit))
    model = ae_torch.build(args.preset, seed=0)  # PyTorch's default init, drawn framework-free (seed 0)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    loss_fn = torch.nn.MSELoss()

    for epoch in range(args.epochs):
        # the same shuffled batches ae_jax would see for this seed and epoch
        batches = epoch_batches(seed=0, epoch=epoch, n=len(dataset), batch_size=args.batch_size).tolist()
        loader = torch.utils.data.DataLoader(dataset, batch_sampler=batches)
        total = 0.0
        for images, _ in loader:
            reconstructed = model(images)
            loss = loss_fn(reconstructed, images)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.item()
        print(f"epoch {epoch + 1}: loss {total / len(loader):.5f}")

    ae_torch.save_weights(model, args.out)  # safetensors, torch names: ae_jax.load_weights reads it
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
