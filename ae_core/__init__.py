"""ae_core: the framework-free core of ae-parity (numpy only).

Model specs and presets, MNIST files, batch order, the canonical state dict and safetensors
checkpoints, PyTorch-default initial weights.
"""

from .batches import epoch_batches, epoch_permutation
from .errors import UsageError
from .init import init_state_dict
from .inputs import model_inputs
from .presets import DEFAULT_PRESET, PRESETS, get_model, get_spec
from .layers import (GRU, LAYER_KINDS, LSTM, Activation, BatchNorm1d, BatchNorm2d, Conv1d, Conv2d, ConvTranspose2d,
                     Dropout, Embedding, Flatten, GaussianHead, GaussianNoise, GroupNorm, LastStep, LayerNorm,
                     LayerSpec, Linear, MaskingNoise, PReLU, RepeatSteps, SpecError, TiedLinear, Unflatten)
from .spec import ModelSpec, mlp
from .training import Trainer
from .weights import CheckpointError, StateDictError, load_weights, save_weights

DTYPES = ("float32", "float64")


def check_dtype(dtype) -> str:
    """Normalise a dtype argument ("float32", np.float64, torch.float64, jnp.float32...) to its name."""
    name = getattr(dtype, "__name__", None) or str(dtype)
    name = name.replace("torch.", "").replace("<class 'numpy.", "").replace("'>", "")
    if name not in DTYPES:
        raise UsageError(f"unsupported dtype {dtype!r}; expected one of {DTYPES}")
    return name


__all__ = [
    "GRU", "LSTM", "Activation", "BatchNorm1d", "BatchNorm2d", "CheckpointError", "Conv1d", "Conv2d", "ConvTranspose2d",
    "Dropout", "Embedding", "Flatten", "GaussianHead", "GaussianNoise", "GroupNorm", "LastStep", "LayerNorm",
    "MaskingNoise", "PReLU", "RepeatSteps", "TiedLinear", "Unflatten",
    "DEFAULT_PRESET", "DTYPES", "LAYER_KINDS", "LayerSpec", "Linear", "ModelSpec", "PRESETS",
    "SpecError", "StateDictError", "check_dtype", "epoch_batches", "epoch_permutation", "get_model", "get_spec",
    "Trainer", "UsageError", "init_state_dict", "load_weights", "mlp", "model_inputs", "save_weights",
]
