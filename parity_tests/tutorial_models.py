"""Autoencoders written the way the tutorials write them, by hand, independent of ae_core's specs.

If a state_dict saved by one of these loads strictly into the matching preset (both frameworks) and
gives the same outputs, the preset's names, shapes and layer order are the tutorial's.
"""

import torch
import torch.nn.functional as F
from torch import nn


class MLP9(nn.Module):  # the common MNIST tutorial model
    def __init__(self):
        super().__init__()
        self.encoder = nn.Sequential(
            nn.Linear(28 * 28, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU(), nn.Linear(64, 36), nn.ReLU(),
            nn.Linear(36, 18), nn.ReLU(), nn.Linear(18, 9))
        self.decoder = nn.Sequential(
            nn.Linear(9, 18), nn.ReLU(), nn.Linear(18, 36), nn.ReLU(), nn.Linear(36, 64), nn.ReLU(),
            nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 28 * 28), nn.Sigmoid())

    def forward(self, x):
        return self.decoder(self.encoder(x))


class Tanh3(nn.Module):  # 3-d codes for plotting
    def __init__(self):
        super().__init__()
        self.encoder = nn.Sequential(
            nn.Linear(28 * 28, 128), nn.Tanh(), nn.Linear(128, 64), nn.Tanh(), nn.Linear(64, 32), nn.Tanh(),
            nn.Linear(32, 16), nn.Tanh(), nn.Linear(16, 3))
        self.decoder = nn.Sequential(
            nn.Linear(3, 16), nn.Tanh(), nn.Linear(16, 32), nn.Tanh(), nn.Linear(32, 64), nn.Tanh(),
            nn.Linear(64, 128), nn.Tanh(), nn.Linear(128, 28 * 28), nn.Sigmoid())

    def forward(self, x):
        return self.decoder(self.encoder(x))


class MLP16(nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder = nn.Sequential(
            nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU(), nn.Linear(64, 32), nn.ReLU(),
            nn.Linear(32, 16))
        self.decoder = nn.Sequential(
            nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 128), nn.ReLU(),
            nn.Linear(128, 784))

    def forward(self, x):
        return self.decoder(self.encoder(x))


class Shallow128(nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(784, 128), nn.ReLU())
        self.decoder = nn.Sequential(nn.Linear(128, 784), nn.ReLU())

    def forward(self, x):
        return self.decoder(self.encoder(x))


class Vec64(nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(128, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU())
        self.decoder = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU())

    def forward(self, x):
        return self.decoder(self.encoder(x))


TUTORIAL = {"mlp9": MLP9, "tanh3": Tanh3, "mlp16": MLP16, "shallow128": Shallow128, "vec64": Vec64}


class ConvAE(nn.Module):  # the usual convolutional MNIST autoencoder
    def __init__(self):
        super().__init__()
        self.encoder = nn.Sequential(
            nn.Conv2d(1, 16, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU(),
            nn.Flatten(), nn.Linear(32 * 7 * 7, 16))
        self.decoder = nn.Sequential(
            nn.Linear(16, 32 * 7 * 7), nn.ReLU(), nn.Unflatten(1, (32, 7, 7)),
            nn.ConvTranspose2d(32, 16, 3, stride=2, padding=1, output_padding=1), nn.ReLU(),
            nn.ConvTranspose2d(16, 1, 3, stride=2, padding=1, output_padding=1), nn.Sigmoid())

    def forward(self, x):
        return self.decoder(self.encoder(x))


TUTORIAL["conv"] = ConvAE


class ConvBN(nn.Module):  # the conv model with BatchNorm after each hidden layer and dropout
    def __init__(self):
        super().__init__()
        self.encoder = nn.Sequential(
            nn.Conv2d(1, 16, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
            nn.Conv2d(16, 32, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU(),
            nn.Flatten(), nn.Dropout(0.2), nn.Linear(32 * 7 * 7, 16, bias=False))
        self.decoder = nn.Sequential(
            nn.Linear(16, 32 * 7 * 7, bias=False), nn.BatchNorm1d(32 * 7 * 7), nn.ReLU(), nn.Unflatten(1, (32, 7, 7)),
            nn.ConvTranspose2d(32, 16, 3, stride=2, padding=1, output_padding=1, bias=False), nn.BatchNorm2d(16),
            nn.ReLU(),
            nn.ConvTranspose2d(16, 1, 3, stride=2, padding=1, output_padding=1), nn.Sigmoid())

    def forward(self, x):
        return self.decoder(self.encoder(x))


class Denoising(nn.Module):  # the corruption happens in the training loop: noisy = (x + 0.5 * randn).clamp(0, 1)
    def __init__(self):
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 64), nn.ReLU())
        self.decoder = nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 784), nn.Sigmoid())

    def forward(self, x):
        return self.decoder(self.encoder(x))


class DecoderBias(nn.Module):  # a tied decoder layer owns only its bias
    def __init__(self, n):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(n))


class Tied(nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 32), nn.ReLU())
        self.decoder = nn.Sequential(DecoderBias(256), nn.ReLU(), DecoderBias(784), nn.Sigmoid())
        nn.init.uniform_(self.decoder[0].bias, -0.1, 0.1)
        nn.init.uniform_(self.decoder[2].bias, -0.1, 0.1)

    def forward(self, x):
        h = self.encoder(x)
        h = F.relu(F.linear(h, self.encoder[2].weight.t(), self.decoder[0].bias))
        return torch.sigmoid(F.linear(h, self.encoder[0].weight.t(), self.decoder[2].bias))


class VAE(nn.Module):
    """pytorch/examples' VAE, as vae/main.py writes it (its names, its functional forward); in eval mode
    the code is the mean (the preset's convention; the example samples in both modes)."""

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
        z = self.reparameterize(mu, logvar) if self.training else mu
        return self.decode(z)


class SequenceAE(nn.Module):  # rows of a digit as a 28-step sequence
    def __init__(self):
        super().__init__()
        self.encoder = nn.ModuleList([nn.LSTM(28, 64, batch_first=True), nn.Identity(), nn.Linear(64, 16)])
        self.decoder = nn.ModuleList([nn.Linear(16, 64), nn.ReLU(), nn.Identity(),
                                      nn.LSTM(64, 64, batch_first=True), nn.Linear(64, 28), nn.Sigmoid()])

    def forward(self, x):
        _, (h, _) = self.encoder[0](x)
        z = self.encoder[2](h[-1])  # the last hidden state
        d = F.relu(self.decoder[0](z))
        out, _ = self.decoder[3](d.unsqueeze(1).repeat(1, 28, 1))
        return torch.sigmoid(self.decoder[4](out))


TUTORIAL.update(conv_bn=ConvBN, denoise=Denoising, denoise_mask=Denoising, tied=Tied, vae=VAE, lstm=SequenceAE)
