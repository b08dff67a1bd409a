"""The one error type for problems a user can cause.

Anything raised as :class:`TmktError` is printed by the CLI as a single line and exits with
code 2 (``--debug`` shows the traceback). Everything else is a bug in tmkt and keeps its
traceback.
"""

from __future__ import annotations

import errno

EXIT_USER_ERROR = 2


class TmktError(Exception):
    """A problem with the user's input: a path, a recipe key, a value, a file's contents."""


class StopRequested(Exception):
    """A training stage was asked to stop (SIGTERM/SIGUSR1) and has saved a checkpoint.

    The CLI turns this into exit code :data:`EXIT_REQUEUE` so a SLURM script can requeue.
    """


EXIT_REQUEUE = 3


def first_line(error: BaseException) -> str:
    """The first line of an exception's message, for one-line errors about a file."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


DISK_FULL = {errno.ENOSPC: "no space left on device", errno.EDQUOT: "disk quota exceeded"}


def disk_full(error: BaseException | None) -> str | None:
    """"no space left on device" or "disk quota exceeded" when ``error``, or an error it was
    raised from (torch.save and HDF5 wrap the OSError), is a full disk or quota; else None."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno in DISK_FULL:
            return DISK_FULL[error.errno]
        for code, words in DISK_FULL.items():  # HDF5 reports errno only in its message
            if f"errno = {code}," in str(error):
                return words
        error = error.__cause__ or error.__context__
    return None
