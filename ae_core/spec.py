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
INPUT_KINDS = {"mnist": (784,), "features128": (128,)}


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


LayerSpec = Union[Linear, Activation]
LAYER_TYPES = {cls.kind: cls for cls in (Linear, Activation)}


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
        total = 0
        for shape in self.param_shapes().values():
            n = 1
            for d in shape:
                n *= d
            total += n
        return total

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
        """``784-128-64-...`` for the Linear widths of one side, with the activations named."""
        widths, acts = [], []
        for layer in getattr(self, part):
            if isinstance(layer, Linear):
                if not widths:
                    widths.append(str(layer.in_features))
                widths.append(str(layer.out_features))
            elif isinstance(layer, Activation) and layer.name not in acts:
                acts.append(layer.name)
        return "-".join(widths) + (f" ({', '.join(acts)})" if acts else "")


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
