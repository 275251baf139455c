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
from dataclasses import asdict, dataclass
from typing import Union

ACTIVATIONS = ("relu", "tanh", "sigmoid", "gelu", "identity")

# What a model consumes: "mnist" = flattened 28x28 digits scaled to [0, 1]; "features128" = 128-d
# feature vectors derived from the same digits (see ae_core.inputs).
# "mnist_image" = the same digits as (1, 28, 28) images, channels first (torch's NCHW).
INPUT_KINDS = {"mnist": (784,), "features128": (128,), "mnist_image": (1, 28, 28)}


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
class Flatten:
    """``nn.Flatten()``: (C, H, W) -> C*H*W in channels-first order (NNX: NHWC -> NCHW, then reshape)."""

    kind = "flatten"

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        return {}

    def out_shape(self, in_shape: tuple[int, ...]) -> tuple[int, ...]:
        return (_prod(in_shape),)


@dataclass(frozen=True)
class Unflatten:
    """``nn.Unflatten(1, shape)``: C*H*W -> (C, H, W) (NNX: reshape to NCHW, then to NHWC)."""

    shape: tuple[int, ...]

    kind = "unflatten"

    def __post_init__(self) -> None:
        object.__setattr__(self, "shape", tuple(self.shape))
        if len(self.shape) != 3 or min(self.shape) <= 0:
            raise SpecError(f"Unflatten shape must be (C, H, W) of positive ints, got {self.shape}")

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        return {}

    def out_shape(self, in_shape: tuple[int, ...]) -> tuple[int, ...]:
        if in_shape != (_prod(self.shape),):
            raise SpecError(f"Unflatten{self.shape} gets input of shape {in_shape}")
        return self.shape


@dataclass(frozen=True)
class Activation:
    """An elementwise, parameter-free nonlinearity (``nn.ReLU()``, ``nn.Tanh()``, ``nn.Sigmoid()``...).

    ``gelu`` is the exact (erf) GELU, PyTorch's default; JAX's default is the tanh approximation.
    """

    name: str

    kind = "activation"

    def __post_init__(self) -> None:
        if self.name not in ACTIVATIONS:
            raise SpecError(f"unknown activation {self.name!r}; known: {', '.join(ACTIVATIONS)}")

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        return {}

    def out_shape(self, in_shape: tuple[int, ...]) -> tuple[int, ...]:
        return in_shape


LayerSpec = Union[Linear, Activation, Conv2d, ConvTranspose2d, Flatten, Unflatten]
LAYER_TYPES = {cls.kind: cls for cls in (Linear, Activation, Conv2d, ConvTranspose2d, Flatten, Unflatten)}


@dataclass(frozen=True)
class ModelSpec:
    """An autoencoder: ``decode(encode(x))`` with ``encoder`` / ``decoder`` as Sequentials."""

    name: str
    encoder: tuple[LayerSpec, ...]
    decoder: tuple[LayerSpec, ...]
    input: str = "mnist"  # what the model eats; a key of INPUT_KINDS
    description: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "encoder", tuple(self.encoder))
        object.__setattr__(self, "decoder", tuple(self.decoder))
        if self.input not in INPUT_KINDS:
            raise SpecError(f"{self.name}: unknown input kind {self.input!r}; known: {', '.join(INPUT_KINDS)}")
        if not self.encoder or not self.decoder:
            raise SpecError(f"{self.name}: encoder and decoder must each have at least one layer")
        for part in ("encoder", "decoder"):
            for i, layer in enumerate(getattr(self, part)):
                if not isinstance(layer, tuple(LAYER_TYPES.values())):
                    raise SpecError(f"{self.name}: {part}[{i}] is {layer!r}, not a layer spec")
        code = self._propagate("encoder", self.input_shape)
        out = self._propagate("decoder", code)
        if out != self.input_shape:
            raise SpecError(f"{self.name}: decoder produces shape {out}, but the input has shape {self.input_shape}")

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

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        """Canonical parameter names (PyTorch ``state_dict`` keys) -> shapes in PyTorch layout, in order."""
        shapes: dict[str, tuple[int, ...]] = {}
        for part in ("encoder", "decoder"):
            for i, layer in enumerate(getattr(self, part)):
                for pname, shape in layer.param_shapes().items():
                    shapes[f"{part}.{i}.{pname}"] = shape
        return shapes

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

        return json.dumps(
            {
                "name": self.name,
                "input": self.input,
                "description": self.description,
                "encoder": [layer(l) for l in self.encoder],
                "decoder": [layer(l) for l in self.decoder],
            },
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, text: str) -> "ModelSpec":
        try:
            d = json.loads(text)
            parts = {}
            for part in ("encoder", "decoder"):
                layers = []
                for item in d[part]:
                    item = dict(item)
                    kind = item.pop("kind")
                    if kind not in LAYER_TYPES:
                        raise SpecError(f"unknown layer kind {kind!r}")
                    layers.append(LAYER_TYPES[kind](**item))
                parts[part] = tuple(layers)
            return cls(name=d["name"], input=d["input"], description=d.get("description", ""), **parts)
        except (KeyError, TypeError, json.JSONDecodeError) as e:
            raise SpecError(f"not a valid model spec: {e}") from None

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
            if not isinstance(layer, (Flatten, Unflatten)):
                shapes.append("x".join(map(str, shape)))
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
