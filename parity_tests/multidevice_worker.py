"""Run in a subprocess by test_scale.py: data-parallel training on 4 simulated CPU devices against the same
training on one device. The device count is fixed when JAX starts, so this cannot run inside the
pytest process (whose JAX has one CPU device). Prints one JSON object.

    python parity_tests/multidevice_worker.py DATA_DIR PRESET[:MODE] ...
"""

from __future__ import annotations

import json
import sys

import jax

jax.config.update("jax_num_cpu_devices", 4)
jax.config.update("jax_enable_x64", True)

import numpy as np  # noqa: E402

from ae_core import get_spec  # noqa: E402
from ae_core.optim import OptimizerConfig  # noqa: E402
from ae_core.training import TrainConfig, default_loss  # noqa: E402
from ae_jax.train import Trainer  # noqa: E402
from ae_parity.runner import load_data  # noqa: E402


def max_state_diff(a: dict, b: dict) -> float:
    assert sorted(a) == sorted(b)
    return max(float(np.max(np.abs(np.asarray(a[k], np.float64) - np.asarray(b[k], np.float64)))) if np.size(a[k])
               else 0.0 for k in a)


def compare(data_dir: str, preset: str, mode: str, epochs: int = 2) -> dict:
    spec = get_spec(preset)
    data = load_data(spec, "sample", data_dir, "float64", limit=256)
    config = TrainConfig(epochs=epochs, batch_size=32, optimizer=OptimizerConfig("adam", lr=3e-3),
                         loss=default_loss(spec), seed=1, dtype="float64")
    one = Trainer(spec, config, data.x_train, data.x_eval[:96], mode=mode)
    many = Trainer(spec, config, data.x_train, data.x_eval[:96], mode=mode, devices="all")
    out = {"devices": int(many.mesh.devices.size), "mode": many.mode, "step_loss": 0.0, "state": 0.0, "optim": 0.0}
    for epoch in range(epochs):
        a, b = one.train_epoch(epoch), many.train_epoch(epoch)
        out["step_loss"] = max(out["step_loss"], float(np.max(np.abs(a - b) / np.abs(a))))
        out["state"] = max(out["state"], max_state_diff(one.model_state(), many.model_state()))
        out["optim"] = max(out["optim"], max_state_diff(one.optimizer_state(), many.optimizer_state()))
    out["eval"] = abs(one.evaluate() - many.evaluate())
    leaf = jax.tree.leaves(many.params)[0]
    out["params_replicated_on"] = len(leaf.sharding.device_set) if leaf.sharding.is_fully_replicated else 0
    out["compiled"] = many.compiled_count()
    # the batch really is split: the compiled program holds a cross-device reduction, and its first
    # layer's matmul runs on batch/devices rows per device
    text = many.lower(many.mode).compile().as_text()
    out["all_reduce"] = "all-reduce" in text
    return out


def errors(data_dir: str) -> dict:
    spec = get_spec("mlp9")
    data = load_data(spec, "sample", data_dir, "float64", limit=64)
    out = {}
    for name, kwargs in (("indivisible", {"devices": 4, "batch": 30}), ("too_many", {"devices": 5, "batch": 32})):
        config = TrainConfig(epochs=1, batch_size=kwargs["batch"], dtype="float64")
        try:
            Trainer(spec, config, data.x_train, devices=kwargs["devices"])
            out[name] = None
        except ValueError as e:
            out[name] = str(e)
    from ae_jax.sweep import SweepTrainer, grid

    try:  # 3 models over 4 devices
        SweepTrainer(spec, TrainConfig(epochs=1, batch_size=32, dtype="float64"), grid([0, 1, 2], [1e-3]),
                     data.x_train, devices="all")
        out["sweep_indivisible"] = None
    except ValueError as e:
        out["sweep_indivisible"] = str(e)
    return out


def sweep(data_dir: str) -> dict:
    """A sweep with its 4 models split over the 4 devices (one model each) against the same sweep on one."""
    from ae_jax.sweep import SweepTrainer, grid

    spec = get_spec("mlp9")
    data = load_data(spec, "sample", data_dir, "float64", limit=128)
    config = TrainConfig(epochs=2, batch_size=32, optimizer=OptimizerConfig("adam"), dtype="float64")
    members = grid([0, 1], [1e-3, 3e-3])
    one = SweepTrainer(spec, config, members, data.x_train, data.x_eval[:64])
    many = SweepTrainer(spec, config, members, data.x_train, data.x_eval[:64], devices="all")
    a = np.stack([one.train_epoch(e) for e in range(2)])
    b = np.stack([many.train_epoch(e) for e in range(2)])
    leaf = jax.tree.leaves(many.params)[0]
    return {"step_loss": float(np.max(np.abs(a - b) / np.abs(a))),
            "state": max(max_state_diff(one.model_state(i), many.model_state(i)) for i in range(len(members))),
            "eval": float(np.max(np.abs(one.evaluate() - many.evaluate()))),
            "models_per_device": [len(s.data) for s in leaf.addressable_shards],
            "compiled": many.compiled_count()}


def main(argv: list[str]) -> None:
    data_dir, *cases = argv
    result = {"errors": errors(data_dir), "sweep": sweep(data_dir)}
    for case in cases:
        preset, _, mode = case.partition(":")
        result[case] = compare(data_dir, preset, mode or "auto")
    print(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1:])
