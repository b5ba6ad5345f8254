"""The one exception type for mistakes a user can make (bad names, values, files), and how an OS error reads."""

from __future__ import annotations


class LightnetsError(ValueError):
    """A user-caused error whose message alone says what was wrong and what is allowed.

    The command line prints it as one line and exits non-zero; Python callers can catch it
    (it is a ``ValueError``).
    """


def os_error_text(err: OSError) -> str:
    """An OS error as a user reads it: the file(s) and the cause (``/runs/x: No space left on device``), not
    Python's ``[Errno 28] ...`` form; errors raised with a message of their own keep it."""
    if err.strerror is None:
        return str(err)
    files = " -> ".join(str(f) for f in (err.filename, err.filename2) if f is not None)
    return f"{files}: {err.strerror}" if files else err.strerror
