"""Errors that reach a user as one line, and the exit codes a scheduler reads.

A :class:`UserError` names the input and what was expected; ``unianimate`` prints it as one line
(``error: ...``) and exits with its ``exit_code``. Everything else is a bug and keeps its
traceback. ``UNIANIMATE_TRACEBACK=1`` prints the full traceback of user errors too.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

TRACEBACK_ENV = "UNIANIMATE_TRACEBACK"


class UserError(Exception):
    """A mistake in what the user gave or did; ``exit_code`` is what the process returns."""

    exit_code = 1


class InputError(UserError, ValueError):
    """A bad path, file, size, setting or checkpoint (exit code 2, as for a bad argument)."""

    exit_code = 2


class MissingInputError(InputError, FileNotFoundError):
    """A path the user gave that does not exist (also a ``FileNotFoundError``)."""


class StoppedBySignal(UserError):
    """A run stopped by a signal before it reached its end (exit code 128 + the signal number,
    what a shell reports for a process the signal ended)."""

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.exit_code = 128 + int(signum)


def one_line(error: BaseException) -> str:
    """The message as one line. A DataLoader worker's error comes back wrapped with the worker's
    traceback (``Caught X in DataLoader worker process 0. Original Traceback ...``): its last line
    is the original message."""
    text = str(error).strip()
    if "Original Traceback" in text:
        text = text.splitlines()[-1].split(": ", 1)[-1]
    return " ".join(text.split())


def user_error_in(error: BaseException) -> UserError | None:
    """``error`` or the first :class:`UserError` among its causes (jsonargparse wraps what a
    class's ``__init__`` raises in its own "Does not validate" error)."""
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, UserError):
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


@contextmanager
def user_errors_as_one_line() -> Iterator[None]:
    """Turn a :class:`UserError` (or an error caused by one) into one line on stderr and
    ``sys.exit(exit_code)``; anything else keeps its traceback."""
    try:
        yield
    except Exception as error:
        user_error = user_error_in(error)
        if user_error is None or os.environ.get(TRACEBACK_ENV, "") not in ("", "0"):
            raise
        print(f"error: {one_line(user_error)} ({TRACEBACK_ENV}=1 shows the traceback)", file=sys.stderr)
        sys.exit(user_error.exit_code)
