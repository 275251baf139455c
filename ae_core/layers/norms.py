"""Per-example normalisation layer kinds: LayerNorm and GroupNorm (batch normalisation: ``families.py``)."""

from __future__ import annotations

from dataclasses import dataclass

from .registry import LayerSpec, SpecError, layer_kind, norm_init, positive_ints, positive_number, torch_layout_only

_EPS_HINT = "torch's eps is 1e-5, Flax's epsilon 1e-6 (pitfall 6); the variance is the biased one, E[(x - mean)^2]"


@layer_kind(init=norm_init, example=dict(normalized_shape=(3, 4)), example_input=(2, 3, 4),
            hints={"LayerNorm": f"LayerNorm: normalises over the LAST len(normalized_shape) axes, in torch's layout "
                                f"(after a conv: over C, H, W of NCHW, not of NHWC); {_EPS_HINT}"})
@dataclass(frozen=True)
class LayerNorm(LayerSpec):
    """``torch.nn.LayerNorm(normalized_shape, eps, elementwise_affine, bias)``: each example normalised
    over its last ``len(normalized_shape)`` axes, then ``* weight + bias`` (both of ``normalized_shape``;
    no weight or bias without ``elementwise_affine``, no bias without ``bias``)."""

    normalized_shape: tuple[int, ...]
    eps: float = 1e-5
    elementwise_affine: bool = True
    bias: bool = True

    kind = "layer_norm"

    def __post_init__(self) -> None:
        shape = self.normalized_shape
        shape = (shape,) if isinstance(shape, int) else tuple(shape)
        if not shape or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in shape):
            raise SpecError(f"LayerNorm.normalized_shape must be positive ints, got {self.normalized_shape!r}")
        object.__setattr__(self, "normalized_shape", shape)
        positive_number(self, "eps")

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        if not self.elementwise_affine:
            return {}
        return {"weight": self.normalized_shape, **({"bias": self.normalized_shape} if self.bias else {})}

    def out_shape(self, in_shape: tuple[int, ...]) -> tuple[int, ...]:
        n = len(self.normalized_shape)
        if tuple(in_shape[-n:]) != self.normalized_shape or len(in_shape) < n:
            raise SpecError(f"{self} gets input of shape {in_shape}")
        return in_shape

    def check_placement(self, spec, part: str, index: int) -> None:
        torch_layout_only(self, spec, part, index)


@layer_kind(init=norm_init, example=dict(num_groups=2, num_channels=4), example_input=(4, 3),
            hints={"GroupNorm": f"GroupNorm: groups of consecutive channels of torch's axis 1 (nnx.GroupNorm "
                                f"groups the LAST axis: channels-last input); {_EPS_HINT}"})
@dataclass(frozen=True)
class GroupNorm(LayerSpec):
    """``torch.nn.GroupNorm(num_groups, num_channels, eps, affine)`` on (N, C, ...): each example's
    channels in ``num_groups`` groups of consecutive channels, each group normalised over its channels
    and positions, then ``* weight + bias`` per channel (``affine``)."""

    num_groups: int
    num_channels: int
    eps: float = 1e-5
    affine: bool = True

    kind = "group_norm"

    def __post_init__(self) -> None:
        positive_ints(self, "num_groups", "num_channels")
        positive_number(self, "eps")
        if self.num_channels % self.num_groups:
            raise SpecError(f"{self}: num_groups must divide num_channels (as in torch)")

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        return {"weight": (self.num_channels,), "bias": (self.num_channels,)} if self.affine else {}

    def out_shape(self, in_shape: tuple[int, ...]) -> tuple[int, ...]:
        if in_shape[:1] != (self.num_channels,):
            raise SpecError(f"{self} gets input of shape {in_shape}, expected ({self.num_channels}, ...)")
        return in_shape

    def check_placement(self, spec, part: str, index: int) -> None:
        torch_layout_only(self, spec, part, index)
