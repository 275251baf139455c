"""Why the tanh3 demo's float64 trajectories part (torch against JAX, 1e-17 -> 1.9e-4 over 625 Adam steps):
the same torch run started from weights that differ by one ulp in ONE element parts just as fast. The
JAX run is no further from torch than torch is from itself under a last-bit perturbation: the
trajectory is chaotic (a 3-d tanh bottleneck, Adam lr 3e-3), not the port.

    python docs/measure/float64_chaos.py [PRESET] [EPOCHS]
"""

from __future__ import annotations

import sys

import numpy as np

from ae_core import get_spec, init_state_dict
from ae_core.optim import OptimizerConfig
from ae_core.training import TrainConfig
from ae_parity.runner import load_data, make_trainer

if __name__ == "__main__":
    preset, epochs = (sys.argv[1:2] or ["tanh3"])[0], int((sys.argv[2:3] or [5])[0])
    spec = get_spec(preset)
    config = TrainConfig(epochs=epochs, batch_size=32, optimizer=OptimizerConfig(name="adam", lr=3e-3), dtype="float64")
    data = load_data(spec, "sample", None, "float64")
    weights = init_state_dict(spec, 0, "float64")
    # one ulp of one number: the first layer's first bias (a weight of a corner pixel would do nothing: the
    # MNIST corners are always 0)
    bias = next(k for k in weights if k.endswith("bias"))
    nudged = dict(weights)
    nudged[bias] = weights[bias].copy()
    nudged[bias].flat[0] = np.nextafter(weights[bias].flat[0], np.inf)
    runs = {}
    for name, (framework, w) in {"torch": ("torch", weights), "torch, 1 ulp": ("torch", nudged),
                                 "jax": ("jax", weights)}.items():
        trainer = make_trainer(framework, spec, config, data, weights=w)
        runs[name] = [trainer.train_epoch(e) for e in range(epochs)]
    print(f"{preset}, float64, adam lr 3e-3, batch 32, {len(data.x_train)} examples: max |step loss - torch's| per epoch")
    for name in ("torch, 1 ulp", "jax"):
        diffs = [np.abs(a - b).max() for a, b in zip(runs[name], runs["torch"])]
        print(f"  {name:13s}" + " ".join(f"{d:8.1e}" for d in diffs))
