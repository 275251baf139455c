"""Layer specs, one registered kind each (see :mod:`ae_core.layers.registry`)."""

from .basic import ACTIVATIONS, Activation, Embedding, Flatten, Linear, PReLU, Unflatten
from .conv import Conv1d, Conv2d, ConvTranspose2d
from .families import (BatchNorm1d, BatchNorm2d, Dropout, GaussianHead, GaussianNoise, LastStep, MaskingNoise,
                       RepeatSteps, TiedLinear)
from .norms import GroupNorm, LayerNorm
from .recurrent import GRU, LSTM
from .registry import LAYER_KINDS, LayerKind, LayerSpec, SpecError, layer_kind, spec_class

__all__ = ["ACTIVATIONS", "GRU", "LAYER_KINDS", "LSTM", "Activation", "BatchNorm1d", "BatchNorm2d", "Conv1d", "Conv2d",
           "ConvTranspose2d", "Dropout", "Embedding", "Flatten", "GaussianHead", "GaussianNoise", "GroupNorm",
           "LastStep", "LayerKind", "LayerNorm", "LayerSpec", "Linear", "MaskingNoise", "PReLU", "RepeatSteps",
           "SpecError", "TiedLinear", "Unflatten", "layer_kind", "spec_class"]
