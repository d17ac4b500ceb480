"""The CLI's one-line error and the wrapper that turns a library check's
error into one led by the flag."""

from __future__ import annotations

from typing import Any

PROG = "flashkmeans-jax"


class CLIError(Exception):
  """An error reported as one line, without a traceback (exit status 1)."""


def checked(flag: str | None, check, *args: Any, **kwargs: Any) -> Any:
  """Runs one of the library's checks; its error becomes a one-line
  :class:`CLIError` led by the flag (the original error is its cause, so the
  message ends with the library's own)."""
  try:
    return check(*args, **kwargs)
  except (TypeError, ValueError) as e:
    raise CLIError(f"{flag}: {e}" if flag else str(e)) from e
