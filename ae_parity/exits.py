"""The exit codes of ``ae-parity`` and the one line each failure prints (README "Exit codes").

=====  =====================================================================================
0      done; for ``parity`` / ``diagnose``: the frameworks agree
1      the command ran and reports a problem: the port diverges or does not mirror its original,
       a data or checkpoint file is bad, a loss went non-finite, every sweep model diverged,
       your model's code raised while the comparison ran, a file could not be read or written
       (no space left, file too large, permission denied, a read-only file system)
2      usage: bad arguments (argparse, or arguments that parse but cannot work together), or your
       file / class / factory / rule table cannot be loaded or built as given (:class:`UsageError`)
3      internal failure: an unexpected exception inside ae-parity -- a bug, please report it
130    interrupted (Ctrl-C)
=====  =====================================================================================

Every failure is one line on stderr, ``ae-parity COMMAND: error: ...``; ``--debug`` (or
``AE_PARITY_DEBUG=1``) adds the traceback.
"""

from __future__ import annotations

import os
import sys

from ae_core import UsageError

OK, FAILED, USAGE, INTERNAL, INTERRUPTED = 0, 1, 2, 3, 130


def debug_wanted(args) -> bool:
    return bool(getattr(args, "debug", False)) or os.environ.get("AE_PARITY_DEBUG", "") not in ("", "0")


def flat(text: str) -> str:
    """A message of several lines (a list of problems) as one line: ``head: first; second``."""
    out = ""
    for line in (raw.strip() for raw in str(text).splitlines()):
        if line:
            line = line[2:] if line.startswith("- ") else line
            out = line if not out else out + (" " if out.endswith(":") else "; ") + line
    return out


def one_line(exc: BaseException) -> str:
    """``Type: message`` with the message's lines joined (an exception can span lines)."""
    text = "; ".join(line.strip() for line in str(exc).splitlines() if line.strip())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _reported() -> tuple[type[BaseException], ...]:
    """Runtime problems the commands report (exit 1). The JAX-side ones only if JAX was imported (a
    torch-only run never imports it)."""
    from ae_core.files import WriteError
    from ae_core.mnist import MnistFileError, MnistUnavailableError
    from ae_core.weights import CheckpointError, StateDictError

    from .compare import PortMismatchError
    from .runner import NonFiniteLossError

    out = [MnistFileError, MnistUnavailableError, CheckpointError, StateDictError, NonFiniteLossError,
           PortMismatchError, WriteError]
    sharding = sys.modules.get("ae_jax.sharding")
    return (*out, *((sharding.DistributedError,) if sharding is not None else ()))


def _rule_error() -> tuple[type[BaseException], ...]:
    convert = sys.modules.get("ae_jax.convert")
    return (convert.ConversionRuleError,) if convert is not None else ()


def failure(exc: Exception, command: str) -> tuple[int, str]:
    """The exit code of an exception that ended ``command``, and the line to print."""
    from .userfiles import user_frame

    head = f"ae-parity {command}: error:"
    if isinstance(exc, UsageError):
        return USAGE, f"{head} {flat(exc)}"
    if isinstance(exc, _rule_error()):  # a layer class of the user's with no rule: give it with --rules
        return USAGE, f"{head} {flat(exc)} -- with ae-parity diagnose: --rules FILE.py:NAME"
    if isinstance(exc, _reported()):
        return FAILED, f"{head} {flat(exc)}"
    where = user_frame(exc)
    if where is not None:  # raised in (or below) the user's own model code, while the command ran it
        return FAILED, f"{head} your code raised {one_line(exc)} (at {where})"
    if isinstance(exc, OSError) and exc.strerror:  # the machine's, not ours: a full disk, a permission
        return FAILED, f"{head} {exc.filename or 'a file'}: {exc.strerror}"
    return INTERNAL, (f"ae-parity {command}: internal error: {one_line(exc)} -- a bug in ae-parity, please "
                      f"report it with the command line (--debug or AE_PARITY_DEBUG=1 prints the traceback)")


__all__ = ["FAILED", "INTERNAL", "INTERRUPTED", "OK", "USAGE", "debug_wanted", "failure", "one_line"]
