"""Named presets: the architectures of well-known tutorial autoencoders, one spec each."""

from __future__ import annotations

from .spec import Activation, Linear, ModelSpec, SpecError, mlp

PRESETS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        mlp(
            "mlp9",
            [784, 128, 64, 36, 18, 9],
            "relu",
            out_act="sigmoid",
            description="the common MNIST tutorial model: 9-d codes, sigmoid pixels",
        ),
        mlp(
            "tanh3",
            [784, 128, 64, 32, 16, 3],
            "tanh",
            out_act="sigmoid",
            description="3-d codes for plotting",
        ),
        mlp("mlp16", [784, 128, 64, 32, 16], "relu", description="16-d codes, linear output"),
        ModelSpec(
            name="shallow128",
            encoder=(Linear(784, 128), Activation("relu")),
            decoder=(Linear(128, 784), Activation("relu")),
            description="one layer each side; codes are non-negative",
        ),
        ModelSpec(
            name="vec64",
            encoder=(Linear(128, 64), Activation("relu"), Linear(64, 64), Activation("relu")),
            decoder=(Linear(64, 128), Activation("relu"), Linear(128, 128), Activation("relu")),
            input="features128",
            description="for 128-d feature vectors, not images",
        ),
    )
}

DEFAULT_PRESET = "mlp9"


def get_spec(name_or_spec: str | ModelSpec) -> ModelSpec:
    """A preset by name, or the spec itself."""
    if isinstance(name_or_spec, ModelSpec):
        return name_or_spec
    if isinstance(name_or_spec, str):
        try:
            return PRESETS[name_or_spec]
        except KeyError:
            raise SpecError(f"unknown preset {name_or_spec!r}; known: {', '.join(PRESETS)}") from None
    raise SpecError(f"expected a preset name or a ModelSpec, got {type(name_or_spec).__name__}")
