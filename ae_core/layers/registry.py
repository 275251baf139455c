"""The layer registry: one entry per layer kind, and what every layer spec shares.

A layer kind is ONE spec class (a frozen dataclass in this package) registered with
:func:`layer_kind`, which records beside it:

- ``init``: the init rule, PyTorch's default initialisation drawn with numpy (``ae_core.init``);
- ``hints``: what usually goes wrong when that layer is ported (``{torch class name: hint}``; the
  divergence finder ``ae_parity.compare`` shows them);
- ``example``: the arguments of a small instance, which the registry table test builds in both
  frameworks, and ``example_input``: the per-example shape (torch layout) of an input that instance
  takes, for tests that run it (integer indices in [0, 2) where the spec's ``input_dtype`` is "int").

Each framework registers its builder for the same spec class beside its own layer code
(``ae_torch/layers.py``, ``ae_jax/layers.py``, the latter with the layout rule of its parameters).
Nothing anywhere switches over layer kinds: a layer spec says what it needs through the class
attributes of :class:`LayerSpec`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Mapping

import numpy as np


class SpecError(ValueError):
    """A model spec that cannot describe a working model."""


class LayerSpec:
    """What every layer spec has; subclasses are frozen dataclasses registered with :func:`layer_kind`.

    Class attributes (defaults here) describe how a model uses the layer:
    ``inputs``: what the layer takes besides the activations, by name -- ``"noise"`` (its supplied
    train-mode noise, see :meth:`noise`) or ``"tied_weight"`` (the weight of the layer named by
    ``tied_to``); ``outputs``: extra outputs after the activations (the VAE head's ``mu``, ``logvar``);
    ``corruption``: the layer belongs in ``ModelSpec.corrupt`` (and only there); ``image``: it takes
    channels-first (N, C, *spatial) values in torch -- (N, C, H, W) images, (N, C, L) sequences -- and its
    NNX layer runs channels-last (a graph converts around it, ``ae_jax.graph``; (N, C) stays as it is);
    ``input_dtype``: "float", or "int" for indices (Embedding); ``shown``: how
    ``ModelSpec.describe`` shows it ("shape", "kind", "activation" or "none").
    """

    kind: ClassVar[str]
    inputs: ClassVar[tuple[str, ...]] = ()
    outputs: ClassVar[tuple[str, ...]] = ()
    corruption: ClassVar[bool] = False
    image: ClassVar[bool] = False
    input_dtype: ClassVar[str] = "float"
    shown: ClassVar[str] = "kind"
    int_buffers: ClassVar[tuple[str, ...]] = ()

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        """Trainable parameters: torch names (relative to the layer) -> shapes in torch layout."""
        return {}

    def buffer_shapes(self) -> dict[str, tuple[int, ...]]:
        """Buffers (running statistics, counters): torch names -> shapes."""
        return {}

    def state_shapes(self) -> dict[str, tuple[int, ...]]:
        """Everything in the layer's ``state_dict``, in torch's order (parameters, then buffers)."""
        return {**self.param_shapes(), **self.buffer_shapes()}

    def out_shape(self, in_shape: tuple[int, ...]) -> tuple[int, ...]:
        """The per-example output shape for a per-example input shape (raises SpecError if it does not fit)."""
        return in_shape

    def noise(self, in_shape: tuple[int, ...]) -> tuple[str, tuple[int, ...], float] | None:
        """The train-mode random input one example needs, ``(kind, shape, param)``, or None."""
        return None

    def check_placement(self, spec, part: str, index: int) -> None:
        """Raise SpecError if the layer cannot sit at ``spec.<part>[index]`` (default: anywhere)."""


@dataclass(frozen=True)
class LayerKind:
    """One registry entry: the spec class and what is registered beside it in ae_core."""

    spec: type
    init: Callable[[Any, np.random.Generator, str], dict[str, np.ndarray]]
    hints: Mapping[str, str]
    example: Mapping[str, Any]
    example_input: tuple[int, ...] | None = None

    @property
    def kind(self) -> str:
        return self.spec.kind

    def example_layer(self) -> LayerSpec:
        return self.spec(**self.example)


LAYER_KINDS: dict[str, LayerKind] = {}


def layer_kind(*, init, hints: Mapping[str, str], example: Mapping[str, Any] | None = None,
               example_input: tuple[int, ...] | None = None):
    """Class decorator: register a layer spec class as a layer kind (see the module docstring)."""

    def register(cls):
        if not (isinstance(cls, type) and issubclass(cls, LayerSpec)):
            raise TypeError(f"{cls!r} is not a LayerSpec subclass")
        if cls.kind in LAYER_KINDS:
            raise TypeError(f"layer kind {cls.kind!r} is registered twice ({LAYER_KINDS[cls.kind].spec.__name__}, "
                            f"{cls.__name__})")
        LAYER_KINDS[cls.kind] = LayerKind(cls, init, dict(hints), dict(example or {}),
                                     None if example_input is None else tuple(example_input))
        return cls

    return register


def spec_class(kind: str) -> type:
    """The spec class of a registered kind (SpecError for an unknown one)."""
    if kind not in LAYER_KINDS:
        raise SpecError(f"unknown layer kind {kind!r}; known: {', '.join(sorted(LAYER_KINDS))}")
    return LAYER_KINDS[kind].spec


# ------------------------------------------------------------------------------- init rules ----
def torch_default_init(layer, rng: np.random.Generator, dtype: str) -> dict[str, np.ndarray]:
    """PyTorch's default for layers with weights: every parameter U(-1/sqrt(fan_in), 1/sqrt(fan_in)),
    drawn in ``param_shapes()`` order (``kaiming_uniform_(a=sqrt(5))`` for weights, the same bound for
    biases; LSTM uses fan_in = hidden_size for every tensor). See ae_core.init."""
    bound = 1.0 / math.sqrt(layer.fan_in)
    return {name: rng.uniform(-bound, bound, size=shape).astype(dtype) for name, shape in layer.param_shapes().items()}


def batchnorm_init(layer, rng: np.random.Generator, dtype: str) -> dict[str, np.ndarray]:
    """torch's BatchNorm start: weight 1, bias 0 (affine only), running_mean 0, running_var 1,
    num_batches_tracked 0 (track_running_stats only)."""
    c = layer.num_features
    affine = {"weight": np.ones(c, dtype), "bias": np.zeros(c, dtype)} if layer.affine else {}
    if not layer.track_running_stats:
        return affine
    return {**affine, "running_mean": np.zeros(c, dtype), "running_var": np.ones(c, dtype),
            "num_batches_tracked": np.zeros((), np.int64)}


def norm_init(layer, rng: np.random.Generator, dtype: str) -> dict[str, np.ndarray]:
    """torch's LayerNorm / GroupNorm start (``reset_parameters``: ``ones_`` / ``zeros_``): every weight 1,
    every bias 0."""
    return {name: (np.ones if name.endswith("weight") else np.zeros)(shape, dtype)
            for name, shape in layer.param_shapes().items()}


def no_state(layer, rng: np.random.Generator, dtype: str) -> dict[str, np.ndarray]:
    """Parameter-free layers: nothing to initialise."""
    return {}


# ------------------------------------------------------------------------------- validation ----
def placement_rank(spec, part: str, index: int) -> int | None:
    """The rank of the per-example value that ``spec.<part>[index]`` receives; None where the spec's shapes
    do not work out (its own shape check reports that)."""
    if part == "corrupt":
        return len(spec.input_shape)
    try:
        shapes = spec.layer_input_shapes()
    except SpecError:
        return None
    return len(shapes[(0 if part == "encoder" else len(spec.encoder)) + index][1])


def torch_layout_only(layer, spec, part: str, index: int, max_rank: int = 2) -> None:
    """For ``check_placement``: a layer whose axes are torch's (channels on axis 1) cannot take the values a
    model spec's NNX modules run channels-last (per-example rank 3: images), nor more than ``max_rank``."""
    rank = placement_rank(spec, part, index)
    if rank is not None and rank > max_rank:
        raise SpecError(f"{layer} on {rank}-d examples: a model spec's NNX layers run them channels-last, where "
                        f"this layer's axes are not torch's; use it in a torch model ported with `ae-parity port`")
def prod(shape) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def positive_ints(layer, *names, allow_zero=()) -> None:
    for name in names:
        value = getattr(layer, name)
        low = 0 if name in allow_zero else 1
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise SpecError(f"{type(layer).__name__}.{name} must be an int >= {low}, got {value!r}")


def positive_number(layer, name: str) -> None:
    value = getattr(layer, name)
    if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
        raise SpecError(f"{type(layer).__name__}.{name} must be > 0, got {value!r}")


def probability(layer, name: str = "p") -> None:
    value = getattr(layer, name)
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0.0 <= value < 1.0:
        raise SpecError(f"{type(layer).__name__}.{name} must be a probability in [0, 1), got {value!r}")
