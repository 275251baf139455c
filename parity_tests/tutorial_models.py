"""Autoencoders written the way the tutorials write them, by hand, independent of ae_core's specs.

If a state_dict saved by one of these loads strictly into the matching preset (both frameworks) and
gives the same outputs, the preset's names, shapes and layer order are the tutorial's.
"""

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
