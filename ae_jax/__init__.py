"""ae_jax: the Flax NNX side of ae-parity (imports without torch)."""

from .convert import RULES, StateDictError, bindings, load_state_dict, state_dict, to_torch_layout
from .models import Autoencoder, build
from .numerics import jnp_dtype
from .weights import load_weights, model_dtype, save_weights

__all__ = ["Autoencoder", "RULES", "StateDictError", "bindings", "build", "jnp_dtype", "load_state_dict",
           "load_weights", "model_dtype", "save_weights", "state_dict",
           "to_torch_layout"]
