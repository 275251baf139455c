"""Convolution layer kinds: Conv1d, Conv2d, ConvTranspose2d, with torch's arguments and shape rules.

Sizes (``kernel_size``, ``stride``, ``padding``, ``dilation``, ``output_padding``) are what torch takes:
an int, or one int per spatial dimension. A spec keeps an int where every dimension has the same value
(``(3, 3)`` is stored as ``3``), so the presets' specs and their JSON are what they always were, and a
JSON list comes back as a tuple. ``padding`` may also be torch's ``"same"`` / ``"valid"``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from .registry import LayerSpec, SpecError, layer_kind, prod, torch_default_init, torch_layout_only

PADDING_MODES = ("zeros", "reflect", "replicate", "circular")


def sizes(value, n: int) -> tuple[int, ...]:
    """An int-or-tuple size as one int per spatial dimension."""
    return (value,) * n if isinstance(value, int) else tuple(value)


def _canonical(layer, name: str, low: int) -> None:
    """``layer.name`` as an int >= ``low`` or a tuple of ``dims`` of them, equal entries collapsed to an int."""
    value, n = getattr(layer, name), layer.dims
    items = list(value) if isinstance(value, (list, tuple)) else [value]
    if len(items) not in (1, n) or not all(isinstance(v, int) and not isinstance(v, bool) and v >= low
                                           for v in items):
        raise SpecError(f"{type(layer).__name__}.{name} must be an int >= {low} or {n} of them, got {value!r}")
    object.__setattr__(layer, name, items[0] if len(set(items)) == 1 else tuple(items))


class _ConvNd(LayerSpec):
    """What the convolutions share: channels, groups, the sizes per spatial dimension; shown by shape."""

    dims: ClassVar[int]
    shown = "shape"
    image = True

    def _check(self, *names: str) -> None:
        for name in ("in_channels", "out_channels"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise SpecError(f"{type(self).__name__}.{name} must be a positive int, got {value!r}")
        if not isinstance(self.groups, int) or self.groups <= 0 or self.in_channels % self.groups \
                or self.out_channels % self.groups:
            raise SpecError(f"{self}: groups must divide in_channels and out_channels (as in torch)")
        for name in ("kernel_size", "stride", "dilation", *names):
            _canonical(self, name, 0 if name in ("padding", "output_padding") else 1)

    @property
    def kernel(self) -> tuple[int, ...]:
        return sizes(self.kernel_size, self.dims)

    @property
    def strides(self) -> tuple[int, ...]:
        return sizes(self.stride, self.dims)

    @property
    def dilations(self) -> tuple[int, ...]:
        return sizes(self.dilation, self.dims)

    def _spatial(self, in_shape: tuple[int, ...]) -> tuple[int, ...]:
        if len(in_shape) != self.dims + 1 or in_shape[0] != self.in_channels:
            raise SpecError(f"{self} gets input of shape {in_shape}, expected ({self.in_channels}, "
                            f"{'H, W' if self.dims == 2 else 'L'})")
        return in_shape[1:]


@dataclass(frozen=True)
class _Conv(_ConvNd):
    """``torch.nn.Conv1d`` / ``Conv2d``: weight (out, in / groups, *kernel).

    On the NNX side: ``nnx.Conv`` channels-last with the explicit per-side padding of :attr:`pads` --
    never Flax's default 'SAME', which pads asymmetrically for stride 2 -- ``kernel_dilation``,
    ``feature_group_count`` and kernel (*kernel, in / groups, out); a non-zero ``padding_mode`` pads the
    input first (``jnp.pad``: reflect, edge, wrap).
    """

    in_channels: int
    out_channels: int
    kernel_size: int | tuple[int, ...]
    stride: int | tuple[int, ...] = 1
    padding: int | tuple[int, ...] | str = 0
    bias: bool = True
    dilation: int | tuple[int, ...] = 1
    groups: int = 1
    padding_mode: str = "zeros"

    def __post_init__(self) -> None:
        if isinstance(self.padding, str):
            if self.padding not in ("same", "valid"):
                raise SpecError(f"{type(self).__name__}.padding {self.padding!r}: an int, ints, 'same' or 'valid'")
            self._check()
            if self.padding == "same" and set(self.strides) != {1}:
                raise SpecError(f"{self}: padding='same' needs stride 1 (as in torch)")
        else:
            self._check("padding")
        if self.padding_mode not in PADDING_MODES:
            raise SpecError(f"{type(self).__name__}.padding_mode {self.padding_mode!r}: one of {PADDING_MODES}")

    @property
    def pads(self) -> tuple[tuple[int, int], ...]:
        """The (before, after) padding of each spatial dimension, as torch pads: 'same' puts the odd one after."""
        if self.padding == "valid":
            return ((0, 0),) * self.dims
        if self.padding == "same":
            totals = [d * (k - 1) for d, k in zip(self.dilations, self.kernel)]
            return tuple((t // 2, t - t // 2) for t in totals)
        return tuple((p, p) for p in sizes(self.padding, self.dims))

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        shapes = {"weight": (self.out_channels, self.in_channels // self.groups, *self.kernel)}
        if self.bias:
            shapes["bias"] = (self.out_channels,)
        return shapes

    def out_shape(self, in_shape: tuple[int, ...]) -> tuple[int, ...]:
        out = tuple((n + lo + hi - d * (k - 1) - 1) // s + 1 for n, (lo, hi), d, k, s in
                    zip(self._spatial(in_shape), self.pads, self.dilations, self.kernel, self.strides))
        if min(out) <= 0:
            raise SpecError(f"{self} on input {in_shape} gives an empty output")
        return (self.out_channels, *out)

    @property
    def fan_in(self) -> int:  # torch: weight.size(1) * the kernel's size
        return self.in_channels // self.groups * prod(self.kernel)

    def macs(self, in_shape: tuple[int, ...]) -> int:
        return prod(self.out_shape(in_shape)) * self.fan_in


_CONV_HINT = ("pass explicit padding ((p, p), (p, p)), never 'SAME' (asymmetric at stride 2), and the kernel as "
              "weight.transpose(2, 3, 1, 0) (pitfall 2); torch's padding='same' puts the odd pixel after; "
              "groups = feature_group_count; padding_mode reflect/replicate/circular = jnp.pad reflect/edge/wrap "
              "before a 'VALID' conv")


@layer_kind(init=torch_default_init, example=dict(in_channels=2, out_channels=3, kernel_size=3, stride=2, padding=1),
            example_input=(2, 5, 5), hints={"Conv2d": f"Conv2d: {_CONV_HINT}"})
@dataclass(frozen=True)
class Conv2d(_Conv):
    """``torch.nn.Conv2d`` on (N, C, H, W); weight (out, in / groups, kH, kW) (see :class:`_Conv`)."""

    kind = "conv2d"
    dims = 2


@layer_kind(init=torch_default_init, example=dict(in_channels=2, out_channels=4, kernel_size=3, padding=2, dilation=2,
                                                  groups=2),
            example_input=(2, 7), hints={"Conv1d": "Conv1d: NNX runs it channels-last (N, L, C), kernel (k, in, out) = "
                                                   "weight.transpose(2, 1, 0); " + _CONV_HINT.replace(", (p, p)", "")})
@dataclass(frozen=True)
class Conv1d(_Conv):
    """``torch.nn.Conv1d`` on (N, C, L); weight (out, in / groups, k) (see :class:`_Conv`)."""

    kind = "conv1d"
    dims = 1

    def check_placement(self, spec, part: str, index: int) -> None:  # model specs run 3-d values as they are
        torch_layout_only(self, spec, part, index, max_rank=1)


@layer_kind(init=torch_default_init,
            example=dict(in_channels=3, out_channels=2, kernel_size=3, stride=2, padding=1, output_padding=1),
            example_input=(3, 5, 5),
            hints={"ConvTranspose2d": "ConvTranspose2d: check the kernel flip (transpose_kernel=True) and the padding "
                                      "(d(k - 1) - p, d(k - 1) - p + output_padding) -- negative where p > d(k - 1): "
                                      "torch crops the output (pitfall 4); groups: nnx.ConvTranspose has none"})
@dataclass(frozen=True)
class ConvTranspose2d(_ConvNd):
    """``torch.nn.ConvTranspose2d``; weight (in, out / groups, kH, kW).

    On the NNX side: ``nnx.ConvTranspose`` with ``transpose_kernel=True``, kernel
    ``weight.transpose(2, 3, 1, 0)`` and per-side padding ``(d(k - 1) - p, d(k - 1) - p + output_padding)``;
    where that is negative (torch crops the output) or with groups, ``ae_jax.layers.TorchConvTranspose``
    (the same kernel layout).
    """

    in_channels: int
    out_channels: int
    kernel_size: int | tuple[int, ...]
    stride: int | tuple[int, ...] = 1
    padding: int | tuple[int, ...] = 0
    output_padding: int | tuple[int, ...] = 0
    bias: bool = True
    dilation: int | tuple[int, ...] = 1
    groups: int = 1

    kind = "conv_transpose2d"
    dims = 2

    def __post_init__(self) -> None:
        self._check("padding", "output_padding")
        if any(op >= max(s, d) for op, s, d in zip(sizes(self.output_padding, 2), self.strides, self.dilations)):
            raise SpecError(f"{self}: output_padding must be smaller than stride or dilation (as in torch)")

    @property
    def pads(self) -> tuple[tuple[int, int], ...]:
        """The padding of the equivalent convolution over the stride-dilated input, per side (may be < 0)."""
        return tuple((d * (k - 1) - p, d * (k - 1) - p + op) for d, k, p, op in
                     zip(self.dilations, self.kernel, sizes(self.padding, 2), sizes(self.output_padding, 2)))

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        shapes = {"weight": (self.in_channels, self.out_channels // self.groups, *self.kernel)}
        if self.bias:
            shapes["bias"] = (self.out_channels,)
        return shapes

    def out_shape(self, in_shape: tuple[int, ...]) -> tuple[int, ...]:
        out = tuple((n - 1) * s - 2 * p + d * (k - 1) + op + 1 for n, s, p, d, k, op in
                    zip(self._spatial(in_shape), self.strides, sizes(self.padding, 2), self.dilations, self.kernel,
                        sizes(self.output_padding, 2)))
        if min(out) <= 0:
            raise SpecError(f"{self} on input {in_shape} gives an empty output")
        return (self.out_channels, *out)

    @property
    def fan_in(self) -> int:  # torch computes it from weight.size(1), which is out_channels / groups here
        return self.out_channels // self.groups * prod(self.kernel)

    def macs(self, in_shape: tuple[int, ...]) -> int:
        return prod(in_shape) * self.fan_in
