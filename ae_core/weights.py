"""The canonical state dict and its on-disk form.

The canonical state dict is ``{torch parameter name: numpy array in torch layout}``. It is the
exchange format between the frameworks and what ``.safetensors`` files hold; metadata (a str -> str
map) records the spec, dtype and anything else a reader must check before loading.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from .files import atomic_write

FLOAT_DTYPES = ("float16", "bfloat16", "float32", "float64")


class StateDictError(ValueError):
    """A state dict that does not fit a model; lists every problem found, by name."""

    def __init__(self, problems: list[str], what: str = "state dict"):
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"{what} does not fit the model ({len(self.problems)} problem(s)):\n{lines}")


class CheckpointError(ValueError):
    """A weights/checkpoint file that cannot be read or does not belong to the model it is loaded into."""


def to_numpy(value: Any) -> np.ndarray:
    """numpy view of a numpy array, a torch tensor or a JAX array, without importing either framework."""
    if hasattr(value, "detach") and hasattr(value, "cpu"):  # torch.Tensor
        value = value.detach().cpu()
        if str(value.dtype) == "torch.bfloat16":
            raise TypeError("bfloat16 torch tensors have no numpy dtype; cast to float32 first")
        return value.numpy()
    return np.asarray(value)


def check_state_dict(expected: Mapping[str, tuple[int, ...]], given: Mapping[str, Any], *,
                     strict: bool = True, int_keys=()) -> dict[str, np.ndarray]:
    """Validate ``given`` against ``expected`` names/shapes (torch layout); return it as numpy.

    Raises one :class:`StateDictError` listing *every* problem: missing and unexpected keys (when
    ``strict``), wrong shapes, wrong dtype kinds (floats everywhere except ``int_keys``, e.g. BatchNorm's
    ``num_batches_tracked``), values that are not arrays.
    """
    problems: list[str] = []
    arrays: dict[str, np.ndarray] = {}
    if not isinstance(given, Mapping):
        raise StateDictError([f"expected a mapping of name -> array, got {type(given).__name__}"])
    for name, value in given.items():
        if name not in expected:
            if strict:
                problems.append(f"unexpected key {name!r}")
            continue
        try:
            arr = to_numpy(value)
        except (TypeError, ValueError) as e:
            problems.append(f"{name}: not an array ({e})")
            continue
        if name in int_keys:
            if arr.dtype.kind not in "iu":
                problems.append(f"{name}: dtype {arr.dtype} is not an integer dtype (it is a counter)")
        elif arr.dtype.name not in FLOAT_DTYPES:
            problems.append(f"{name}: dtype {arr.dtype} is not a floating-point dtype")
        if tuple(arr.shape) != tuple(expected[name]):
            problems.append(f"{name}: shape {tuple(arr.shape)} != expected {tuple(expected[name])}")
        arrays[name] = arr
    missing = [name for name in expected if name not in given]
    if strict:
        problems.extend(f"missing key {name!r} (shape {tuple(expected[name])})" for name in missing)
        if any(name.endswith((".running_mean", ".running_var")) for name in missing):
            problems.append("BatchNorm running statistics are missing: the state dict comes from a BatchNorm "
                            "without them (track_running_stats=False?) or from another architecture")
    if problems:
        raise StateDictError(problems)
    return arrays


# ------------------------------------------------------------------------------------ safetensors ----
def save_safetensors(path: os.PathLike | str, tensors: Mapping[str, np.ndarray],
                     metadata: Mapping[str, str] | None = None) -> Path:
    """Write ``tensors`` to ``path`` atomically: a temp file in the same folder, fsync, rename.

    A crash or error mid-write leaves any previous file at ``path`` untouched and no temp file behind.
    """
    from safetensors.numpy import save

    path = Path(path)
    # np.array, not np.ascontiguousarray: the latter turns 0-d arrays (num_batches_tracked) into shape (1,)
    arrays = {k: np.array(to_numpy(v), order="C") for k, v in tensors.items()}
    meta = {str(k): str(v) for k, v in (metadata or {}).items()}
    return atomic_write(path, save(arrays, metadata=meta))


def load_safetensors(path: os.PathLike | str) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """``(tensors, metadata)`` from a safetensors file; a clear :class:`CheckpointError` if unreadable."""
    from safetensors import SafetensorError
    from safetensors.numpy import load

    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise CheckpointError(f"{path}: file not found") from None
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read ({e})") from None
    try:
        tensors = load(data)
        metadata = _read_metadata(data)
    except (SafetensorError, ValueError, OverflowError) as e:
        raise CheckpointError(f"{path}: not a valid safetensors file ({e})") from None
    return tensors, metadata


def _read_metadata(data: bytes) -> dict[str, str]:
    import json

    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8: 8 + n])
    return dict(header.get("__metadata__", {}) or {})


def save_weights(path: os.PathLike | str, state_dict: Mapping[str, Any], spec, dtype: str,
                 extra: Mapping[str, str] | None = None) -> Path:
    """Save a model's canonical state dict with the spec and dtype recorded in the metadata."""
    meta = {"format": "ae-parity/weights", "spec": spec.to_json(), "preset": spec.name, "dtype": dtype}
    meta.update(extra or {})
    return save_safetensors(path, state_dict, meta)


def load_weights(path: os.PathLike | str, spec=None, dtype: str | None = None) -> dict[str, np.ndarray]:
    """Load a weights file; if ``spec``/``dtype`` are given, refuse a file written for another model.

    Files without ae-parity metadata (e.g. written by ``safetensors.torch.save_file`` from plain
    PyTorch code) are accepted; their tensors are then checked by name and shape on load.
    """
    tensors, meta = load_safetensors(path)
    problems = []
    if spec is not None and "spec" in meta:
        from .spec import ModelSpec, SpecError

        try:
            saved = ModelSpec.from_json(meta["spec"])
        except SpecError as e:
            raise CheckpointError(f"{path}: unreadable spec in metadata ({e})") from None
        if not saved.same_architecture(spec):
            problems.append(f"written for model {saved.name!r}, not {spec.name!r} (architectures differ)")
    if dtype is not None and meta.get("dtype") not in (None, dtype):
        problems.append(f"written in {meta['dtype']}, model is {dtype}")
    if problems:
        raise CheckpointError(f"{path}: " + "; ".join(problems))
    return tensors
