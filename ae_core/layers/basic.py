"""Dense, embedding, reshaping and activation layer kinds (the convolutions: ``conv.py``)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .registry import (LayerSpec, SpecError, layer_kind, no_state, positive_ints, prod, torch_default_init,
                       torch_layout_only)

ACTIVATIONS = ("relu", "tanh", "sigmoid", "gelu", "identity")


class _Weighted(LayerSpec):
    """Layers with a weight matrix or kernel: shown by their output shape; ``fan_in`` sets their init."""

    shown = "shape"


@layer_kind(init=torch_default_init, example=dict(in_features=3, out_features=2), example_input=(3,),
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


@layer_kind(init=no_state,
            hints={"Flatten": "Flatten after convolutions: transpose NHWC -> NCHW before reshaping, or the next "
                              "Linear's weights meet the features in another order (pitfall 3)"})
@dataclass(frozen=True)
class Flatten(LayerSpec):
    """``nn.Flatten()``: (C, H, W) -> C*H*W in channels-first order (NNX: NHWC -> NCHW, then reshape)."""

    kind = "flatten"
    shown = "none"
    image = True  # its NNX layer takes channels-last activations

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
    image = True  # its NNX layer gives channels-last activations

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


def prelu_init(layer, rng: np.random.Generator, dtype: str) -> dict[str, np.ndarray]:
    """torch's PReLU start (``reset_parameters``: ``constant_(weight, init)``): every slope ``init``."""
    return {"weight": np.full(layer.num_parameters, layer.init, dtype)}


@layer_kind(init=prelu_init, example=dict(num_parameters=2), example_input=(2, 3),
            hints={"PReLU": "PReLU: one learned slope (num_parameters=1) or one per channel, the channel being axis 1 "
                            "of torch's (N, C, ...): y = x if x > 0 else weight * x; it starts at 0.25"})
@dataclass(frozen=True)
class PReLU(LayerSpec):
    """``torch.nn.PReLU(num_parameters, init)``: ``max(0, x) + weight * min(0, x)``, weight (num_parameters,)
    on the channel axis (axis 1 of (N, C, ...)), or one slope for every element."""

    num_parameters: int = 1
    init: float = 0.25

    kind = "prelu"

    def __post_init__(self) -> None:
        positive_ints(self, "num_parameters")
        if not isinstance(self.init, (int, float)) or isinstance(self.init, bool):
            raise SpecError(f"PReLU.init must be a number, got {self.init!r}")

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        return {"weight": (self.num_parameters,)}

    def out_shape(self, in_shape: tuple[int, ...]) -> tuple[int, ...]:
        if self.num_parameters > 1 and in_shape[:1] != (self.num_parameters,):
            raise SpecError(f"{self} gets input of shape {in_shape}, expected ({self.num_parameters}, ...)")
        return in_shape

    def check_placement(self, spec, part: str, index: int) -> None:
        if self.num_parameters > 1:
            torch_layout_only(self, spec, part, index)


def embedding_init(layer, rng: np.random.Generator, dtype: str) -> dict[str, np.ndarray]:
    """torch's Embedding start (``reset_parameters``: ``normal_``, then the padding row zeroed): N(0, 1)."""
    weight = rng.standard_normal((layer.num_embeddings, layer.embedding_dim)).astype(dtype)
    if layer.padding_idx is not None:
        weight[layer.padding_idx] = 0
    return {"weight": weight}


@layer_kind(init=embedding_init, example=dict(num_embeddings=5, embedding_dim=3, padding_idx=1), example_input=(4,),
            hints={"Embedding": "Embedding: a gather of integer indices, table (num_embeddings, dim) the same layout on "
                                "both sides (nnx.Embed's 'embedding'); torch gives the padding_idx row no gradient, "
                                "jnp.take does: stop it (jax.lax.stop_gradient where index == padding_idx)"})
@dataclass(frozen=True)
class Embedding(LayerSpec):
    """``torch.nn.Embedding(num_embeddings, embedding_dim, padding_idx)``: integer indices (N, ...) ->
    rows of ``weight`` (N, ..., embedding_dim). The ``padding_idx`` row starts at 0 and gets no gradient."""

    num_embeddings: int
    embedding_dim: int
    padding_idx: int | None = None

    kind = "embedding"
    input_dtype = "int"
    shown = "shape"

    def __post_init__(self) -> None:
        positive_ints(self, "num_embeddings", "embedding_dim")
        p = self.padding_idx
        if p is not None and (not isinstance(p, int) or isinstance(p, bool) or not 0 <= p < self.num_embeddings):
            raise SpecError(f"Embedding.padding_idx must be None or in [0, {self.num_embeddings}), got {p!r} (torch "
                            f"turns a negative one into num_embeddings + padding_idx)")

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        return {"weight": (self.num_embeddings, self.embedding_dim)}

    def out_shape(self, in_shape: tuple[int, ...]) -> tuple[int, ...]:
        return in_shape + (self.embedding_dim,)

    def check_placement(self, spec, part: str, index: int) -> None:
        raise SpecError(f"{self} takes integer indices; a model spec's layers get float values")
