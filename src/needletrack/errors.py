"""User-facing errors: one line, exit code 2, never a traceback."""
from __future__ import annotations


class NeedletrackError(Exception):
    """An error caused by the user's input. The CLI prints ``str(err)`` on one line and exits 2."""

    exit_code = 2

    def __init__(self, message: str, path: object | None = None):
        if path is not None:
            message = f"{path}: {message}"
        super().__init__(message.replace("\n", " "))


class InputError(NeedletrackError):
    """A file or folder that cannot be read or is not what it claims to be."""


class NeedletrackWarning(UserWarning):
    """Input that is read, but probably not what the user meant (e.g. a mask covering the whole frame).
    The CLI prints it as one ``warning:`` line; other libraries' warnings are not shown there."""
