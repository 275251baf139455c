"""Autoencoders in the styles people publish on GitHub, each with a correct hand-written NNX port.

Not built from ae_core specs: named attributes and functional forwards, one pooling module called twice,
nested Sequential blocks, list outputs, BatchNorm(affine=False), F.interpolate / F.leaky_relu / view.
The NNX ports mirror the torch module trees (same attribute names, ``nnx.Sequential`` for
``nn.Sequential``), take channels-last images and give channels-last images back. Their keyword
arguments plant the classic porting bugs (``parity_tests/test_thirdparty.py``).

- :class:`NamedConvAE`: conv1 / conv2 with ONE ``self.pool = nn.MaxPool2d(2, 2)`` used after both, and a
  ConvTranspose2d decoder (the common "convolutional autoencoder in PyTorch" tutorial); several of its
  activations have C == H == W (4x4x4 after the first pool and after t_conv1).
- :class:`LeNetAE`: the Deep SVDD MNIST LeNet autoencoder's style: bias-free convs, BatchNorm2d(eps=1e-4,
  affine=False), F.leaky_relu(x, 0.2), F.max_pool2d, x.view(...), F.interpolate(scale_factor=2).
- :class:`ConvVAE`: PyTorch-VAE's VanillaVAE style: nested Sequential blocks (conv, BatchNorm2d,
  LeakyReLU), fc_mu / fc_var, reparameterize, ``forward`` returning ``[recon, input, mu, log_var, z]``;
  the noise is an argument (``forward(x, eps)``); :class:`SamplingConvVAE` draws it inside (randn_like).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import torch
import torch.nn.functional as F
from flax import nnx
from torch import nn

from ae_jax import layers as M
from ae_jax.convert import ParamRule

F64 = jnp.float64


def _dt(dtype):
    # zeros: the weights are the torch model's after the transfer (and zeros compile faster than lecun_normal)
    return dict(dtype=dtype, param_dtype=dtype, kernel_init=nnx.initializers.zeros_init())


# ----------------------------------------------------------------------------------- (a) NamedConvAE ----
class NamedConvAE(nn.Module):
    input_shape = (1, 8, 8)

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.pool = nn.MaxPool2d(2, 2)
        self.t_conv1 = nn.ConvTranspose2d(4, 4, 2, stride=2)
        self.t_conv2 = nn.ConvTranspose2d(4, 1, 2, stride=2)

    def forward(self, x):
        x = F.relu(self.conv1(x))
        x = self.pool(x)  # 4 x 4 x 4: C == H == W
        x = F.relu(self.conv2(x))
        x = self.pool(x)  # 4 x 2 x 2
        x = F.relu(self.t_conv1(x))  # 4 x 4 x 4
        return torch.sigmoid(self.t_conv2(x))


class MaxPool(nnx.Module):
    """A user's pooling module (channels-last), called like torch's nn.MaxPool2d."""

    def __init__(self, k: int, s: int):
        self.k, self.s = k, s

    def __call__(self, x):
        return nnx.max_pool(x, (self.k, self.k), strides=(self.s, self.s))


class NamedConvAEFlax(nnx.Module):
    def __init__(self, rngs: nnx.Rngs = None, dtype=F64, *, conv2_padding=((1, 1), (1, 1)), flip=True):
        rngs = rngs or nnx.Rngs(0)
        self.conv1 = nnx.Conv(1, 4, (3, 3), padding=((1, 1), (1, 1)), rngs=rngs, **_dt(dtype))
        self.conv2 = nnx.Conv(4, 4, (3, 3), padding=conv2_padding, rngs=rngs, **_dt(dtype))
        self.pool = MaxPool(2, 2)
        # torch ConvTranspose2d(k=2, s=2, p=0): padding (k - 1 - p, k - 1 - p + output_padding) = (1, 1)
        self.t_conv1 = nnx.ConvTranspose(4, 4, (2, 2), strides=(2, 2), padding=((1, 1), (1, 1)),
                                         transpose_kernel=flip, rngs=rngs, **_dt(dtype))
        self.t_conv2 = nnx.ConvTranspose(4, 1, (2, 2), strides=(2, 2), padding=((1, 1), (1, 1)),
                                         transpose_kernel=True, rngs=rngs, **_dt(dtype))

    def __call__(self, x):
        x = self.pool(jax.nn.relu(self.conv1(x)))
        x = self.pool(jax.nn.relu(self.conv2(x)))
        x = jax.nn.relu(self.t_conv1(x))
        return jax.nn.sigmoid(self.t_conv2(x))


class NamedConvAEFlaxNoFlip32(NamedConvAEFlax):
    """Planted: nnx.ConvTranspose without transpose_kernel; float32 (for ae-parity diagnose: a class that
    takes only rngs)."""

    def __init__(self, rngs: nnx.Rngs = None):
        super().__init__(rngs, jnp.float32, flip=False)


# --------------------------------------------------------------------------------------- (b) LeNetAE ----
class LeNetAE(nn.Module):
    input_shape = (1, 8, 8)

    def __init__(self):
        super().__init__()
        self.rep_dim = 8
        self.conv1 = nn.Conv2d(1, 4, 5, bias=False, padding=2)
        self.bn1 = nn.BatchNorm2d(4, eps=1e-04, affine=False)
        self.fc1 = nn.Linear(4 * 4 * 4, self.rep_dim, bias=False)
        self.deconv1 = nn.ConvTranspose2d(2, 4, 5, bias=False, padding=2)
        self.bn2 = nn.BatchNorm2d(4, eps=1e-04, affine=False)
        self.deconv2 = nn.ConvTranspose2d(4, 1, 5, bias=False, padding=2)

    def forward(self, x):
        x = self.conv1(x)
        x = F.max_pool2d(F.leaky_relu(self.bn1(x), 0.2), 2, 2)  # 4 x 4 x 4
        x = x.view(x.size(0), -1)
        x = self.fc1(x)
        x = x.view(x.size(0), int(self.rep_dim / 4), 2, 2)
        x = F.interpolate(F.leaky_relu(x, 0.2), scale_factor=2)
        x = self.deconv1(x)
        x = F.interpolate(F.leaky_relu(self.bn2(x), 0.2), scale_factor=2)
        x = self.deconv2(x)
        return torch.sigmoid(x)


class BatchNormStats(nnx.Module):
    """torch's BatchNorm(affine=False): normalisation with running statistics, no scale, no bias
    (ae_jax.layers.BatchNorm without its parameters; channels last)."""

    def __init__(self, num_features: int, *, eps: float = 1e-5, momentum: float = 0.1, dtype=F64):
        self.eps, self.momentum, self.use_running_average = eps, momentum, False
        self.mean = nnx.BatchStat(jnp.zeros(num_features, dtype))
        self.var = nnx.BatchStat(jnp.ones(num_features, dtype))
        self.num_batches_tracked = nnx.BatchStat(jnp.zeros((), jax.dtypes.canonicalize_dtype(jnp.int64)))

    def __call__(self, x):
        if self.use_running_average:
            mean, var = self.mean.get_value(), self.var.get_value()
        else:
            axes, n = tuple(range(x.ndim - 1)), x.size // x.shape[-1]
            mean = jnp.mean(x, axis=axes)
            var = jnp.mean(jnp.square(x - mean), axis=axes)
            m = self.momentum
            self.mean.set_value((1 - m) * self.mean.get_value() + m * mean)
            self.var.set_value((1 - m) * self.var.get_value() + m * var * (n / max(n - 1, 1)))
            self.num_batches_tracked.set_value(self.num_batches_tracked.get_value() + 1)
        return (x - mean) * jax.lax.rsqrt(var + self.eps)


BN_STATS_RULES = {BatchNormStats: (ParamRule("mean", "running_mean"), ParamRule("var", "running_var"),
                                   ParamRule("num_batches_tracked", "num_batches_tracked", integer=True))}


def upsample_nearest(x, s: int = 2):
    """torch's F.interpolate(scale_factor=s, mode='nearest') on channels-last images."""
    return jnp.repeat(jnp.repeat(x, s, axis=1), s, axis=2)


def upsample_bilinear(x, s: int = 2):  # a planted bug: another interpolation than torch's
    n, h, w, c = x.shape
    return jax.image.resize(x, (n, h * s, w * s, c), method="bilinear")


class LeNetAEFlax(nnx.Module):
    def __init__(self, rngs: nnx.Rngs = None, dtype=F64, *, slope=0.2, eps=1e-4, momentum=0.1,
                 upsample=upsample_nearest, batchnorm=None):
        rngs = rngs or nnx.Rngs(0)
        self.rep_dim, self.slope, self.upsample = 8, slope, upsample
        bn = batchnorm or (lambda c: BatchNormStats(c, eps=eps, momentum=momentum, dtype=dtype))
        self.conv1 = nnx.Conv(1, 4, (5, 5), padding=((2, 2), (2, 2)), use_bias=False, rngs=rngs, **_dt(dtype))
        self.bn1 = bn(4)
        self.fc1 = nnx.Linear(4 * 4 * 4, self.rep_dim, use_bias=False, rngs=rngs, **_dt(dtype))
        self.deconv1 = nnx.ConvTranspose(2, 4, (5, 5), padding=((2, 2), (2, 2)), transpose_kernel=True,
                                         use_bias=False, rngs=rngs, **_dt(dtype))
        self.bn2 = bn(4)
        self.deconv2 = nnx.ConvTranspose(4, 1, (5, 5), padding=((2, 2), (2, 2)), transpose_kernel=True,
                                         use_bias=False, rngs=rngs, **_dt(dtype))

    def act(self, x):
        return jax.nn.leaky_relu(x, negative_slope=self.slope)

    def __call__(self, x):
        x = nnx.max_pool(self.act(self.bn1(self.conv1(x))), (2, 2), strides=(2, 2))
        x = x.transpose(0, 3, 1, 2).reshape(x.shape[0], -1)  # torch's view flattens channels first
        x = self.fc1(x)
        x = x.reshape(x.shape[0], self.rep_dim // 4, 2, 2).transpose(0, 2, 3, 1)
        x = self.upsample(self.act(x))
        x = self.upsample(self.act(self.bn2(self.deconv1(x))))
        return jax.nn.sigmoid(self.deconv2(x))


# --------------------------------------------------------------------------------------- (c) ConvVAE ----
class ConvVAE(nn.Module):
    input_shape = (1, 8, 8)

    def __init__(self, latent_dim: int = 4, hidden_dims=(4,)):
        super().__init__()
        modules, c = [], 1
        for h in hidden_dims:
            modules.append(nn.Sequential(nn.Conv2d(c, h, 3, stride=2, padding=1), nn.BatchNorm2d(h), nn.LeakyReLU()))
            c = h
        self.encoder = nn.Sequential(*modules)
        side = 8 // 2 ** len(hidden_dims)
        self.fc_mu = nn.Linear(hidden_dims[-1] * side * side, latent_dim)
        self.fc_var = nn.Linear(hidden_dims[-1] * side * side, latent_dim)
        self.decoder_input = nn.Linear(latent_dim, hidden_dims[-1] * side * side)
        self.hidden, self.side = hidden_dims[-1], side
        self.decoder = nn.Sequential(*[nn.Sequential(
            nn.ConvTranspose2d(h, h, 3, stride=2, padding=1, output_padding=1), nn.BatchNorm2d(h), nn.LeakyReLU())
            for h in reversed(hidden_dims)])
        self.final_layer = nn.Sequential(nn.Conv2d(hidden_dims[0], 1, 3, padding=1), nn.Tanh())

    def encode(self, x):
        result = torch.flatten(self.encoder(x), start_dim=1)
        return [self.fc_mu(result), self.fc_var(result)]

    def decode(self, z):
        result = self.decoder_input(z).view(-1, self.hidden, self.side, self.side)
        return self.final_layer(self.decoder(result))

    def reparameterize(self, mu, logvar, eps):
        std = torch.exp(0.5 * logvar)
        return eps * std + mu

    def forward(self, x, eps):
        mu, log_var = self.encode(x)
        z = self.reparameterize(mu, log_var, eps)
        return [self.decode(z), x, mu, log_var, z]


class SamplingConvVAE(ConvVAE):
    """The published form: the noise drawn inside the forward."""

    def forward(self, x):
        mu, log_var = self.encode(x)
        z = self.reparameterize(mu, log_var, torch.randn_like(mu))
        return [self.decode(z), x, mu, log_var, z]


class Dense(nnx.Module):
    """A user's dense layer y = x @ w + b, w (in, out), with its own conversion rule."""

    def __init__(self, n_in: int, n_out: int, dtype=F64):
        self.w = nnx.Param(jnp.zeros((n_in, n_out), dtype))
        self.b = nnx.Param(jnp.zeros((n_out,), dtype))

    def __call__(self, x):
        return x @ self.w.get_value() + self.b.get_value()


DENSE_RULES = {Dense: (ParamRule("w", "weight", lambda a: a.T, lambda a: a.T), ParamRule("b", "bias"))}
DENSE_RULES_NO_TRANSPOSE = {Dense: (ParamRule("w", "weight"), ParamRule("b", "bias"))}  # a planted bug


class ConvVAEFlax(nnx.Module):
    def __init__(self, rngs: nnx.Rngs = None, dtype=F64, *, latent_dim: int = 4, hidden_dims=(4,),
                 std_scale=0.5, linear=None):
        rngs = rngs or nnx.Rngs(0)
        self.std_scale, self.hidden, self.side = std_scale, hidden_dims[-1], 8 // 2 ** len(hidden_dims)
        lin = linear or (lambda i, o: nnx.Linear(i, o, rngs=rngs, **_dt(dtype)))
        blocks, c = [], 1
        for h in hidden_dims:
            blocks.append(nnx.Sequential(nnx.Conv(c, h, (3, 3), strides=2, padding=((1, 1), (1, 1)), rngs=rngs,
                                                  **_dt(dtype)), M.BatchNorm(h, dtype=dtype), jax.nn.leaky_relu))
            c = h
        self.encoder = nnx.Sequential(*blocks)
        flat = hidden_dims[-1] * self.side ** 2
        self.fc_mu, self.fc_var, self.decoder_input = lin(flat, latent_dim), lin(flat, latent_dim), lin(latent_dim, flat)
        up = dict(strides=2, padding=((1, 2), (1, 2)), transpose_kernel=True, rngs=rngs, **_dt(dtype))
        self.decoder = nnx.Sequential(*[nnx.Sequential(nnx.ConvTranspose(h, h, (3, 3), **up), M.BatchNorm(h, dtype=dtype),
                                                       jax.nn.leaky_relu) for h in reversed(hidden_dims)])
        self.final_layer = nnx.Sequential(
            nnx.Conv(hidden_dims[0], 1, (3, 3), padding=((1, 1), (1, 1)), rngs=rngs, **_dt(dtype)), jnp.tanh)

    def __call__(self, x, eps):
        h = self.encoder(x)
        h = h.transpose(0, 3, 1, 2).reshape(h.shape[0], -1)  # torch.flatten of NCHW
        mu, log_var = self.fc_mu(h), self.fc_var(h)
        z = eps * jnp.exp(self.std_scale * log_var) + mu
        d = self.decoder_input(z).reshape(-1, self.hidden, self.side, self.side).transpose(0, 2, 3, 1)
        return [self.final_layer(self.decoder(d)), x, mu, log_var, z]


class SamplingConvVAEFlax(ConvVAEFlax):
    """The port of :class:`SamplingConvVAE`: draws its own noise (a fixed key; no port can match torch's)."""

    def __call__(self, x):
        batch = x.shape[0]
        eps = jax.random.normal(jax.random.key(0), (batch, self.fc_mu.out_features), x.dtype)
        return super().__call__(x, eps)
