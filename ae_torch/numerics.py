"""Explicit numerics on the torch side (mirrors ae_jax/numerics.py): dtypes, and TF32 switched per block,
never left on.

``torch.backends.cuda.matmul.allow_tf32`` (False by default) and ``torch.backends.cudnn.allow_tf32``
(True by default: convolutions on recent GPUs use TF32) are process-wide flags; :func:`tf32` sets both
for the duration of a ``with`` block and restores what was there before.
"""

from __future__ import annotations

import contextlib

import torch

from ae_core import check_dtype

TORCH_DTYPES = {"float32": torch.float32, "float64": torch.float64}


def torch_dtype(dtype) -> torch.dtype:
    """The torch dtype for "float32"/"float64" (or anything ``ae_core.check_dtype`` accepts)."""
    return TORCH_DTYPES[check_dtype(dtype)]


@contextlib.contextmanager
def tf32(enabled: bool):
    """Allow (``True``) or forbid (``False``) TF32 in torch matmuls and cuDNN convolutions inside the block."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = bool(enabled)
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved
