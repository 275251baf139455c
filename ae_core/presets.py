"""Named presets: the architectures of well-known tutorial autoencoders, one spec each."""

from __future__ import annotations

from .layers import (LSTM, Activation, BatchNorm1d, BatchNorm2d, Conv2d, ConvTranspose2d, Dropout, Flatten,
                     GaussianHead, GaussianNoise, LastStep, Linear, MaskingNoise, RepeatSteps, SpecError, TiedLinear,
                     Unflatten)
from .graph import Graph
from .spec import ModelSpec, mlp

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
        ModelSpec(
            name="conv_bn",
            # no bias in front of a BatchNorm (or of the Linear feeding one): the normalisation removes any
            # shift, so such a bias has a zero gradient and only adds rounding noise (torchvision does the same)
            encoder=(Conv2d(1, 16, 3, stride=2, padding=1, bias=False), BatchNorm2d(16), Activation("relu"),
                     Conv2d(16, 32, 3, stride=2, padding=1, bias=False), BatchNorm2d(32), Activation("relu"),
                     Flatten(), Dropout(0.2), Linear(32 * 7 * 7, 16, bias=False)),
            decoder=(Linear(16, 32 * 7 * 7, bias=False), BatchNorm1d(32 * 7 * 7), Activation("relu"),
                     Unflatten((32, 7, 7)),
                     ConvTranspose2d(32, 16, 3, stride=2, padding=1, output_padding=1, bias=False), BatchNorm2d(16),
                     Activation("relu"),
                     ConvTranspose2d(16, 1, 3, stride=2, padding=1, output_padding=1), Activation("sigmoid")),
            input="mnist_image",
            description="conv with BatchNorm2d/1d after each hidden layer and dropout before the bottleneck",
        ),
        ModelSpec(
            name="denoise",
            corrupt=(GaussianNoise(0.5, clip=True),),
            encoder=(Linear(784, 256), Activation("relu"), Linear(256, 64), Activation("relu")),
            decoder=(Linear(64, 256), Activation("relu"), Linear(256, 784), Activation("sigmoid")),
            description="denoising: trained on x + 0.5 * N(0, 1) clipped to [0, 1], against the clean x",
        ),
        ModelSpec(
            name="denoise_mask",
            corrupt=(MaskingNoise(0.3),),
            encoder=(Linear(784, 256), Activation("relu"), Linear(256, 64), Activation("relu")),
            decoder=(Linear(64, 256), Activation("relu"), Linear(256, 784), Activation("sigmoid")),
            description="denoising: trained on x with 30% of the pixels zeroed, against the clean x",
        ),
        ModelSpec(
            name="tied",
            encoder=(Linear(784, 256), Activation("relu"), Linear(256, 32), Activation("relu")),
            decoder=(TiedLinear("encoder.2", 32, 256), Activation("relu"),
                     TiedLinear("encoder.0", 256, 784), Activation("sigmoid")),
            description="tied weights: each decoder Linear is the transpose of its encoder twin (one parameter)",
        ),
        ModelSpec(
            name="vae",
            encoder=(Linear(784, 400), Activation("relu"), GaussianHead(400, 20)),
            decoder=(Linear(20, 400), Activation("relu"), Linear(400, 784), Activation("sigmoid")),
            # pytorch/examples' own module names (vae/main.py), so its saved state dict loads strictly
            names={"encoder.0": "fc1", "encoder.2.mu": "fc21", "encoder.2.logvar": "fc22", "decoder.0": "fc3",
                   "decoder.2": "fc4"},
            description="variational (pytorch/examples' VAE, its module names fc1 ... fc4): 20-d Gaussian codes, "
                        "BCE + KL loss",
        ),
        ModelSpec(
            name="lstm",
            encoder=(LSTM(28, 64), LastStep(), Linear(64, 16)),
            decoder=(Linear(16, 64), Activation("relu"), RepeatSteps(28), LSTM(64, 64), Linear(64, 28),
                     Activation("sigmoid")),
            input="mnist_rows",
            description="sequence: a digit's 28 rows into an LSTM, its last state to a 16-d code, an LSTM back",
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


def get_model(name_or_model: str | ModelSpec | Graph) -> ModelSpec | Graph:
    """What a trainer trains: a preset by name, a spec, or a model graph (``ae_core.graph``: a ported torch
    model, ``ae_core.graph_training``) itself."""
    return name_or_model if isinstance(name_or_model, Graph) else get_spec(name_or_model)
