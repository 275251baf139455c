"""Framework-free model specifications.

A :class:`ModelSpec` describes an autoencoder as two ordered lists of layer specs, ``encoder`` and
``decoder``, exactly as the usual tutorial code writes them::

    self.encoder = nn.Sequential(nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 64), ...)

Both ``ae_torch`` and ``ae_jax`` build their modules from the same spec, and the spec alone fixes the
canonical parameter names (PyTorch's ``state_dict`` keys, e.g. ``encoder.0.weight``) and their shapes
in PyTorch layout. Nothing here imports a deep-learning framework.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from typing import Union

ACTIVATIONS = ("relu", "tanh", "sigmoid", "gelu", "identity")

# What a model consumes: "mnist" = flattened 28x28 digits scaled to [0, 1]; "features128" = 128-d
# feature vectors derived from the same digits (see ae_core.inputs).
# "mnist_image" = the same digits as (1, 28, 28) images, channels first (torch's NCHW).
# "mnist_rows" = the digits as sequences of 28 rows of 28 pixels, (steps, features) (LSTM models).
INPUT_KINDS = {"mnist": (784,), "features128": (128,), "mnist_image": (1, 28, 28), "mnist_rows": (28, 28)}


class SpecError(ValueError):
    """A model spec that cannot describe a working model."""


@dataclass(frozen=True)
class Linear:
    """``torch.nn.Linear`` / ``flax.nnx.Linear``: ``y = x @ W.T + b`` with ``W`` of shape (out, in)."""

    in_features: int
    out_features: int
    bias: bool = True

    kind = "linear"

    def __post_init__(self) -> None:
        for name in ("in_features", "out_features"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise SpecError(f"Linear.{name} must be a positive int, got {value!r}")

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        shapes = {"weight": (self.out_features, self.in_features)}
        if self.bias:
            shapes["bias"] = (self.out_features,)
        return shapes

    def out_shape(self, in_shape: tuple[int, ...]) -> tuple[int, ...]:
        if in_shape[-1:] != (self.in_features,):
            raise SpecError(f"Linear({self.in_features}, {self.out_features}) gets input of shape {in_shape}")
        return in_shape[:-1] + (self.out_features,)

    @property
    def fan_in(self) -> int:
        return self.in_features

    def macs(self, in_shape: tuple[int, ...]) -> int:
        """Multiply-accumulates per example of the forward pass."""
        return _prod(in_shape[:-1]) * self.in_features * self.out_features


def _prod(shape) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def _positive_ints(layer, *names, allow_zero=()):
    for name in names:
        value = getattr(layer, name)
        low = 0 if name in allow_zero else 1
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise SpecError(f"{type(layer).__name__}.{name} must be an int >= {low}, got {value!r}")


class _ParameterFree:
    """Layers without parameters (activations, reshapes, noise): nothing in the state dict."""

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        return {}


class _ShapePreserving(_ParameterFree):
    """Parameter-free layers whose output has the input's shape."""

    def out_shape(self, in_shape: tuple[int, ...]) -> tuple[int, ...]:
        return in_shape


def _positive_number(layer, name):
    value = getattr(layer, name)
    if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
        raise SpecError(f"{type(layer).__name__}.{name} must be > 0, got {value!r}")


@dataclass(frozen=True)
class Conv2d:
    """``torch.nn.Conv2d`` (square kernel, symmetric explicit padding); weight (out, in, k, k).

    On the NNX side: ``nnx.Conv`` with ``padding=((p, p), (p, p))`` -- never Flax's default 'SAME',
    which pads asymmetrically for stride 2 -- and kernel (k, k, in, out).
    """

    in_channels: int
    out_channels: int
    kernel_size: int
    stride: int = 1
    padding: int = 0
    bias: bool = True

    kind = "conv2d"

    def __post_init__(self) -> None:
        _positive_ints(self, "in_channels", "out_channels", "kernel_size", "stride", "padding", allow_zero=("padding",))

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        k = self.kernel_size
        shapes = {"weight": (self.out_channels, self.in_channels, k, k)}
        if self.bias:
            shapes["bias"] = (self.out_channels,)
        return shapes

    def out_shape(self, in_shape: tuple[int, ...]) -> tuple[int, ...]:
        if len(in_shape) != 3 or in_shape[0] != self.in_channels:
            raise SpecError(f"{self} gets input of shape {in_shape}, expected ({self.in_channels}, H, W)")
        h, w = ((d + 2 * self.padding - self.kernel_size) // self.stride + 1 for d in in_shape[1:])
        if h <= 0 or w <= 0:
            raise SpecError(f"{self} on input {in_shape} gives an empty output")
        return (self.out_channels, h, w)

    @property
    def fan_in(self) -> int:
        return self.in_channels * self.kernel_size ** 2

    def macs(self, in_shape: tuple[int, ...]) -> int:
        return _prod(self.out_shape(in_shape)) * self.in_channels * self.kernel_size ** 2


@dataclass(frozen=True)
class ConvTranspose2d:
    """``torch.nn.ConvTranspose2d``; weight (in, out, k, k).

    On the NNX side: ``nnx.ConvTranspose`` with ``transpose_kernel=True``, kernel
    ``weight.transpose(2, 3, 1, 0)`` and per-side padding ``(k - 1 - p, k - 1 - p + output_padding)``.
    """

    in_channels: int
    out_channels: int
    kernel_size: int
    stride: int = 1
    padding: int = 0
    output_padding: int = 0
    bias: bool = True

    kind = "conv_transpose2d"

    def __post_init__(self) -> None:
        _positive_ints(self, "in_channels", "out_channels", "kernel_size", "stride", "padding", "output_padding",
                       allow_zero=("padding", "output_padding"))
        if self.output_padding >= self.stride:
            raise SpecError(f"{self}: output_padding must be smaller than stride (as in torch)")
        if self.padding > self.kernel_size - 1:
            raise SpecError(f"{self}: padding must be at most kernel_size - 1")

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        k = self.kernel_size
        shapes = {"weight": (self.in_channels, self.out_channels, k, k)}
        if self.bias:
            shapes["bias"] = (self.out_channels,)
        return shapes

    def out_shape(self, in_shape: tuple[int, ...]) -> tuple[int, ...]:
        if len(in_shape) != 3 or in_shape[0] != self.in_channels:
            raise SpecError(f"{self} gets input of shape {in_shape}, expected ({self.in_channels}, H, W)")
        h, w = ((d - 1) * self.stride - 2 * self.padding + self.kernel_size + self.output_padding
                for d in in_shape[1:])
        return (self.out_channels, h, w)

    @property
    def fan_in(self) -> int:  # torch computes it from weight.size(1), which is out_channels here
        return self.out_channels * self.kernel_size ** 2

    def macs(self, in_shape: tuple[int, ...]) -> int:
        return _prod(in_shape) * self.out_channels * self.kernel_size ** 2


@dataclass(frozen=True)
class Flatten(_ParameterFree):
    """``nn.Flatten()``: (C, H, W) -> C*H*W in channels-first order (NNX: NHWC -> NCHW, then reshape)."""

    kind = "flatten"

    def out_shape(self, in_shape: tuple[int, ...]) -> tuple[int, ...]:
        return (_prod(in_shape),)


@dataclass(frozen=True)
class Unflatten(_ParameterFree):
    """``nn.Unflatten(1, shape)``: C*H*W -> (C, H, W) (NNX: reshape to NCHW, then to NHWC)."""

    shape: tuple[int, ...]

    kind = "unflatten"

    def __post_init__(self) -> None:
        object.__setattr__(self, "shape", tuple(self.shape))
        if len(self.shape) != 3 or min(self.shape) <= 0:
            raise SpecError(f"Unflatten shape must be (C, H, W) of positive ints, got {self.shape}")

    def out_shape(self, in_shape: tuple[int, ...]) -> tuple[int, ...]:
        if in_shape != (_prod(self.shape),):
            raise SpecError(f"Unflatten{self.shape} gets input of shape {in_shape}")
        return self.shape


@dataclass(frozen=True)
class Activation(_ShapePreserving):
    """An elementwise, parameter-free nonlinearity (``nn.ReLU()``, ``nn.Tanh()``, ``nn.Sigmoid()``...).

    ``gelu`` is the exact (erf) GELU, PyTorch's default; JAX's default is the tanh approximation.
    """

    name: str

    kind = "activation"

    def __post_init__(self) -> None:
        if self.name not in ACTIVATIONS:
            raise SpecError(f"unknown activation {self.name!r}; known: {', '.join(ACTIVATIONS)}")


def _probability(layer, name="p"):
    value = getattr(layer, name)
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0.0 <= value < 1.0:
        raise SpecError(f"{type(layer).__name__}.{name} must be a probability in [0, 1), got {value!r}")


@dataclass(frozen=True)
class _BatchNorm:
    """Shared by BatchNorm1d / BatchNorm2d: torch's semantics, stated once.

    Train mode normalises with the batch mean and *biased* batch variance and updates
    ``running = (1 - momentum) * running + momentum * batch`` with the *unbiased* batch variance
    (torch's momentum 0.1 is Flax's momentum 0.9); eval mode uses the running statistics.
    ``num_batches_tracked`` (int64) counts training batches. Parameters weight (gamma) and bias (beta);
    buffers running_mean, running_var, num_batches_tracked.
    """

    num_features: int
    eps: float = 1e-5
    momentum: float = 0.1

    def __post_init__(self) -> None:
        _positive_ints(self, "num_features")
        _positive_number(self, "eps")
        if not isinstance(self.momentum, (int, float)) or isinstance(self.momentum, bool) or not 0 < self.momentum <= 1:
            raise SpecError(f"{type(self).__name__}.momentum must be in (0, 1] (torch convention), "
                            f"got {self.momentum!r}")

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        return {"weight": (self.num_features,), "bias": (self.num_features,)}

    def buffer_shapes(self) -> dict[str, tuple[int, ...]]:
        return {"running_mean": (self.num_features,), "running_var": (self.num_features,), "num_batches_tracked": ()}

    int_buffers = ("num_batches_tracked",)


@dataclass(frozen=True)
class BatchNorm1d(_BatchNorm):
    """``torch.nn.BatchNorm1d(C)`` on (N, C) activations."""

    kind = "batchnorm1d"

    def out_shape(self, in_shape: tuple[int, ...]) -> tuple[int, ...]:
        if in_shape != (self.num_features,):
            raise SpecError(f"{self} gets input of shape {in_shape}, expected ({self.num_features},)")
        return in_shape


@dataclass(frozen=True)
class BatchNorm2d(_BatchNorm):
    """``torch.nn.BatchNorm2d(C)`` on (N, C, H, W) activations (NNX: channels last)."""

    kind = "batchnorm2d"

    def out_shape(self, in_shape: tuple[int, ...]) -> tuple[int, ...]:
        if len(in_shape) != 3 or in_shape[0] != self.num_features:
            raise SpecError(f"{self} gets input of shape {in_shape}, expected ({self.num_features}, H, W)")
        return in_shape


@dataclass(frozen=True)
class Dropout(_ShapePreserving):
    """``torch.nn.Dropout(p)``: in train mode ``x * mask / (1 - p)`` with a Bernoulli(1 - p) keep-mask.

    The mask is *supplied* (``ae_core.noise``: drawn once with numpy, given to both frameworks), so
    both sides drop the same units; eval mode is the identity.
    """

    p: float = 0.5

    kind = "dropout"

    def __post_init__(self) -> None:
        _probability(self)

    def noise(self, in_shape: tuple[int, ...]) -> tuple[str, tuple[int, ...], float]:
        return ("bernoulli", in_shape, 1.0 - self.p)


@dataclass(frozen=True)
class GaussianNoise(_ShapePreserving):
    """Denoising corruption ``x + std * eps`` (eps ~ N(0, 1), supplied), clipped to [0, 1] if ``clip``."""

    std: float = 0.5
    clip: bool = True

    kind = "gaussian_noise"

    def __post_init__(self) -> None:
        _positive_number(self, "std")

    def noise(self, in_shape: tuple[int, ...]) -> tuple[str, tuple[int, ...], float]:
        return ("normal", in_shape, 1.0)


@dataclass(frozen=True)
class MaskingNoise(_ShapePreserving):
    """Denoising corruption ``x * mask``: each input set to 0 with probability ``p`` (no rescaling)."""

    p: float = 0.3

    kind = "masking_noise"

    def __post_init__(self) -> None:
        _probability(self)

    def noise(self, in_shape: tuple[int, ...]) -> tuple[str, tuple[int, ...], float]:
        return ("bernoulli", in_shape, 1.0 - self.p)


@dataclass(frozen=True)
class TiedLinear:
    """A decoder Linear whose weight is the transpose of an encoder Linear's: ``y = x @ W_src + b``.

    One parameter, not two: only ``bias`` is this layer's own; ``tied_to`` (e.g. ``"encoder.0"``) names
    the Linear whose ``weight`` (out_src, in_src) it reuses, so in_features = out_src and
    out_features = in_src. Its gradient is the sum of both uses.
    """

    tied_to: str
    in_features: int
    out_features: int
    bias: bool = True

    kind = "tied_linear"

    def __post_init__(self) -> None:
        _positive_ints(self, "in_features", "out_features")
        if not (isinstance(self.tied_to, str) and re.fullmatch(r"encoder\.\d+", self.tied_to)):
            raise SpecError(f"TiedLinear.tied_to must name an encoder layer like 'encoder.0', got {self.tied_to!r}")

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        return {"bias": (self.out_features,)} if self.bias else {}

    def out_shape(self, in_shape: tuple[int, ...]) -> tuple[int, ...]:
        if in_shape[-1:] != (self.in_features,):
            raise SpecError(f"{self} gets input of shape {in_shape}")
        return in_shape[:-1] + (self.out_features,)

    @property
    def fan_in(self) -> int:
        return self.in_features

    def macs(self, in_shape: tuple[int, ...]) -> int:
        return _prod(in_shape[:-1]) * self.in_features * self.out_features


@dataclass(frozen=True)
class GaussianHead:
    """The VAE encoder head: two Linears ``mu`` and ``logvar`` (in_features -> latent).

    Train mode samples the code ``z = mu + exp(0.5 * logvar) * eps`` with eps ~ N(0, 1) supplied;
    eval mode returns ``mu``. Must be the last encoder layer.
    """

    in_features: int
    latent: int

    kind = "gaussian_head"

    def __post_init__(self) -> None:
        _positive_ints(self, "in_features", "latent")

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        return {f"{head}.{p}": shape for head in ("mu", "logvar")
                for p, shape in (("weight", (self.latent, self.in_features)), ("bias", (self.latent,)))}

    def out_shape(self, in_shape: tuple[int, ...]) -> tuple[int, ...]:
        if in_shape != (self.in_features,):
            raise SpecError(f"{self} gets input of shape {in_shape}")
        return (self.latent,)

    @property
    def fan_in(self) -> int:
        return self.in_features

    def macs(self, in_shape: tuple[int, ...]) -> int:
        return 2 * self.in_features * self.latent

    def noise(self, in_shape: tuple[int, ...]) -> tuple[str, tuple[int, ...], float]:
        return ("normal", (self.latent,), 1.0)


@dataclass(frozen=True)
class LSTM:
    """``torch.nn.LSTM(input_size, hidden_size, batch_first=True)``, one layer, zero initial state,
    returning the output sequence (N, steps, hidden).

    Parameters in torch's layout and gate order (i, f, g, o): weight_ih_l0 (4H, in), weight_hh_l0
    (4H, H) and BOTH biases bias_ih_l0, bias_hh_l0 (4H,) -- Flax's LSTMCell has one bias per gate.
    """

    input_size: int
    hidden_size: int

    kind = "lstm"

    def __post_init__(self) -> None:
        _positive_ints(self, "input_size", "hidden_size")

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        h4 = 4 * self.hidden_size
        return {"weight_ih_l0": (h4, self.input_size), "weight_hh_l0": (h4, self.hidden_size),
                "bias_ih_l0": (h4,), "bias_hh_l0": (h4,)}

    def out_shape(self, in_shape: tuple[int, ...]) -> tuple[int, ...]:
        if len(in_shape) != 2 or in_shape[1] != self.input_size:
            raise SpecError(f"{self} gets input of shape {in_shape}, expected (steps, {self.input_size})")
        return (in_shape[0], self.hidden_size)

    @property
    def fan_in(self) -> int:  # torch: U(-1/sqrt(hidden_size), 1/sqrt(hidden_size)) for every LSTM tensor
        return self.hidden_size

    def macs(self, in_shape: tuple[int, ...]) -> int:
        return in_shape[0] * 4 * self.hidden_size * (self.input_size + self.hidden_size)


@dataclass(frozen=True)
class LastStep(_ParameterFree):
    """(steps, features) -> features of the last step (``output[:, -1]``)."""

    kind = "last_step"

    def out_shape(self, in_shape: tuple[int, ...]) -> tuple[int, ...]:
        if len(in_shape) != 2:
            raise SpecError(f"LastStep gets input of shape {in_shape}, expected (steps, features)")
        return in_shape[1:]


@dataclass(frozen=True)
class RepeatSteps(_ParameterFree):
    """features -> (steps, features): the code repeated at every step (the LSTM decoder's input)."""

    steps: int

    kind = "repeat_steps"

    def __post_init__(self) -> None:
        _positive_ints(self, "steps")

    def out_shape(self, in_shape: tuple[int, ...]) -> tuple[int, ...]:
        if len(in_shape) != 1:
            raise SpecError(f"{self} gets input of shape {in_shape}, expected (features,)")
        return (self.steps, in_shape[0])


LayerSpec = Union[Linear, Activation, Conv2d, ConvTranspose2d, Flatten, Unflatten, BatchNorm1d, BatchNorm2d, Dropout,
                  GaussianNoise, MaskingNoise, TiedLinear, GaussianHead, LSTM, LastStep, RepeatSteps]
LAYER_TYPES = {cls.kind: cls for cls in (Linear, Activation, Conv2d, ConvTranspose2d, Flatten, Unflatten, BatchNorm1d,
                                         BatchNorm2d, Dropout, GaussianNoise, MaskingNoise, TiedLinear, GaussianHead,
                                         LSTM, LastStep, RepeatSteps)}
# Layers that only act in train mode, on supplied noise (the corruption of a denoising AE goes in
# ModelSpec.corrupt, before the encoder, so the encoder's names are the plain model's).
CORRUPTIONS = (GaussianNoise, MaskingNoise)


@dataclass(frozen=True)
class ModelSpec:
    """An autoencoder: ``decode(encode(x))`` with ``encoder`` / ``decoder`` as Sequentials.

    ``corrupt`` (denoising autoencoders): parameter-free corruption layers applied to the input in
    train mode only, before the encoder; the loss target stays the clean input.
    """

    name: str
    encoder: tuple[LayerSpec, ...]
    decoder: tuple[LayerSpec, ...]
    input: str = "mnist"  # what the model eats; a key of INPUT_KINDS
    description: str = ""
    corrupt: tuple[LayerSpec, ...] = ()

    PARTS = ("corrupt", "encoder", "decoder")

    def __post_init__(self) -> None:
        for part in self.PARTS:
            object.__setattr__(self, part, tuple(getattr(self, part)))
        if self.input not in INPUT_KINDS:
            raise SpecError(f"{self.name}: unknown input kind {self.input!r}; known: {', '.join(INPUT_KINDS)}")
        if not self.encoder or not self.decoder:
            raise SpecError(f"{self.name}: encoder and decoder must each have at least one layer")
        for part in self.PARTS:
            for i, layer in enumerate(getattr(self, part)):
                where = f"{self.name}: {part}[{i}]"
                if not isinstance(layer, tuple(LAYER_TYPES.values())):
                    raise SpecError(f"{where} is {layer!r}, not a layer spec")
                if (part == "corrupt") != isinstance(layer, CORRUPTIONS):
                    raise SpecError(f"{where}: corruption layers (GaussianNoise, MaskingNoise) go in `corrupt`, "
                                    f"and only there" if part != "corrupt" else
                                    f"{where}: only GaussianNoise / MaskingNoise may corrupt the input, got {layer}")
                if isinstance(layer, GaussianHead) and (part != "encoder" or i != len(self.encoder) - 1):
                    raise SpecError(f"{where}: a GaussianHead must be the last encoder layer")
                if isinstance(layer, TiedLinear):
                    self._check_tied(where, part, layer)
        code = self._propagate("encoder", self.input_shape)
        out = self._propagate("decoder", code)
        if out != self.input_shape:
            raise SpecError(f"{self.name}: decoder produces shape {out}, but the input has shape {self.input_shape}")

    def _check_tied(self, where: str, part: str, layer: TiedLinear) -> None:
        if part != "decoder":
            raise SpecError(f"{where}: TiedLinear belongs in the decoder")
        index = int(layer.tied_to.split(".")[1])
        source = self.encoder[index] if index < len(self.encoder) else None
        if not isinstance(source, Linear):
            raise SpecError(f"{where}: tied_to={layer.tied_to!r} is {source!r}, not an encoder Linear")
        if (layer.in_features, layer.out_features) != (source.out_features, source.in_features):
            raise SpecError(f"{where}: TiedLinear({layer.in_features} -> {layer.out_features}) cannot reuse the "
                            f"transpose of {layer.tied_to} = {source}")

    def _propagate(self, part: str, shape: tuple[int, ...]) -> tuple[int, ...]:
        for i, layer in enumerate(getattr(self, part)):
            try:
                shape = layer.out_shape(shape)
            except SpecError as e:
                raise SpecError(f"{self.name}: {part}[{i}]: {e}") from None
        return shape

    @property
    def input_shape(self) -> tuple[int, ...]:
        return INPUT_KINDS[self.input]

    @property
    def code_shape(self) -> tuple[int, ...]:
        return self._propagate("encoder", self.input_shape)

    def layers(self):
        """``(part, index, layer)`` for every layer, in execution order (corrupt, encoder, decoder)."""
        for part in self.PARTS:
            for i, layer in enumerate(getattr(self, part)):
                yield part, i, layer

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        """Trainable parameters: canonical names (PyTorch ``named_parameters``) -> shapes in PyTorch layout."""
        return {f"{part}.{i}.{p}": shape for part, i, layer in self.layers()
                for p, shape in layer.param_shapes().items()}

    def state_shapes(self) -> dict[str, tuple[int, ...]]:
        """Everything in a ``state_dict``: parameters and buffers (BatchNorm running statistics), in
        PyTorch's order (per module: parameters, then buffers)."""
        out = {}
        for part, i, layer in self.layers():
            own = {**layer.param_shapes(), **getattr(layer, "buffer_shapes", dict)()}
            out.update({f"{part}.{i}.{p}": shape for p, shape in own.items()})
        return out

    def int_keys(self) -> set[str]:
        """State-dict entries that hold integers (``num_batches_tracked``), not floats."""
        return {f"{part}.{i}.{b}" for part, i, layer in self.layers() for b in getattr(layer, "int_buffers", ())}

    def noise_shapes(self) -> dict[str, tuple[str, tuple[int, ...], float]]:
        """The random inputs one example needs in train mode: ``{layer name: (kind, shape, param)}``.

        kind "bernoulli" (param = keep probability: a 0/1 mask) or "normal" (standard normal). Shapes
        are per example, channels first. Drawn by ``ae_core.noise`` and given to both frameworks.
        """
        out, shape = {}, self.input_shape
        for part, i, layer in self.layers():
            if hasattr(layer, "noise"):
                out[f"{part}.{i}"] = layer.noise(shape)
            shape = layer.out_shape(shape)
        return out

    def has(self, *kinds: str) -> bool:
        return any(layer.kind in kinds for _, _, layer in self.layers())

    @property
    def is_vae(self) -> bool:
        return isinstance(self.encoder[-1], GaussianHead)

    def num_params(self) -> int:
        return sum(_prod(shape) for shape in self.param_shapes().values())

    def layer_input_shapes(self) -> list[tuple[LayerSpec, tuple[int, ...]]]:
        """Every layer of the encoder then the decoder with the (per-example) shape it receives."""
        out, shape = [], self.input_shape
        for layer in (*self.encoder, *self.decoder):
            out.append((layer, shape))
            shape = layer.out_shape(shape)
        return out

    # -- serialisation (stored in checkpoint metadata so a file says what it holds) ----------------
    def to_json(self) -> str:
        def layer(l: LayerSpec) -> dict:
            return {"kind": l.kind, **asdict(l)}

        d = {"name": self.name, "input": self.input, "description": self.description}
        # encoder and decoder are never empty; `corrupt` is written only when there is one
        d.update({part: [layer(l) for l in getattr(self, part)] for part in self.PARTS if getattr(self, part)})
        return json.dumps(d, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "ModelSpec":
        try:
            d = json.loads(text)
            parts = {}
            for part in cls.PARTS:
                layers = []
                for item in d.get(part, []) if part == "corrupt" else d[part]:
                    item = dict(item)
                    kind = item.pop("kind")
                    if kind not in LAYER_TYPES:
                        raise SpecError(f"unknown layer kind {kind!r}")
                    layers.append(LAYER_TYPES[kind](**item))
                parts[part] = tuple(layers)
            return cls(name=d["name"], input=d["input"], description=d.get("description", ""), **parts)
        except (KeyError, TypeError, json.JSONDecodeError) as e:
            raise SpecError(f"not a valid model spec: {e}") from None

    def same_architecture(self, other: "ModelSpec") -> bool:
        return all(getattr(self, p) == getattr(other, p) for p in self.PARTS) and self.input == other.input

    def describe(self, part: str) -> str:
        """The shapes one side passes through (``784-128-...`` for MLPs), with the activations named."""
        shape = self.input_shape if part == "encoder" else self.code_shape
        shapes, acts = ["x".join(map(str, shape))], []
        for layer in getattr(self, part):
            if isinstance(layer, Activation):
                if layer.name not in acts:
                    acts.append(layer.name)
                continue
            shape = layer.out_shape(shape)
            if isinstance(layer, (Linear, Conv2d, ConvTranspose2d, TiedLinear, GaussianHead, LSTM)):
                shapes.append("x".join(map(str, shape)))
            elif not isinstance(layer, (Flatten, Unflatten, LastStep, RepeatSteps)):
                acts.append(layer.kind)
        return "-".join(shapes) + (f" ({', '.join(acts)})" if acts else "")


def mlp(
    name: str,
    widths: list[int],
    act: str,
    *,
    code_act: str | None = None,
    out_act: str | None = None,
    input: str = "mnist",
    description: str = "",
) -> ModelSpec:
    """The tutorial MLP autoencoder: mirrored Linear stacks with ``act`` between layers.

    ``widths`` runs from the input to the code, e.g. ``[784, 128, 64, 36, 18, 9]``; the decoder mirrors
    it. ``code_act`` follows the last encoder Linear (None: the code is linear), ``out_act`` the last
    decoder Linear (None: linear output).
    """
    if len(widths) < 2:
        raise SpecError(f"{name}: an MLP needs at least two widths, got {widths}")

    def side(ws: list[int], last_act: str | None) -> list[LayerSpec]:
        layers: list[LayerSpec] = []
        for i, (a, b) in enumerate(zip(ws[:-1], ws[1:])):
            layers.append(Linear(a, b))
            is_last = i == len(ws) - 2
            if not is_last:
                layers.append(Activation(act))
            elif last_act is not None:
                layers.append(Activation(last_act))
        return layers

    return ModelSpec(
        name=name,
        encoder=tuple(side(widths, code_act)),
        decoder=tuple(side(widths[::-1], out_act)),
        input=input,
        description=description,
    )
