"""The torch.fx tracer of ``ae_torch.trace``, and where a traced node came from in the user's code.

:func:`make_tracer` is ``torch.fx.Tracer`` with stack traces recorded, tracing stopped at the modules
``is_leaf`` names, and ``torch.randn`` / ``torch.rand`` recorded as calls (fx does not intercept a factory
whose only traced arguments are sizes). :func:`source_line` reads a node's ``file:line``; the
torch.export front end (``ae_torch/export.py``) uses it too.
"""

from __future__ import annotations

import os
from typing import Callable

import torch
from torch import nn


def make_tracer(is_leaf: Callable[[nn.Module], bool]):
    """A fresh ``torch.fx.Tracer`` (see the module docstring)."""
    import torch.fx as fx

    class Tracer(fx.Tracer):
        def __init__(self):
            super().__init__(autowrap_functions=())
            self.record_stack_traces = True

        def trace(self, root, concrete_args=None):
            # torch.randn(x.size(0), 20) / torch.rand(...): recorded as calls while tracing; torch's own functions
            # are put back when the trace ends, however it ends
            originals = {name: getattr(torch, name) for name in ("randn", "rand")}

            def recorded(fn):
                def call(*args, **kwargs):  # a draw is a node even of constant sizes (refused: no batch)
                    return self.create_proxy("call_function", fn, args, kwargs)
                return call

            try:
                for name, fn in originals.items():
                    setattr(torch, name, recorded(fn))
                return super().trace(root, concrete_args)
            finally:
                for name, fn in originals.items():
                    setattr(torch, name, fn)

        def is_leaf_module(self, m, qualname):
            # known layers stop the tracing; anything else (Sequential, user blocks, unknown modules with
            # parameters of their own) is traced through -- an unknown module's own parameters then show
            # as get_attr nodes, reported as unsupported
            return is_leaf(m)

    return Tracer()


def source_line(node) -> str:
    """``file:line`` of the user's code behind an fx node: the innermost frame of its stack trace outside
    torch itself."""
    torch_dir = os.path.dirname(torch.__file__)
    frames = []
    for ln in (node.meta.get("stack_trace") or "").splitlines():
        ln = ln.strip()
        if ln.startswith("File "):
            path, _, rest = ln[5:].partition(", line ")
            frames.append((path.strip('"'), rest.split(",")[0]))
    user = [f for f in frames if not f[0].startswith(torch_dir)]
    return f"{user[-1][0]}:{user[-1][1]}" if user else ""
