"""The canonical state dict and its on-disk form.

The canonical state dict is ``{torch parameter name: numpy array in torch layout}``. It is the
exchange format between the frameworks and what ``.safetensors`` files hold; metadata (a str -> str
map) records the spec, dtype and anything else a reader must check before loading.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any, Callable, Mapping, NamedTuple, Union

import numpy as np

from .errors import UsageError
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
        if getattr(value, "is_meta", False):
            raise TypeError("a meta-device tensor holds no values (a model built on device 'meta', or with "
                            "init_empty_weights, needs real weights first)")
        value = value.detach().cpu()
        if str(value.dtype) == "torch.bfloat16":
            raise TypeError("bfloat16 torch tensors have no numpy dtype; cast to float32 first")
        return value.numpy()
    return np.asarray(value)


Names = Union[Mapping[str, str], Callable[[str], str], None]
"""Renames from a state dict's names to a model's: ``{prefix: new prefix}`` or a function ``str -> str``."""


def rename(name: str, names: Names) -> str:
    """``name`` under ``names``: a function is called; from a mapping, the first ``src`` that equals
    ``name`` or that ``name`` starts with followed by a dot is replaced by its value. Torch names are dotted
    module paths: ``{"fc21": "fc_mu"}`` renames ``fc21.weight`` and leaves ``fc210.weight`` alone."""
    if names is None:
        return name
    if callable(names):
        return names(name)
    for src, dst in names.items():
        if name == src or name.startswith(src + "."):
            return dst + name[len(src):]
    return name


def _check_names(names: Names) -> None:
    if names is None or callable(names):
        return
    if not isinstance(names, Mapping):
        raise UsageError(f"names must be a mapping {{prefix: new prefix}} or a function str -> str, "
                         f"got {type(names).__name__}")
    bad = [f"{k!r}: {v!r}" for k, v in names.items() if not (isinstance(k, str) and isinstance(v, str) and k)]
    if bad:
        raise UsageError(f"names maps non-empty str prefixes to str prefixes; not {', '.join(bad)}")


def _renamed(keys, names: Names) -> tuple[dict[str, str], list[str]]:
    """``({new name: original name}, problems)``: keys the rename cannot map (a function that raises or
    returns something other than a str) and two keys renamed onto one are problems, not guesses."""
    if names is None:  # the keys as given, whatever they are (a key that is no str is then unexpected)
        return {key: key for key in keys}, []
    out: dict[str, str] = {}
    problems: list[str] = []
    for key in keys:
        if not isinstance(key, str):
            problems.append(f"key {key!r} is not a str name: it cannot be renamed")
            continue
        try:
            new = rename(key, names)
        except Exception as e:  # the user's function: its failure is one listed problem, not a traceback
            problems.append(f"names({key!r}) raised {type(e).__name__}: {e}")
            continue
        if not isinstance(new, str):
            problems.append(f"names({key!r}) returned {new!r}, not a str")
        elif new in out:
            problems.append(f"{out[new]!r} and {key!r} both rename to {new!r}")
        else:
            out[new] = key
    return out, problems


class Fit(NamedTuple):
    arrays: dict[str, np.ndarray]  # by the model's names (after renaming), only names the model has
    missing: list[str]  # the model's names the state dict lacks
    unexpected: list[str]  # the state dict's names (after renaming) the model lacks


def _value_problem(arr: np.ndarray, counter: bool, dtype: str | None) -> str | None:
    """What is wrong with the values of a tensor that fits by name, shape and dtype kind: non-finite floats,
    values the model's dtype (``dtype``) cannot hold, a negative counter."""
    if arr.size == 0:
        return None
    if counter:
        low, high = int(arr.min()), int(arr.max())
        limit = np.iinfo(dtype).max if dtype is not None and np.dtype(dtype).kind in "iu" else None
        if low < 0:
            return f"holds {low}: a counter is never negative"
        if limit is not None and high > limit:
            return (f"holds {high}, more than the model's {dtype} holds ({limit})"
                    + ("; JAX stores it in int32 unless jax_enable_x64 is set" if dtype == "int32" else ""))
        return None
    bad = int(arr.size - np.count_nonzero(np.isfinite(arr)))
    if bad:
        return f"holds {bad} non-finite value(s) (inf or NaN): weights of a diverged model?"
    if dtype is not None and dtype != arr.dtype.name:
        peak = float(np.max(np.abs(arr)))
        limit = float(np.finfo(np.float32 if dtype == "bfloat16" else dtype).max)
        if peak > limit:
            return f"holds {peak:.4g}, beyond the model's {dtype} (max {limit:.4g}): it would load as inf"
    return None


def fit_state_dict(expected: Mapping[str, tuple[int, ...]], given: Mapping[str, Any], *, strict: bool = True,
                   int_keys=(), names: Names = None, dtypes: Mapping[str, str] | None = None) -> Fit:
    """Rename ``given``'s keys with ``names``, validate them against ``expected`` (the model's names and
    torch-layout shapes) and return the arrays as numpy with what is missing and unexpected.

    Raises one :class:`StateDictError` listing *every* problem: missing and unexpected keys (when
    ``strict``), wrong shapes, wrong dtype kinds (floats everywhere except ``int_keys``, e.g. BatchNorm's
    ``num_batches_tracked``), values that are not arrays (a meta-device tensor), keys the rename cannot
    map, and values no model should load: inf or NaN, a negative counter, and -- with ``dtypes``, the
    model's dtype by name -- values that dtype cannot hold (1e300 into float32, 2**40 into an int32
    counter). A renamed key is named as the model knows it with the state dict's own name beside it, since
    either may be the typo.
    """
    _check_names(names)
    if not isinstance(given, Mapping):
        raise StateDictError([f"expected a mapping of name -> array, got {type(given).__name__}"])
    sources, problems = _renamed(given, names)

    def label(name: str, quote=False) -> str:
        shown = repr(name) if quote else name
        return shown if sources[name] == name else f"{shown} (renamed from {sources[name]!r})"

    arrays: dict[str, np.ndarray] = {}
    unexpected = [name for name in sources if name not in expected]
    for name, key in sources.items():
        if name not in expected:
            if strict:
                problems.append(f"unexpected key {label(name, quote=True)}")
            continue
        try:
            arr = to_numpy(given[key])
        except (TypeError, ValueError) as e:
            problems.append(f"{label(name)}: not an array ({e})")
            continue
        if name in int_keys:
            if arr.dtype.kind not in "iu":
                problems.append(f"{label(name)}: dtype {arr.dtype} is not an integer dtype (it is a counter)")
        elif arr.dtype.name not in FLOAT_DTYPES:
            problems.append(f"{label(name)}: dtype {arr.dtype} is not a floating-point dtype")
        if tuple(arr.shape) != tuple(expected[name]):
            problems.append(f"{label(name)}: shape {tuple(arr.shape)} != expected {tuple(expected[name])}")
        elif arr.dtype.kind in ("iu" if name in int_keys else "f"):
            wrong = _value_problem(arr, name in int_keys, (dtypes or {}).get(name))
            if wrong:
                problems.append(f"{label(name)}: {wrong}")
        arrays[name] = arr
    missing = [name for name in expected if name not in sources]
    if strict:
        problems.extend(f"missing key {name!r} (shape {tuple(expected[name])})" for name in missing)
        if any(name.endswith((".running_mean", ".running_var")) for name in missing):
            problems.append("BatchNorm running statistics are missing: the state dict comes from a BatchNorm "
                            "without them (track_running_stats=False?) or from another architecture")
    if problems and isinstance(names, Mapping):  # a typo in the rename map shows up here first
        problems.extend(f"rename {src!r} -> {dst!r} matched no key of the state dict" for src, dst in names.items()
                        if not any(isinstance(k, str) and (k == src or k.startswith(src + ".")) for k in given))
    if problems:
        raise StateDictError(problems)
    return Fit(arrays, missing, unexpected)


def check_state_dict(expected: Mapping[str, tuple[int, ...]], given: Mapping[str, Any], *,
                     strict: bool = True, int_keys=(), names: Names = None,
                     dtypes: Mapping[str, str] | None = None) -> dict[str, np.ndarray]:
    """Validate ``given`` against ``expected`` names/shapes (torch layout); return it as numpy, by the
    model's names (:func:`fit_state_dict`, which lists every problem in one :class:`StateDictError`)."""
    return fit_state_dict(expected, given, strict=strict, int_keys=int_keys, names=names, dtypes=dtypes).arrays


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
    """``(tensors, metadata)`` from a safetensors file; a clear :class:`CheckpointError` if unreadable.

    ``safetensors.safe_open`` reads the header and the tensors from a memory map of the file (no copy of the
    whole file in memory); a truncated file or a broken header is refused before any tensor is returned."""
    from safetensors import SafetensorError

    with _opened(path) as (f, path):
        try:
            metadata = dict(f.metadata() or {})
            tensors = {name: f.get_tensor(name) for name in f.keys()}
        except (SafetensorError, ValueError, OSError) as e:
            raise CheckpointError(f"{path}: not a valid safetensors file ({e})") from None
    return tensors, metadata


def read_metadata(path: os.PathLike | str) -> dict[str, str]:
    """A safetensors file's metadata only (its header; no tensor is read)."""
    with _opened(path) as (f, _):
        return dict(f.metadata() or {})


@contextlib.contextmanager
def _opened(path: os.PathLike | str):
    """``safe_open(path)`` (numpy) with a missing, unreadable or malformed file as a :class:`CheckpointError`."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if path.is_dir():  # safe_open says only "No such device" here
        raise CheckpointError(f"{path}: cannot read (a directory, not a file)")
    try:
        handle = safe_open(path, framework="numpy")
    except FileNotFoundError:
        raise CheckpointError(f"{path}: file not found") from None
    except (SafetensorError, ValueError, OverflowError, RuntimeError) as e:
        raise CheckpointError(f"{path}: not a valid safetensors file ({e})") from None
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read ({e})") from None
    with handle as f:
        yield f, path


def save_weights(path: os.PathLike | str, state_dict: Mapping[str, Any], spec=None, dtype: str | None = None,
                 extra: Mapping[str, str] | None = None) -> Path:
    """Save a model's canonical state dict (atomically) with what a reader must check in the metadata.

    ``spec``: the model's :class:`~ae_core.spec.ModelSpec`, recorded as ``spec`` and ``preset`` so that
    loading refuses another architecture; None for a model written by hand, whose file is then checked by
    names and shapes only. ``dtype``: the parameters' one dtype, None where they have several.
    """
    meta = {"format": "ae-parity/weights"}
    if spec is not None:
        meta.update(spec=spec.to_json(), preset=spec.name)
    if dtype is not None:
        meta["dtype"] = dtype
    meta.update(extra or {})
    return save_safetensors(path, state_dict, meta)


def model_spec(model):
    """The :class:`~ae_core.spec.ModelSpec` a model was built from (``model.spec``), or None for a model
    written by hand -- also where its ``spec`` attribute is something of its own, not a ModelSpec."""
    from .spec import ModelSpec

    spec = getattr(model, "spec", None)
    return spec if isinstance(spec, ModelSpec) else None


def hand_written_metadata(model, framework: str) -> dict[str, str]:
    """What a file records of a model without a spec: which framework wrote it and the model's class
    (for whoever reads the file later; loading does not check them: a port is another class)."""
    return {"framework": framework, "model_class": f"{type(model).__module__}.{type(model).__qualname__}"}


def load_weights(path: os.PathLike | str, spec=None, dtype: str | None = None) -> dict[str, np.ndarray]:
    """Load a weights file; if ``spec``/``dtype`` are given, refuse a file written for another model.

    The architecture is checked only where both the file and the caller name a spec, the dtype where
    both record one. Files without ae-parity metadata (e.g. written by ``safetensors.torch.save_file``
    from plain PyTorch code) and files of hand-written models are accepted; their tensors are then
    checked by name and shape on load.
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
