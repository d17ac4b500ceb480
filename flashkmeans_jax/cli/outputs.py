"""The CLI's output files: checked and reserved before any work, written to
hidden temporary files, renamed into place only when the run succeeded.

:meth:`Outputs.reserve` refuses a path that cannot be written (missing or
unwritable directory, a directory, a non-regular file), one that is an input
(compared through :func:`os.path.realpath` and :func:`os.path.samefile`, so
symbolic and hard links count) or another output, and an existing file
unless ``--force``. Its writability test is the real thing: it creates the
temporary file ``.<name>.<pid>.<hex>.tmp`` in the target's directory (same
file system, so the final :func:`os.replace` is atomic) and keeps it open;
every later write goes through that open file, never through its name.

One lock covers creating, renaming and deleting those files, so
:meth:`Outputs.abort` (the signal handler's clean-up, from another thread)
sees either no rename or all of them, and no temporary file can appear after
it ran.
"""

from __future__ import annotations

import errno
import os
import threading
from pathlib import Path
from typing import BinaryIO

import numpy as np

from flashkmeans_jax.cli.errors import CLIError


class Output:
  """One reserved output: the flag, the path as the user gave it, and the
  open temporary file that becomes it."""

  def __init__(self, flag: str, text: str, tmp: Path, file: BinaryIO):
    self.flag, self.text, self.target = flag, text, Path(text)
    self.real = os.path.realpath(text)
    self.tmp, self.file = tmp, file
    self.memmap: np.memmap | None = None
    self.done = False


def _same(a: str | Path, b: str | Path) -> bool:
  if os.path.realpath(a) == os.path.realpath(b):
    return True
  try:
    return os.path.samefile(a, b)  # hard links
  except OSError:  # one of them does not exist
    return False


class Outputs:
  """The run's outputs (see the module docstring)."""

  def __init__(self) -> None:
    self.lock = threading.Lock()
    self.files: list[Output] = []
    self.aborted = False

  def reserve(self, flag: str, text: str | None, *, inputs: dict[str, Path],
              force: bool) -> Output | None:
    """Checks the output ``text`` of ``flag`` and creates its temporary file.

    Args:
      flag: the option, e.g. ``"--labels-out"`` (leads every message).
      text: the path as given; ``None`` (option not given) returns ``None``.
      inputs: files the run reads, by the name messages give them
        (``{"the input file": ..., "the --init file": ...}``); an output may
        never be one of them, ``--force`` or not.
      force: replace an existing file.
    """
    if text is None:
      return None
    if not text:
      raise CLIError(f"{flag}: the path is empty")
    p = Path(text)
    if text.endswith(("/", os.sep)) or p.is_dir():
      raise CLIError(f"{flag}: {text} is a directory")
    parent = p.parent
    if not parent.exists():
      raise CLIError(f"{flag}: cannot write {text}: directory {parent} does not exist")
    if not parent.is_dir():
      raise CLIError(f"{flag}: cannot write {text}: {parent} is not a directory")
    for name, path in inputs.items():
      if _same(p, path):
        raise CLIError(f"{flag}: {text} is {name}; write the output elsewhere")
    for other in self.files:
      if _same(p, other.target):
        raise CLIError(f"{flag}: {text} is the same file as {other.flag} {other.text}")
    if os.path.lexists(p):
      if p.exists() and not p.is_file():
        raise CLIError(f"{flag}: {text} exists and is not a regular file")
      if not force:
        raise CLIError(f"{flag}: {text} exists; pass --force to replace it")
    with self.lock:
      if self.aborted:
        raise CLIError("interrupted")
      for _ in range(100):
        tmp = parent / f".{p.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp"
        try:
          fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o666)  # umask applies
        except FileExistsError:
          continue
        except OSError as e:
          raise CLIError(f"{flag}: cannot write {text}: {e.strerror or e} "
                         f"(directory {parent})") from None
        out = Output(flag, text, tmp, os.fdopen(fd, "r+b"))
        self.files.append(out)
        return out
    raise CLIError(f"{flag}: cannot create a temporary file in {parent}")

  @staticmethod
  def write(out: Output, arr: np.ndarray) -> None:
    """Writes ``arr`` as ``.npy`` into ``out``'s temporary file."""
    try:
      np.save(out.file, arr, allow_pickle=False)
      out.file.flush()
    except OSError as e:
      raise CLIError(f"{out.flag}: cannot write {out.text}: {e.strerror or e}") from e

  @staticmethod
  def write_npz(out: Output, **arrays: np.ndarray) -> None:
    """Writes ``arrays`` as one uncompressed ``.npz`` into ``out``'s
    temporary file."""
    try:
      np.savez(out.file, allow_pickle=False, **arrays)
      out.file.flush()
    except OSError as e:
      raise CLIError(f"{out.flag}: cannot write {out.text}: {e.strerror or e}") from e

  @staticmethod
  def memmap(out: Output, dtype, shape: tuple[int, ...]) -> np.memmap:
    """``out``'s temporary file as a writable ``.npy`` memory map (a header,
    then ``shape`` of ``dtype``), for results written as they are computed."""
    dtype = np.dtype(dtype)
    header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False,
              "shape": tuple(shape)}
    try:
      np.lib.format.write_array_header_1_0(out.file, header)
      out.file.flush()
      offset = out.file.tell()
      size = int(np.prod(shape)) * dtype.itemsize
      out.file.truncate(offset + size)
      if size and hasattr(os, "posix_fallocate"):
        # Claim the disk space now: a full disk is then this clear error,
        # not a SIGBUS when the memory map is written.
        try:
          os.posix_fallocate(out.file.fileno(), offset, size)
        except OSError as e:
          if e.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
            raise
      out.memmap = np.memmap(out.file, dtype=dtype, mode="r+", offset=offset, shape=shape)
    except OSError as e:
      raise CLIError(f"{out.flag}: cannot write {out.text}: {e.strerror or e}") from e
    return out.memmap

  def commit(self) -> None:
    """Renames every temporary file to its target, all under the lock."""
    with self.lock:
      if self.aborted:
        return
      for out in self.files:
        try:
          if out.memmap is not None:
            out.memmap.flush()
          out.file.close()
          os.replace(out.tmp, out.target)
        except OSError as e:
          raise CLIError(f"{out.flag}: cannot write {out.text}: {e.strerror or e}") from e
        out.done = True

  def discard(self) -> None:
    """Deletes the temporary files not renamed (after an error; idempotent)."""
    with self.lock:
      self._unlink_pending(close=True)

  def abort(self) -> None:
    """For the signal handler, just before ``os._exit``: takes the lock for
    good (no file is created or renamed after this) and deletes the
    temporary files. Files stay open: the worker thread may be writing."""
    self.lock.acquire()
    self.aborted = True
    self._unlink_pending(close=False)

  def _unlink_pending(self, close: bool) -> None:
    for out in self.files:
      if out.done:
        continue
      if close:
        out.memmap = None
        try:
          out.file.close()
        except OSError:
          pass
      try:
        out.tmp.unlink(missing_ok=True)
      except OSError:
        pass
    self.files = [out for out in self.files if out.done]
