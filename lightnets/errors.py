"""The one exception type for mistakes a user can make (bad names, values, files)."""


class LightnetsError(ValueError):
    """A user-caused error whose message alone says what was wrong and what is allowed.

    The command line prints it as one line and exits non-zero; Python callers can catch it
    (it is a ``ValueError``).
    """
