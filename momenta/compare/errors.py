"""Errors a user can fix: every one names the argument (or file, column, row) and the value.

The command line turns them into a message and exit code 2, without a traceback.
"""

from __future__ import annotations


class UsageError(ValueError):
    """A bad argument of ``compare`` / ``landscape``: the message says which and why."""


class DataError(UsageError):
    """A data set that cannot be used: unknown name, unreadable file, bad column, bad cell."""


class OutputError(UsageError):
    """An output directory that cannot be created or written."""
