"""Port two published PyTorch autoencoders to Flax NNX with no hand-written Flax code.

The models are written as their tutorials write them: the "convolutional autoencoder" of the common
PyTorch tutorial (named attributes, one MaxPool2d used twice, ConvTranspose2d) and pytorch/examples'
VAE (fc1 / fc21 / fc22 / fc3 / fc4, ``torch.randn_like`` inside the forward). For each:

1. ``port(model, x)`` traces it on a real MNIST batch and gives a native NNX module holding its weights
   under the torch names;
2. ``ae_parity.codegen.source`` writes the same model as readable NNX source, which imports without torch;
3. the parity certificate compares that written class with the torch model: every layer output,
   gradient and one optimizer step, float64 to 1e-10 relative and float32 against a float64 reference.

    python examples/port_automatically.py --out ported/
    ae-parity port examples/port_automatically.py:TutorialConvAE --out conv_nnx.py   # the same, one model
"""

import argparse
import pathlib

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ae_core import mnist
from ae_core.inputs import pixels


class TutorialConvAE(nn.Module):
    input_shape = (1, 28, 28)

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 4, 3, padding=1)
        self.pool = nn.MaxPool2d(2, 2)
        self.t_conv1 = nn.ConvTranspose2d(4, 16, 2, stride=2)
        self.t_conv2 = nn.ConvTranspose2d(16, 1, 2, stride=2)

    def forward(self, x):
        x = F.relu(self.conv1(x))
        x = self.pool(x)
        x = F.relu(self.conv2(x))
        x = self.pool(x)
        x = F.relu(self.t_conv1(x))
        return torch.sigmoid(self.t_conv2(x))


class VAE(nn.Module):
    """pytorch/examples, vae/main.py."""

    input_shape = (784,)

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(784, 400)
        self.fc21 = nn.Linear(400, 20)
        self.fc22 = nn.Linear(400, 20)
        self.fc3 = nn.Linear(20, 400)
        self.fc4 = nn.Linear(400, 784)

    def encode(self, x):
        h1 = F.relu(self.fc1(x))
        return self.fc21(h1), self.fc22(h1)

    def reparameterize(self, mu, logvar):
        std = torch.exp(0.5 * logvar)
        eps = torch.randn_like(std)
        return mu + eps * std

    def decode(self, z):
        h3 = F.relu(self.fc3(z))
        return torch.sigmoid(self.fc4(h3))

    def forward(self, x):
        mu, logvar = self.encode(x.view(-1, 784))
        z = self.reparameterize(mu, logvar)
        return self.decode(z), mu, logvar


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="auto", choices=mnist.SOURCES)
    parser.add_argument("--out", default="ported", help="directory for the generated NNX sources")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--modes", default="eval,train", help="modes the certificate compares")
    parser.add_argument("--dtypes", default="float64,float32", help="dtypes the certificate compares")
    args = parser.parse_args(argv)

    from ae_jax.numerics import enable_x64, jnp_dtype
    from ae_parity.codegen import source
    from ae_parity.port import certificate, certificate_table, load_source, port

    enable_x64()
    digits = pixels(mnist.load("test", args.data).images[:args.batch_size], "float64")
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for cls in (TutorialConvAE, VAE):
        torch.manual_seed(0)
        model = cls().double()  # torch's own initialisation; the port takes whatever weights it has
        x = digits.reshape(len(digits), *cls.input_shape)
        ported = port(model.eval(), torch.from_numpy(x))  # 1. a native NNX module with the torch weights
        path = out / f"{cls.__name__.lower()}_nnx.py"  # 2. the same model as source
        path.write_text(source(ported.graph, origin=f"examples/port_automatically.py:{cls.__name__}"))
        written = load_source(path, cls.__name__)
        print(f"{cls.__name__}: {len(ported.graph.modules)} layers -> {path} "
              f"(noise: {ported.graph.noise_shapes() or 'none'})")
        rows, notes = certificate(model, x, make_flax=lambda dtype, cls=written: cls(dtype=jnp_dtype(dtype)),  # 3.
                                  modes=tuple(args.modes.split(",")), dtypes=tuple(args.dtypes.split(",")))
        print(certificate_table(rows, notes))
        if not all(r.ok for _, _, r in rows):
            return 1
        if cls is TutorialConvAE:  # the port itself, on the digits: the torch model's reconstructions
            with torch.no_grad():
                expected = model(torch.from_numpy(x)).numpy()
            print(f"reconstructions of {len(x)} digits: max |port - torch| = "
                  f"{np.abs(np.asarray(ported(x)) - expected).max():.1e} (float64)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
