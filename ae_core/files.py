"""Atomic file writes: a temp file in the same folder, fsync, rename over the target.

A crash or an error mid-write leaves any previous file intact. An error removes the temp file and is one
:class:`WriteError` naming the file and the cause (no space left, file too large, permission denied, a
read-only file system); a ``kill -9`` mid-write can leave a temp file (``.NAME.XXXXXXXX.tmp``), which
:func:`remove_stale_temps` removes where the caller holds the folder's lock (``ae_parity.rundir.RunLock``).

The file gets the permissions of any new file, ``0o666`` less the umask (``tempfile.mkstemp`` would make
it ``0o600`` whatever the umask), because the temp file is created with ``os.open``'s mode.
"""

from __future__ import annotations

import errno
import os
import secrets
from pathlib import Path

TEMP_SUFFIX = ".tmp"


class WriteError(OSError):
    """A file that could not be written; the message names it and why. Whatever it replaces is kept."""

    def __init__(self, path: os.PathLike | str, error: OSError):
        reason = error.strerror or str(error)
        name = errno.errorcode.get(error.errno or 0)
        super().__init__(error.errno, f"cannot write {path}: {reason}" + (f" ({name})" if name else ""))
        self.path, self.error = Path(path), error

    def __str__(self) -> str:
        return self.strerror


def temp_name(path: Path) -> Path:
    return path.parent / f".{path.name}.{secrets.token_hex(4)}{TEMP_SUFFIX}"


def atomic_write(path: os.PathLike | str, payload: bytes) -> Path:
    """Write ``payload`` to ``path`` atomically; a :class:`WriteError` (and no temp file) if that fails."""
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = temp_name(path)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # the umask applies
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        tmp = None
    except OSError as e:
        raise WriteError(path, e) from e
    finally:
        if tmp is not None:
            tmp.unlink(missing_ok=True)
    return path


def remove_stale_temps(folder: os.PathLike | str) -> list[Path]:
    """Remove the temp files an interrupted :func:`atomic_write` left in ``folder`` (only call this while
    no other process can be writing there: under the folder's lock); return what was removed."""
    removed = []
    for p in Path(folder).glob(f".*{TEMP_SUFFIX}"):
        parts = p.name[1:-len(TEMP_SUFFIX)].rsplit(".", 1)
        if len(parts) == 2 and len(parts[1]) == 8 and p.is_file():
            p.unlink(missing_ok=True)
            removed.append(p)
    return removed
