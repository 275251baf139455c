"""Layer specs, one registered kind each (see :mod:`ae_core.layers.registry`)."""

from .basic import ACTIVATIONS, Activation, Conv2d, ConvTranspose2d, Flatten, Linear, Unflatten
from .families import (LSTM, BatchNorm1d, BatchNorm2d, Dropout, GaussianHead, GaussianNoise, LastStep, MaskingNoise,
                       RepeatSteps, TiedLinear)
from .registry import LAYER_KINDS, LayerKind, LayerSpec, SpecError, layer_kind, spec_class

__all__ = ["ACTIVATIONS", "LAYER_KINDS", "LSTM", "Activation", "BatchNorm1d", "BatchNorm2d", "Conv2d",
           "ConvTranspose2d", "Dropout", "Flatten", "GaussianHead", "GaussianNoise", "LastStep", "LayerKind",
           "LayerSpec", "Linear", "MaskingNoise", "RepeatSteps", "SpecError", "TiedLinear", "Unflatten", "layer_kind",
           "spec_class"]
