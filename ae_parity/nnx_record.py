"""The NNX side of the divergence finder: every submodule call's input and outputs, in torch's layout.

Each submodule INSTANCE is given a recording subclass of its own class for the duration of one run (and
its own class back after it; no library class is patched). A module called twice is recorded twice: the
records are a list per module name (``pool``, then ``pool#2``).

Layouts are known, never guessed from shapes. Every recorded array is marked channels-last or not:
``nnx.Conv`` / ``nnx.ConvTranspose`` take and give channels-last arrays, ``nnx.BatchNorm`` those with its
``axis`` last, ``ae_jax.layers.BatchNorm`` / ``Flatten`` / ``Unflatten`` as documented, a module class
with a boolean ``channels_last`` attribute as it says (``ae_jax.modules``: LayerNorm, GroupNorm, PReLU,
Embedding, the recurrent layers take torch's layout); any other module (pooling, activations, user
modules) gives its outputs the layout of its input -- a container returning
one of its children's arrays that child's. A module's input has the layout of the array it is (by
identity: the model input, an earlier module's output), else the layout of the last array of its rank
(functional code between modules keeps the layout: elementwise ops, pooling, resizing). The model input's
layout is given (``--flax-layout``). A channels-last array is moved to torch's channels-first layout
(last axis to axis 1) before it is compared; any other shape difference is a shape mismatch.
"""

from __future__ import annotations

import contextvars
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .trace import is_array, leaves


def torch_layout(value, channels_last: bool) -> np.ndarray:
    a = np.asarray(value)
    return np.moveaxis(a, -1, 1) if channels_last and a.ndim >= 3 else a


@dataclass
class FlaxCall:
    """One recorded call: its type, its first array argument and its output arrays, in torch's layout."""

    type: str
    input: np.ndarray | None
    input_cl: bool
    leaves: dict[str, np.ndarray] = field(default_factory=dict)
    channels_last: dict[str, bool] = field(default_factory=dict)
    dtypes: dict[str, str] = field(default_factory=dict)
    input_dtype: str = ""


def _fixed_layout(module, ndim: int) -> tuple[bool | None, bool | None]:
    """(input channels-last, output channels-last) where the module's type fixes them; None: inherited."""
    from flax import nnx

    from ae_jax import layers as M

    declared = getattr(type(module), "channels_last", None)  # a layer that states its layout (ae_jax.modules)
    if isinstance(declared, bool):
        return declared, declared
    if isinstance(module, (nnx.Conv, nnx.ConvTranspose)):
        return True, True
    if isinstance(module, nnx.BatchNorm):
        cl = ndim < 3 or module.axis % ndim == ndim - 1
        return cl, cl
    if isinstance(module, M.BatchNorm):
        return True, True
    if isinstance(module, M.Flatten):
        return True, None
    if isinstance(module, M.Unflatten):
        return None, True
    return None, None


class _Capture:
    """The state of one recording run: names, records, and what is known of each array's layout."""

    def __init__(self, names: dict[int, str], x, input_cl: bool):
        self.names = names
        self.records: dict[str, list[FlaxCall]] = {}
        self.known: dict[int, tuple[Any, bool]] = {}  # id(array) -> (array, channels-last); holds a reference
        self.current: dict[int, bool] = {}  # rank -> layout of the last array of that rank
        self.note(x, input_cl)

    def note(self, arr, cl: bool) -> None:
        self.known[id(arr)] = (arr, cl)
        if np.ndim(arr) >= 3:
            self.current[np.ndim(arr)] = cl

    def layout_of(self, arr) -> bool:
        if id(arr) in self.known:
            return self.known[id(arr)][1]
        return self.current.get(np.ndim(arr), False)

    def record(self, module, cls: type, inp, in_cl: bool, out) -> None:
        fixed_out = _fixed_layout(module, np.ndim(inp) if inp is not None else 0)[1]
        call = FlaxCall(cls.__name__, None if inp is None else torch_layout(inp, in_cl), in_cl,
                        input_dtype="" if inp is None else str(inp.dtype))
        for path, arr in leaves(out, is_array):
            if fixed_out is not None:
                cl = fixed_out
            elif id(arr) in self.known:
                cl = self.known[id(arr)][1]
            elif inp is not None and np.ndim(arr) == np.ndim(inp):
                cl = in_cl
            else:
                cl = self.current.get(np.ndim(arr), False)
            self.note(arr, cl)
            call.leaves[path], call.channels_last[path], call.dtypes[path] = torch_layout(arr, cl), cl, str(arr.dtype)
        self.records.setdefault(self.names[id(module)], []).append(call)


_CAPTURE: contextvars.ContextVar = contextvars.ContextVar("ae_parity_capture", default=None)
_RECORDING: dict[type, type] = {}


def _recording_class(cls: type) -> type:
    """A subclass of ``cls`` whose ``__call__`` records its input and outputs while a capture is running.
    Only instances are switched to it (and back); ``cls`` itself is never modified."""
    if cls not in _RECORDING:
        def __call__(self, *args, **kwargs):
            capture = _CAPTURE.get()
            if capture is None or id(self) not in capture.names:
                return cls.__call__(self, *args, **kwargs)
            first = leaves((args, kwargs), is_array)
            inp = first[0][1] if first else None
            in_cl = None
            if inp is not None:
                in_cl = _fixed_layout(self, np.ndim(inp))[0]
                in_cl = capture.layout_of(inp) if in_cl is None else in_cl
            out = cls.__call__(self, *args, **kwargs)
            capture.record(self, cls, inp, bool(in_cl), out)
            return out

        _RECORDING[cls] = type(cls)(cls.__name__, (cls,), {"__call__": __call__, "__module__": cls.__module__,
                                                           "__qualname__": cls.__qualname__})
    return _RECORDING[cls]


def flax_record(model, x, input_cl: bool, kwargs: dict | None = None, output_cl: bool | None = None):
    """Run the NNX model eagerly on ``x`` (its own layout; channels-last if ``input_cl``), recording every
    callable submodule: (output, {torch name: [FlaxCall per call]}, [(path, torch-layout array, channels
    last, dtype)] of the output). The output's arrays are channels-last if ``output_cl``; None: as known
    (an array a module returned), else like the input for arrays of its rank, else as the last array of
    their rank."""
    from ae_jax.convert import module_names

    named = {name: m for name, m in module_names(model).items() if callable(m)}
    originals = {name: type(m) for name, m in named.items()}
    capture = _Capture({id(m): name for name, m in named.items()}, x, input_cl)
    token = _CAPTURE.set(capture)
    try:
        for name, m in named.items():
            object.__setattr__(m, "__class__", _recording_class(originals[name]))
        out = model(x, **(kwargs or {}))
    finally:
        for name, m in named.items():
            object.__setattr__(m, "__class__", originals[name])
        _CAPTURE.reset(token)
    outputs = []
    for path, arr in leaves(out, is_array):
        if output_cl is not None:
            cl = output_cl
        elif id(arr) in capture.known:
            cl = capture.known[id(arr)][1]
        elif np.ndim(arr) == np.ndim(x):
            cl = input_cl
        else:
            cl = capture.current.get(np.ndim(arr), False)
        outputs.append((path, torch_layout(arr, cl), cl, str(arr.dtype)))
    return out, capture.records, outputs
