"""The error type for a usage problem: arguments, or the user's own files, that cannot work as given.

``ae-parity`` exits with code 2 for a :class:`UsageError` (and for argparse's own errors), 1 for a
reported runtime problem (bad data or checkpoint files, a port that diverges or does not mirror its
original, a non-finite loss), and 3 for anything else: an unexpected exception is a bug in ae-parity,
never a usage error (``ae_parity.cli``, README "Exit codes"). A ``UsageError`` is a ``ValueError``, so
library callers that catch ``ValueError`` keep working.
"""

from __future__ import annotations


class UsageError(ValueError):
    """Arguments (or a user's file, class or factory) that cannot work as given; the message says which
    and why, in one line."""


__all__ = ["UsageError"]
