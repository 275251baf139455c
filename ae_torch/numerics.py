"""Explicit numerics on the torch side (mirrors ae_jax/numerics.py): TF32 switched per block, never left on.

``torch.backends.cuda.matmul.allow_tf32`` (False by default) and ``torch.backends.cudnn.allow_tf32``
(True by default: convolutions on recent GPUs use TF32) are process-wide flags; :func:`tf32` sets both
for the duration of a ``with`` block and restores what was there before.
"""

from __future__ import annotations

import contextlib

import torch


@contextlib.contextmanager
def tf32(enabled: bool):
    """Allow (``True``) or forbid (``False``) TF32 in torch matmuls and cuDNN convolutions inside the block."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = bool(enabled)
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved
