"""Dense, convolutional, reshaping and activation layer kinds."""

from __future__ import annotations

from dataclasses import dataclass

from .registry import LayerSpec, SpecError, layer_kind, no_state, positive_ints, prod, torch_default_init

ACTIVATIONS = ("relu", "tanh", "sigmoid", "gelu", "identity")


class _Weighted(LayerSpec):
    """Layers with a weight matrix or kernel: shown by their output shape; ``fan_in`` sets their init."""

    shown = "shape"


@layer_kind(init=torch_default_init, example=dict(in_features=3, out_features=2),
            hints={"Linear": "Linear: the Flax kernel is (in, out) = torch weight.T (pitfall 1)"})
@dataclass(frozen=True)
class Linear(_Weighted):
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
        return prod(in_shape[:-1]) * self.in_features * self.out_features


@layer_kind(init=torch_default_init, example=dict(in_channels=2, out_channels=3, kernel_size=3, stride=2, padding=1),
            hints={"Conv2d": "Conv2d: pass explicit padding ((p, p), (p, p)), never 'SAME' (asymmetric at stride 2), "
                             "and the kernel as weight.transpose(2, 3, 1, 0) (pitfall 2)"})
@dataclass(frozen=True)
class Conv2d(_Weighted):
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
    image = True

    def __post_init__(self) -> None:
        positive_ints(self, "in_channels", "out_channels", "kernel_size", "stride", "padding", allow_zero=("padding",))

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
        return prod(self.out_shape(in_shape)) * self.in_channels * self.kernel_size ** 2


@layer_kind(init=torch_default_init,
            example=dict(in_channels=3, out_channels=2, kernel_size=3, stride=2, padding=1, output_padding=1),
            hints={"ConvTranspose2d": "ConvTranspose2d: check the kernel flip (transpose_kernel=True) and the padding "
                                      "(k - 1 - p, k - 1 - p + output_padding) (pitfall 4)"})
@dataclass(frozen=True)
class ConvTranspose2d(_Weighted):
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
    image = True

    def __post_init__(self) -> None:
        positive_ints(self, "in_channels", "out_channels", "kernel_size", "stride", "padding", "output_padding",
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
        return prod(in_shape) * self.out_channels * self.kernel_size ** 2


@layer_kind(init=no_state,
            hints={"Flatten": "Flatten after convolutions: transpose NHWC -> NCHW before reshaping, or the next "
                              "Linear's weights meet the features in another order (pitfall 3)"})
@dataclass(frozen=True)
class Flatten(LayerSpec):
    """``nn.Flatten()``: (C, H, W) -> C*H*W in channels-first order (NNX: NHWC -> NCHW, then reshape)."""

    kind = "flatten"
    shown = "none"

    def out_shape(self, in_shape: tuple[int, ...]) -> tuple[int, ...]:
        return (prod(in_shape),)


@layer_kind(init=no_state, example=dict(shape=(2, 3, 3)),
            hints={"Unflatten": "Unflatten: reshape to NCHW first, then transpose to NHWC (pitfall 3)"})
@dataclass(frozen=True)
class Unflatten(LayerSpec):
    """``nn.Unflatten(1, shape)``: C*H*W -> (C, H, W) (NNX: reshape to NCHW, then to NHWC)."""

    shape: tuple[int, ...]

    kind = "unflatten"
    shown = "none"

    def __post_init__(self) -> None:
        object.__setattr__(self, "shape", tuple(self.shape))
        if len(self.shape) != 3 or min(self.shape) <= 0:
            raise SpecError(f"Unflatten shape must be (C, H, W) of positive ints, got {self.shape}")

    def out_shape(self, in_shape: tuple[int, ...]) -> tuple[int, ...]:
        if in_shape != (prod(self.shape),):
            raise SpecError(f"Unflatten{self.shape} gets input of shape {in_shape}")
        return self.shape


@layer_kind(init=no_state, example=dict(name="gelu"),
            hints={"GELU": "GELU: torch's nn.GELU is the exact erf form; jax.nn.gelu defaults to approximate=True "
                           "(pitfall 7)"})
@dataclass(frozen=True)
class Activation(LayerSpec):
    """An elementwise, parameter-free nonlinearity (``nn.ReLU()``, ``nn.Tanh()``, ``nn.Sigmoid()``...).

    ``gelu`` is the exact (erf) GELU, PyTorch's default; JAX's default is the tanh approximation.
    """

    name: str

    kind = "activation"
    shown = "activation"

    def __post_init__(self) -> None:
        if self.name not in ACTIVATIONS:
            raise SpecError(f"unknown activation {self.name!r}; known: {', '.join(ACTIVATIONS)}")
