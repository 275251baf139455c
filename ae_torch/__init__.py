"""ae_torch: the reference PyTorch side of ae-parity (imports without jax)."""

from .models import TORCH_DTYPES, Autoencoder, build, model_dtype
from .weights import load_state_dict, load_weights, save_weights, state_dict

__all__ = ["Autoencoder", "TORCH_DTYPES", "build", "load_state_dict", "load_weights", "model_dtype",
           "save_weights", "state_dict"]
