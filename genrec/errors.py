"""The one error type the command line turns into a one-line message and a non-zero exit."""


class GenrecError(Exception):
    """A user-facing failure: the message says what was wrong, where, and what to do."""
