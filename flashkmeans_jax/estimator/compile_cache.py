"""JAX's persistent compilation cache, switched on for the estimator and the CLI.

A fitted estimator's ``predict``, ``transform`` and ``score`` and the CLI's
runs compile the same few programs in every new process; with the cache on,
a later process loads them from disk instead of compiling again (seconds
per program on a GPU). :func:`enable_compilation_cache` turns it on, once
per process, unless

* ``FLASHKMEANS_JAX_NO_COMPILE_CACHE`` is set (to anything but ``""`` or
  ``"0"``): the opt-out;
* a cache directory is already configured (``jax_compilation_cache_dir``,
  e.g. through ``JAX_COMPILATION_CACHE_DIR``): it is kept as it is;
* ``jax_enable_compilation_cache`` was switched off.

The default directory is ``flashkmeans_jax/jax_cache`` under the user's
cache directory (``$XDG_CACHE_HOME``, else ``~/.cache``; ``%LOCALAPPDATA%`` on
Windows, ``~/Library/Caches`` on macOS), created with mode ``0o700``: JAX
trusts its cache's contents, so it must not be writable by others. When the
library sets the directory it also caches programs that compile in 0.1 s or
more (JAX's default is 1 s, which would leave out most of the estimator's)
and, when the ``filelock`` package is installed (JAX needs it for a bounded
cache), bounds the cache to 2 GiB (least recently used entries go first).

Note that the setting is process-wide: JAX then caches every program of
the process that passes the threshold, not only the library's.
"""

from __future__ import annotations

import importlib.util
import os
import pathlib
import sys

import jax

__all__ = ["OPT_OUT_ENV", "default_cache_dir", "enable_compilation_cache"]

OPT_OUT_ENV = "FLASHKMEANS_JAX_NO_COMPILE_CACHE"
# What the library sets when it chooses the directory itself.
MIN_COMPILE_TIME_SECS = 0.1
MAX_SIZE_BYTES = 2 * 1024 ** 3

_state = {"done": False, "path": None}


def default_cache_dir() -> pathlib.Path:
  """``<user cache dir>/flashkmeans_jax/jax_cache`` (see the module)."""
  if sys.platform == "win32" and os.environ.get("LOCALAPPDATA"):
    base = pathlib.Path(os.environ["LOCALAPPDATA"])
  elif sys.platform == "darwin":
    base = pathlib.Path.home() / "Library" / "Caches"
  else:
    base = pathlib.Path(os.environ.get("XDG_CACHE_HOME") or pathlib.Path.home() / ".cache")
  return base / "flashkmeans_jax" / "jax_cache"


def _opted_out() -> bool:
  return os.environ.get(OPT_OUT_ENV, "") not in ("", "0")


def enable_compilation_cache(path: str | os.PathLike | None = None) -> str | None:
  """Turns on JAX's persistent compilation cache; returns its directory, or
  ``None`` when it stays off.

  Args:
    path: the cache directory; ``None`` for :func:`default_cache_dir`. An
      explicit path that cannot be created raises ``OSError``; the default
      one is then silently skipped (a read-only home must not break a fit).

  A directory the user configured is never replaced (its path is returned),
  the opt-out variable ``FLASHKMEANS_JAX_NO_COMPILE_CACHE`` is honoured even
  for an explicit ``path``, and later calls return the first call's answer.
  """
  if _state["done"]:
    return _state["path"]
  if _opted_out() or not jax.config.jax_enable_compilation_cache:
    _state.update(done=True, path=None)
    return None
  configured = jax.config.jax_compilation_cache_dir
  if configured:
    _state.update(done=True, path=str(configured))
    return _state["path"]
  target = pathlib.Path(path) if path is not None else default_cache_dir()
  try:
    target.mkdir(mode=0o700, parents=True, exist_ok=True)
  except OSError:
    if path is not None:
      raise
    _state.update(done=True, path=None)
    return None
  jax.config.update("jax_compilation_cache_dir", str(target))
  if jax.config.jax_persistent_cache_min_compile_time_secs == 1.0:  # JAX's default
    jax.config.update("jax_persistent_cache_min_compile_time_secs", MIN_COMPILE_TIME_SECS)
  # A bounded cache needs the filelock package (JAX refuses the cache without it).
  if (jax.config.jax_compilation_cache_max_size == -1  # unbounded: JAX's default
      and importlib.util.find_spec("filelock") is not None):
    jax.config.update("jax_compilation_cache_max_size", MAX_SIZE_BYTES)
  _state.update(done=True, path=str(target))
  return _state["path"]
