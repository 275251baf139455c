"""ae_torch: the reference PyTorch side of ae-parity (imports without jax).

Mirrors ``ae_jax`` module for module: layers, models, weights, data, losses, optim, train, numerics.
"""

from .models import Autoencoder, build
from .numerics import TORCH_DTYPES, tf32, torch_dtype
from .weights import load_state_dict, load_weights, model_dtype, save_weights, state_dict

__all__ = ["Autoencoder", "TORCH_DTYPES", "build", "load_state_dict", "load_weights", "model_dtype",
           "save_weights", "state_dict", "tf32", "torch_dtype"]
