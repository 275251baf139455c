"""Named presets: the architectures of well-known tutorial autoencoders, one spec each."""

from __future__ import annotations

from .spec import Activation, Conv2d, ConvTranspose2d, Flatten, Linear, ModelSpec, SpecError, Unflatten, mlp

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
        ModelSpec(
            name="conv",
            encoder=(Conv2d(1, 16, 3, stride=2, padding=1), Activation("relu"),    # 16x14x14
                     Conv2d(16, 32, 3, stride=2, padding=1), Activation("relu"),   # 32x7x7
                     Flatten(), Linear(32 * 7 * 7, 16)),
            decoder=(Linear(16, 32 * 7 * 7), Activation("relu"), Unflatten((32, 7, 7)),
                     ConvTranspose2d(32, 16, 3, stride=2, padding=1, output_padding=1), Activation("relu"),  # 16x14x14
                     ConvTranspose2d(16, 1, 3, stride=2, padding=1, output_padding=1), Activation("sigmoid")),
            input="mnist_image",
            description="convolutional: stride-2 convs, a Linear bottleneck, transposed convs back to 28x28",
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
