"""Layer kinds of the model families: batch normalisation, dropout and corruption, tied weights, the VAE
head, the sequence helpers of the LSTM preset (the recurrent layers: ``recurrent.py``)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from .registry import (LayerSpec, SpecError, batchnorm_init, layer_kind, no_state, positive_ints, positive_number,
                       probability, prod, torch_default_init, torch_layout_only)
from .basic import Linear

_BN_HINT = ("BatchNorm in training mode: Flax momentum = 1 - torch momentum, torch's running_var is the UNBIASED "
            "variance, eps; eval() <-> use_running_average=True (pitfall 5)")
_NOISE_HINT = ("train-mode randomness cannot match across frameworks' RNGs: compare in eval mode, or give both "
               "sides the same supplied noise (ae_core.noise; pitfall 14)")


@dataclass(frozen=True)
class _BatchNorm(LayerSpec):
    """Shared by BatchNorm1d / BatchNorm2d: torch's semantics, stated once.

    Train mode normalises with the batch mean and *biased* batch variance and updates
    ``running = (1 - momentum) * running + momentum * batch`` with the *unbiased* batch variance
    (torch's momentum 0.1 is Flax's momentum 0.9); eval mode uses the running statistics.
    ``num_batches_tracked`` (int64) counts training batches; ``momentum=None`` is torch's cumulative
    average (factor 1 / num_batches_tracked). Parameters weight (gamma) and bias (beta); buffers
    running_mean, running_var, num_batches_tracked. ``track_running_stats=False``: no buffers, batch
    statistics in both modes.
    """

    num_features: int
    eps: float = 1e-5
    momentum: float | None = 0.1
    affine: bool = True  # torch's affine=False: no weight, no bias (normalisation only)
    track_running_stats: bool = True

    def __post_init__(self) -> None:
        positive_ints(self, "num_features")
        positive_number(self, "eps")
        m = self.momentum
        if m is not None and (not isinstance(m, (int, float)) or isinstance(m, bool) or not 0 < m <= 1):
            raise SpecError(f"{type(self).__name__}.momentum must be in (0, 1] (torch convention) or None "
                            f"(a cumulative average), got {m!r}")
        for name in ("affine", "track_running_stats"):
            if not isinstance(getattr(self, name), bool):
                raise SpecError(f"{type(self).__name__}.{name} must be a bool, got {getattr(self, name)!r}")

    @property
    def int_buffers(self) -> tuple[str, ...]:
        return ("num_batches_tracked",) if self.track_running_stats else ()

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        return {"weight": (self.num_features,), "bias": (self.num_features,)} if self.affine else {}

    def buffer_shapes(self) -> dict[str, tuple[int, ...]]:
        if not self.track_running_stats:
            return {}
        return {"running_mean": (self.num_features,), "running_var": (self.num_features,), "num_batches_tracked": ()}


@layer_kind(init=batchnorm_init, example=dict(num_features=3), example_input=(3,), hints={"BatchNorm1d": _BN_HINT})
@dataclass(frozen=True)
class BatchNorm1d(_BatchNorm):
    """``torch.nn.BatchNorm1d(C)`` on (N, C) activations or (N, C, L) sequences (NNX: channels last)."""

    kind = "batchnorm1d"
    image = True  # (N, C) as it is, (N, C, L) channels-last

    def out_shape(self, in_shape: tuple[int, ...]) -> tuple[int, ...]:
        if len(in_shape) not in (1, 2) or in_shape[0] != self.num_features:
            raise SpecError(f"{self} gets input of shape {in_shape}, expected ({self.num_features},) or "
                            f"({self.num_features}, L)")
        return in_shape

    def check_placement(self, spec, part: str, index: int) -> None:  # (C, L) sequences: ported graphs only
        torch_layout_only(self, spec, part, index, max_rank=1)


@layer_kind(init=batchnorm_init, example=dict(num_features=3), example_input=(3, 4, 4),
            hints={"BatchNorm2d": _BN_HINT})
@dataclass(frozen=True)
class BatchNorm2d(_BatchNorm):
    """``torch.nn.BatchNorm2d(C)`` on (N, C, H, W) activations (NNX: channels last)."""

    kind = "batchnorm2d"
    image = True

    def out_shape(self, in_shape: tuple[int, ...]) -> tuple[int, ...]:
        if len(in_shape) != 3 or in_shape[0] != self.num_features:
            raise SpecError(f"{self} gets input of shape {in_shape}, expected ({self.num_features}, H, W)")
        return in_shape


@layer_kind(init=no_state, example=dict(p=0.25),
            hints={"Dropout": "Dropout: compare in eval mode, or give both sides the same masks (pitfall 14)"})
@dataclass(frozen=True)
class Dropout(LayerSpec):
    """``torch.nn.Dropout(p)``: in train mode ``x * mask / (1 - p)`` with a Bernoulli(1 - p) keep-mask.

    The mask is *supplied* (``ae_core.noise``: drawn once with numpy, given to both frameworks), so
    both sides drop the same units; eval mode is the identity.
    """

    p: float = 0.5

    kind = "dropout"
    inputs = ("noise",)

    def __post_init__(self) -> None:
        probability(self)

    def noise(self, in_shape: tuple[int, ...]) -> tuple[str, tuple[int, ...], float]:
        return ("bernoulli", in_shape, 1.0 - self.p)


@layer_kind(init=no_state, example=dict(std=0.5), hints={"GaussianNoise": _NOISE_HINT})
@dataclass(frozen=True)
class GaussianNoise(LayerSpec):
    """Denoising corruption ``x + std * eps`` (eps ~ N(0, 1), supplied), clipped to [0, 1] if ``clip``."""

    std: float = 0.5
    clip: bool = True

    kind = "gaussian_noise"
    inputs = ("noise",)
    corruption = True

    def __post_init__(self) -> None:
        positive_number(self, "std")

    def noise(self, in_shape: tuple[int, ...]) -> tuple[str, tuple[int, ...], float]:
        return ("normal", in_shape, 1.0)


@layer_kind(init=no_state, example=dict(p=0.3), hints={"MaskingNoise": _NOISE_HINT})
@dataclass(frozen=True)
class MaskingNoise(LayerSpec):
    """Denoising corruption ``x * mask``: each input set to 0 with probability ``p`` (no rescaling)."""

    p: float = 0.3

    kind = "masking_noise"
    inputs = ("noise",)
    corruption = True

    def __post_init__(self) -> None:
        probability(self)

    def noise(self, in_shape: tuple[int, ...]) -> tuple[str, tuple[int, ...], float]:
        return ("bernoulli", in_shape, 1.0 - self.p)


@layer_kind(init=torch_default_init, example=dict(tied_to="encoder.0", in_features=2, out_features=3),
            hints={"TiedLinear": "TiedLinear: the decoder reuses the encoder Linear's weight transposed, "
                                 "y = x @ W_src + b (Flax: x @ kernel_src.T); one parameter, its gradient the sum "
                                 "of both uses (pitfall 1 for the kernel's layout)"})
@dataclass(frozen=True)
class TiedLinear(LayerSpec):
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
    inputs = ("tied_weight",)
    shown = "shape"

    def __post_init__(self) -> None:
        positive_ints(self, "in_features", "out_features")
        if not (isinstance(self.tied_to, str) and re.fullmatch(r"encoder\.\d+", self.tied_to)):
            raise SpecError(f"TiedLinear.tied_to must name an encoder layer like 'encoder.0', got {self.tied_to!r}")

    @property
    def source_index(self) -> int:
        """The index of the encoder Linear named by ``tied_to``."""
        return int(self.tied_to.split(".")[1])

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        return {"bias": (self.out_features,)} if self.bias else {}

    def out_shape(self, in_shape: tuple[int, ...]) -> tuple[int, ...]:
        if in_shape[-1:] != (self.in_features,):
            raise SpecError(f"{self} gets input of shape {in_shape}")
        return in_shape[:-1] + (self.out_features,)

    def check_placement(self, spec, part: str, index: int) -> None:
        if part != "decoder":
            raise SpecError("TiedLinear belongs in the decoder")
        source = spec.encoder[self.source_index] if self.source_index < len(spec.encoder) else None
        if not isinstance(source, Linear):
            raise SpecError(f"tied_to={self.tied_to!r} is {source!r}, not an encoder Linear")
        if (self.in_features, self.out_features) != (source.out_features, source.in_features):
            raise SpecError(f"TiedLinear({self.in_features} -> {self.out_features}) cannot reuse the "
                            f"transpose of {self.tied_to} = {source}")

    @property
    def fan_in(self) -> int:
        return self.in_features

    def macs(self, in_shape: tuple[int, ...]) -> int:
        return prod(in_shape[:-1]) * self.in_features * self.out_features


@layer_kind(init=torch_default_init, example=dict(in_features=4, latent=2),
            hints={"GaussianHead": "VAE head: z = mu + exp(0.5 * logvar) * eps (not exp(logvar)), with the same "
                                   "supplied eps on both sides; eval mode returns mu (pitfall 14)"})
@dataclass(frozen=True)
class GaussianHead(LayerSpec):
    """The VAE encoder head: two Linears ``mu`` and ``logvar`` (in_features -> latent).

    Train mode samples the code ``z = mu + exp(0.5 * logvar) * eps`` with eps ~ N(0, 1) supplied;
    eval mode returns ``mu``. Must be the last encoder layer.
    """

    in_features: int
    latent: int

    kind = "gaussian_head"
    inputs = ("noise",)
    outputs = ("mu", "logvar")
    shown = "shape"

    def __post_init__(self) -> None:
        positive_ints(self, "in_features", "latent")

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        return {f"{head}.{p}": shape for head in ("mu", "logvar")
                for p, shape in (("weight", (self.latent, self.in_features)), ("bias", (self.latent,)))}

    def out_shape(self, in_shape: tuple[int, ...]) -> tuple[int, ...]:
        if in_shape != (self.in_features,):
            raise SpecError(f"{self} gets input of shape {in_shape}")
        return (self.latent,)

    def check_placement(self, spec, part: str, index: int) -> None:
        if part != "encoder" or index != len(spec.encoder) - 1:
            raise SpecError("a GaussianHead must be the last encoder layer")

    @property
    def fan_in(self) -> int:
        return self.in_features

    def macs(self, in_shape: tuple[int, ...]) -> int:
        return 2 * self.in_features * self.latent

    def noise(self, in_shape: tuple[int, ...]) -> tuple[str, tuple[int, ...], float]:
        return ("normal", (self.latent,), 1.0)


@layer_kind(init=no_state, hints={"LastStep": "LastStep: output[:, -1] of a batch_first sequence (torch's "
                                              "nn.LSTM is batch_first=False unless told; check the time axis)"})
@dataclass(frozen=True)
class LastStep(LayerSpec):
    """(steps, features) -> features of the last step (``output[:, -1]``)."""

    kind = "last_step"
    shown = "none"

    def out_shape(self, in_shape: tuple[int, ...]) -> tuple[int, ...]:
        if len(in_shape) != 2:
            raise SpecError(f"LastStep gets input of shape {in_shape}, expected (steps, features)")
        return in_shape[1:]


@layer_kind(init=no_state, example=dict(steps=3),
            hints={"RepeatSteps": "RepeatSteps: the code repeated along the time axis (axis 1, batch_first)"})
@dataclass(frozen=True)
class RepeatSteps(LayerSpec):
    """features -> (steps, features): the code repeated at every step (the LSTM decoder's input)."""

    steps: int

    kind = "repeat_steps"
    shown = "none"

    def __post_init__(self) -> None:
        positive_ints(self, "steps")

    def out_shape(self, in_shape: tuple[int, ...]) -> tuple[int, ...]:
        if len(in_shape) != 1:
            raise SpecError(f"{self} gets input of shape {in_shape}, expected (features,)")
        return (self.steps, in_shape[0])
