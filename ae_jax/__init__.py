"""ae_jax: the Flax NNX side of ae-parity (imports without torch).

Mirrors ``ae_torch`` module for module: layers, models, weights, data, losses, optim, train, numerics;
plus convert (the layout rule table), sharding and sweep.
"""

from .convert import RULES, ParamRule, bindings
from .models import Autoencoder, build
from .numerics import enable_x64, jnp_dtype, matmul_precision
from .weights import (StateDictError, load_state_dict, load_weights, model_dtype, save_weights, state_dict,
                      to_torch_layout)

__all__ = ["Autoencoder", "ParamRule", "RULES", "StateDictError", "bindings", "build", "enable_x64", "jnp_dtype",
           "load_state_dict", "load_weights", "matmul_precision", "model_dtype", "save_weights", "state_dict",
           "to_torch_layout"]
