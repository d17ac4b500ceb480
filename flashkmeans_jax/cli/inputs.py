"""Reading the CLI's inputs: the data file (``.npy``, ``.npz`` or raw
binary), an ``--init`` file, and ``--stream-above`` sizes.

A ``.npy`` header is read and compared with the file's size before NumPy
maps the file, so a truncated, header-only, empty or foreign file gets a
message naming the file instead of NumPy's internal one ("mmap length is
greater than file size", "No data left in file").
"""

from __future__ import annotations

import math
import os
import zipfile
from pathlib import Path

import numpy as np

from flashkmeans_jax.cli.errors import CLIError

_UNITS = {"": 1, "B": 1, "K": 1024, "M": 1024 ** 2, "G": 1024 ** 3, "T": 1024 ** 4}
# What np.load and the zip reader raise on a damaged file.
_READ_ERRORS = (OSError, ValueError, EOFError, zipfile.BadZipFile)


def parse_size(text: str) -> int:
  """``"512M"`` -> bytes (powers of 1024); a plain number is bytes."""
  s = text.strip().upper().removesuffix("IB").removesuffix("B")
  unit = s[-1] if s and s[-1] in _UNITS else ""
  try:
    value = float(s[:-1] if unit else s)
  except ValueError:
    raise CLIError(f"--stream-above: cannot read {text!r} as a size (e.g. 512M, 2G)") from None
  if not value >= 0 or math.isinf(value):
    raise CLIError(f"--stream-above must be a finite size >= 0, got {text!r}")
  return int(value * _UNITS[unit])


def device_memory_bytes() -> int:
  """Memory of the default device (host RAM for the CPU backend)."""
  import jax
  try:
    stats = jax.devices()[0].memory_stats() or {}
  except Exception:  # noqa: BLE001 - backends without stats
    stats = {}
  if stats.get("bytes_limit"):
    return int(stats["bytes_limit"])
  try:
    return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
  except (ValueError, OSError, AttributeError):
    return 8 * 1024 ** 3


def existing_file(text: str, flag: str = "", expected: str = "") -> Path:
  """``text`` as a path to an existing regular file, else a clear error
  (a directory is not "not found"); ``expected`` says what else ``flag``
  takes."""
  p = Path(text)
  lead = f"{flag}: " if flag else ""
  if p.is_dir():
    raise CLIError(f"{lead}{p} is a directory, not a data file")
  if not p.exists():
    broken = " (a broken symbolic link)" if os.path.islink(p) else ""
    raise CLIError(f"{lead}{expected}file not found: {p}{broken}" if flag
                   else f"input file not found: {p}{broken}")
  if not p.is_file():
    raise CLIError(f"{lead}{p} is not a regular file")
  return p


def _size(p: Path, lead: str) -> int:
  size = p.stat().st_size
  if size == 0:
    raise CLIError(f"{lead}{p} is empty (0 bytes)")
  return size


def read_npy(p: Path, *, flag: str = "", mmap: bool = False) -> np.ndarray:
  """A ``.npy`` file, checked against its own header first (memory-mapped
  read-only with ``mmap``)."""
  lead = f"{flag}: " if flag else ""
  size = _size(p, lead)
  fmt = np.lib.format
  readers = {(1, 0): fmt.read_array_header_1_0, (2, 0): fmt.read_array_header_2_0}
  try:
    with open(p, "rb") as f:
      if f.read(len(fmt.MAGIC_PREFIX)) != fmt.MAGIC_PREFIX:
        raise CLIError(f"{lead}{p} is not a .npy file (it does not start with NumPy's "
                       "magic string)")
      f.seek(0)
      try:
        version = fmt.read_magic(f)
        # Other versions (3.0: UTF-8 field names) are left to np.load below.
        header = readers[version](f) if version in readers else None
      except (ValueError, EOFError) as e:
        raise CLIError(f"{lead}{p} has an unreadable .npy header ({e})") from None
      offset = f.tell()
  except OSError as e:
    raise CLIError(f"{lead}cannot read {p} ({e.strerror or e})") from None
  if header is not None:
    shape, _, dtype = header
    if dtype.hasobject:
      raise CLIError(f"{lead}{p} holds Python objects (dtype {dtype}), not numbers")
    need = offset + math.prod(shape) * dtype.itemsize
    if size < need:
      what = ("holds only a .npy header" if size == offset
              else f"is truncated ({size} of {need} bytes)")
      raise CLIError(f"{lead}{p} {what}: its header describes an array of shape "
                     f"{tuple(shape)} and dtype {dtype}")
  try:
    return np.load(p, mmap_mode="r" if mmap else None, allow_pickle=False)
  except _READ_ERRORS as e:
    raise CLIError(f"{lead}cannot read {p} as .npy ({e})") from None


def _read_npz(p: Path, key: str | None) -> np.ndarray:
  _size(p, "")
  try:
    z = np.load(p, allow_pickle=False)
  except _READ_ERRORS as e:
    raise CLIError(f"{p} is not a readable .npz archive ({e})") from None
  with z:
    names = list(z.files)
    if key is None:
      if len(names) != 1:
        raise CLIError(f"{p} holds arrays {names}; choose one with --key")
      key = names[0]
    elif key not in names:
      raise CLIError(f"{p} has no array {key!r}; it holds {names}")
    try:
      return z[key]
    except _READ_ERRORS as e:
      raise CLIError(f"{p}: cannot read array {key!r} ({e})") from None


def _read_raw(p: Path, raw_dtype: str | None, raw_shape: str | None) -> np.ndarray:
  if not (raw_dtype and raw_shape):
    raise CLIError("a raw input needs both --raw-dtype and --raw-shape N,D")
  try:
    dtype = np.dtype(raw_dtype)
  except TypeError:
    raise CLIError(f"--raw-dtype: unknown dtype {raw_dtype!r}") from None
  try:
    n_text, d_text = raw_shape.split(",")
    n = -1 if n_text.strip() in ("", "-1") else int(n_text)
    d = int(d_text)
  except ValueError:
    raise CLIError(f"--raw-shape must be N,D (two integers), got {raw_shape!r}") from None
  size = _size(p, "")
  row = d * dtype.itemsize
  if d < 1 or row == 0:
    raise CLIError(f"--raw-shape: D must be >= 1, got {d}")
  if n == -1:
    if size % row:
      raise CLIError(f"{p} has {size} bytes, not a whole number of rows of "
                     f"{d} x {dtype} ({row} bytes)")
    n = size // row
  if n < 1 or n * row != size:
    raise CLIError(f"{p} has {size} bytes but --raw-shape {n},{d} of {dtype} needs "
                   f"{n * row}")
  try:
    return np.memmap(p, dtype=dtype, mode="r", shape=(n, d))
  except OSError as e:
    raise CLIError(f"cannot read {p} ({e.strerror or e})") from None


def load_input(p: Path, args) -> np.ndarray:
  """The data of INPUT ``p`` (already :func:`existing_file`): a memory map
  for ``.npy`` and raw files, an array read whole for ``.npz``."""
  if args.raw_dtype or args.raw_shape:
    return _read_raw(p, args.raw_dtype, args.raw_shape)
  suffix = p.suffix.lower()
  if suffix == ".npy":
    return read_npy(p, mmap=True)
  if suffix == ".npz":
    return _read_npz(p, args.key)
  raise CLIError(f"cannot tell the format of {p}: use a .npy/.npz file, or pass "
                 "--raw-dtype and --raw-shape for raw binary data")
