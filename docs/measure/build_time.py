"""Time to build each preset with its seeded weights: abstract construction (``nnx.eval_shape``) + the
numpy weights, as ``ae_jax.build(seed=S)`` does, against the concrete module (every layer's random
initialisation compiled, then overwritten); checks that both give the same state.

    python docs/measure/build_time.py
"""

import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from ae_core import PRESETS, get_spec, init_state_dict
from ae_jax.models import Autoencoder
from ae_jax.weights import load_state_dict, state_dict

for preset in sorted(PRESETS):
    spec = get_spec(preset)
    t = time.time()
    abstract = nnx.eval_shape(lambda spec=spec: Autoencoder(spec, rngs=nnx.Rngs(0), dtype=jnp.float32))
    load_state_dict(abstract, init_state_dict(spec, 0, "float32"))
    t_abstract = time.time() - t
    t = time.time()
    concrete = Autoencoder(spec, rngs=nnx.Rngs(0), dtype=jnp.float32)
    load_state_dict(concrete, init_state_dict(spec, 0, "float32"))
    t_concrete = time.time() - t
    a, b = state_dict(abstract), state_dict(concrete)
    same = set(a) == set(b) and all(np.array_equal(a[k], b[k]) for k in b)
    left = sum(isinstance(leaf, jax.ShapeDtypeStruct) for leaf in jax.tree.leaves(nnx.state(abstract)))
    print(f"{preset:<13} abstract {t_abstract:5.2f} s  concrete {t_concrete:5.2f} s  same state: {same}  "
          f"abstract leaves left: {left}")
