"""Host side of out-of-core k-means: reading row chunks and staging them.

Nothing here runs JAX computations; it reads rows of a host array (NumPy,
``np.memmap`` or any reader with ``shape``, ``dtype`` and NumPy-style
slicing, such as an h5py or zarr dataset), checks what came back, and puts
chunks on the device ahead of use on one worker thread.
"""

from __future__ import annotations

import collections
import concurrent.futures
import copy
import mmap
import os
import threading
import weakref
from typing import Any, Callable, Iterable, Iterator

import jax
import numpy as np

__all__ = ["StreamingReadError", "HostSource", "Prefetcher", "Stager", "STAGINGS",
           "pinned_available", "pinned_bytes_held", "release_kept_pinned"]

# How chunks reach the device: "pageable" hands the NumPy chunk to
# jax.device_put (the runtime copies it through its own staging buffer);
# "pinned" first copies it into a pinned-host JAX array, whose transfer is a
# plain DMA; "pinned_cache" keeps those pinned copies for later passes, so
# the host-side copy is paid once per run instead of once per iteration.
STAGINGS = ("pageable", "pinned", "pinned_cache")


class StreamingReadError(RuntimeError):
  """A chunk of the host data (or weights) could not be read.

  Attributes:
    chunk: index of the chunk (``start // chunk_size``), ``None`` for reads
      outside the chunk grid (seeding).
    start, stop: the half-open row range ``[start, stop)`` of that chunk.
    what: which array (``"host_x"``, ``"weights"``, ...).
  """

  def __init__(self, what: str, chunk: int | None, start: int, stop: int, reason: str):
    self.what, self.chunk, self.start, self.stop = what, chunk, start, stop
    where = f"rows {start}:{stop}" if chunk is None else f"chunk {chunk} (rows {start}:{stop})"
    super().__init__(
        f"could not read {where} of {what}: {reason}; "
        "the run was stopped, no partial result is returned")


def _mmap_of(a: Any) -> Any:
  return getattr(a, "_mmap", None) if isinstance(a, np.memmap) else None


def _mapped_file_end(view: np.ndarray, mm: Any, offset: int) -> int:
  """File size (bytes) that a memmap view needs to be readable in full.

  ``np.memmap`` maps from ``offset`` rounded down to the allocation
  granularity, so a byte at address ``p`` lives at file position
  ``start + (p - base)``. Accessing a mapped page past the end of the file
  kills the process with SIGBUS, hence this check before every read.
  """
  base = np.frombuffer(mm, np.uint8).ctypes.data
  start = offset - offset % mmap.ALLOCATIONGRANULARITY
  first = view.__array_interface__["data"][0]
  extent = view.itemsize + sum((s - 1) * abs(st) for s, st in zip(view.shape, view.strides)
                               if s > 0)
  return start + (first - base) + extent


class HostSource:
  """Row chunks of a host array or of a generic reader.

  Args:
    data: ``[N, ...]`` NumPy array, ``np.memmap``, or any object with
      ``shape``, ``dtype`` and ``data[start:stop]`` returning an array.
    what: name used in error messages.
    dtype: if given, every chunk is converted to it (used for weights).
  """

  def __init__(self, data: Any, what: str, dtype: Any = None):
    if not hasattr(data, "shape") or not hasattr(data, "dtype") or not hasattr(
        data, "__getitem__"):
      raise TypeError(
          f"{what} must be a NumPy array, np.memmap or a reader with shape, dtype and "
          f"slicing (h5py/zarr dataset), got {type(data).__name__}")
    self.data = data
    self.what = what
    self.shape = tuple(int(s) for s in data.shape)
    self.dtype = np.dtype(data.dtype)
    self.out_dtype = np.dtype(dtype) if dtype is not None else self.dtype
    self._mm = _mmap_of(data)
    self.offset = 0  # first row of `data` this source starts at (see `view`)

  def view(self, start: int, stop: int) -> "HostSource":
    """Rows ``[start, stop)`` of this source as a source of ``stop - start``
    rows (nothing is read; errors still name the rows of ``data``)."""
    out = copy.copy(self)
    out.offset = self.offset + int(start)
    out.shape = (int(stop) - int(start), *self.shape[1:])
    return out

  @property
  def ident(self) -> tuple[int, int]:
    """``(id(data), offset)``: which rows of which object this reads."""
    return id(self.data), self.offset

  @property
  def ndim(self) -> int:
    return len(self.shape)

  @property
  def is_numpy(self) -> bool:
    return isinstance(self.data, np.ndarray)

  def _check_file(self, start: int, stop: int, chunk: int | None) -> None:
    filename = getattr(self.data, "filename", None) if self._mm is not None else None
    if self._mm is None or filename is None or stop <= start:
      return
    need = _mapped_file_end(self.data[start:stop], self._mm, int(self.data.offset))
    size = os.stat(filename).st_size
    if size < need:
      reason = (f"the memmap's file {filename!r} has {size} bytes but these rows need "
                f"{need} (truncated file?)")
      raise StreamingReadError(self.what, chunk, start, stop, reason)

  def read(self, start: int, stop: int, chunk: int | None) -> np.ndarray:
    """Rows ``[start, stop)`` as a C-contiguous array of ``out_dtype``.

    Raises :class:`StreamingReadError` naming ``chunk`` and the rows when the
    reader raises, returns the wrong shape, or a memmap's file is too short.
    """
    start, stop = start + self.offset, stop + self.offset
    try:
      self._check_file(start, stop, chunk)
      arr = np.asarray(self.data[start:stop])
      if self._mm is not None:
        # Copy out of the mapping here, on the prefetch thread, so the page
        # faults (the actual disk reads) overlap device work.
        arr = np.array(arr, copy=True)
    except StreamingReadError:
      raise
    except Exception as e:  # any reader failure: I/O, decompression, ...
      raise StreamingReadError(self.what, chunk, start, stop,
                               f"{type(e).__name__}: {e}") from e
    want = (stop - start, *self.shape[1:])
    if tuple(arr.shape) != want:
      raise StreamingReadError(self.what, chunk, start, stop,
                               f"the reader returned shape {tuple(arr.shape)}, expected {want}")
    if arr.dtype != self.out_dtype:
      arr = arr.astype(self.out_dtype)
    return np.ascontiguousarray(arr)

  def take(self, rows: np.ndarray) -> np.ndarray:
    """Rows at sorted indices ``rows`` (seeding), with the same error
    reporting as :meth:`read`.

    NumPy arrays and memmaps use one fancy index; other readers get one
    fancy index too (h5py accepts sorted index lists) and fall back to one
    read per row if they refuse it.
    """
    rows = np.asarray(rows, np.int64) + self.offset
    if len(rows) == 0:
      return np.zeros((0, *self.shape[1:]), self.out_dtype)
    lo, hi = int(rows[0]), int(rows[-1]) + 1
    want = (len(rows), *self.shape[1:])
    if isinstance(self.data, np.ndarray):
      self._check_file(lo, hi, chunk=None)
      return np.ascontiguousarray(self.data[rows]).astype(self.out_dtype, copy=False)
    try:
      arr = np.asarray(self.data[rows])
      if tuple(arr.shape) == want:
        return np.ascontiguousarray(arr).astype(self.out_dtype, copy=False)
    except Exception:  # readers without fancy indexing: row by row below
      pass
    return np.concatenate([self.read(int(r) - self.offset, int(r) - self.offset + 1,
                                     chunk=None) for r in rows])


class Prefetcher:
  """Runs ``load(job)`` for ``jobs``, ``depth`` jobs ahead on ``depth`` worker
  threads, and yields the results in order.

  Several threads matter on a GPU: one host-to-device copy from pageable
  memory (or one copy into pinned memory) runs at a fraction of the PCIe
  rate, and NumPy and the transfer release the GIL, so copies of different
  chunks proceed side by side.

  Exceptions raised by ``load`` come out of the iteration at the job that
  raised them. :meth:`close` cancels what has not started and waits for the
  running job, so no thread outlives the pass.
  """

  def __init__(self, load: Callable[[Any], Any], jobs: Iterable[Any], depth: int = 2):
    self._load = load
    self._jobs = iter(jobs)
    self._depth = max(1, depth)
    self._pool = concurrent.futures.ThreadPoolExecutor(self._depth,
                                                       thread_name_prefix="fkm-prefetch")
    self._queue: collections.deque = collections.deque()
    for _ in range(self._depth):
      self._submit()

  def _submit(self) -> None:
    job = next(self._jobs, None)
    if job is not None:
      self._queue.append(self._pool.submit(self._load, job))

  def __iter__(self) -> Iterator[Any]:
    while self._queue:
      fut = self._queue.popleft()
      self._submit()
      yield fut.result()

  def close(self) -> None:
    for fut in self._queue:
      fut.cancel()
    self._queue.clear()
    self._pool.shutdown(wait=True)

  def __enter__(self) -> "Prefetcher":
    return self

  def __exit__(self, *exc) -> None:
    self.close()


def pinned_available(device: Any) -> bool:
  """Whether ``device`` offers pinned host memory (``memory_kind="pinned_host"``)."""
  try:
    return any(m.kind == "pinned_host" for m in device.addressable_memories())
  except Exception:  # backends without memory kinds
    return False


# Pinned copies kept after a run (``keep_pinned=True``) for the next run over
# the same host array: key -> (weak references to the arrays, {chunk: copy}).
_KEPT: dict = {}
_KEPT_LOCK = threading.Lock()
_STAGERS: "weakref.WeakSet[Stager]" = weakref.WeakSet()


def _nbytes(tree) -> int:
  return sum(int(a.nbytes) for a in jax.tree.leaves(tree))


def pinned_bytes_held() -> int:
  """Bytes of pinned host copies this library holds now: the caches of runs
  in progress and the copies kept by ``keep_pinned=True``."""
  with _KEPT_LOCK:
    kept = sum(_nbytes(list(c.values())) for _, c in _KEPT.values())
  return kept + sum(_nbytes(list(s._cache.values())) for s in list(_STAGERS))


def release_kept_pinned() -> int:
  """Frees every pinned copy kept by ``keep_pinned=True``; returns the bytes."""
  with _KEPT_LOCK:
    freed = sum(_nbytes(list(c.values())) for _, c in _KEPT.values())
    _KEPT.clear()
  return freed


def _alive(refs, objs) -> bool:
  return all(r() is o for r, o in zip(refs, objs))


class Stager:
  """Moves host chunks onto ``device`` according to ``staging`` (see
  :data:`STAGINGS`); falls back to ``"pageable"`` where the backend has no
  pinned host memory."""

  def __init__(self, device: Any, staging: str, keep: tuple | None = None):
    """``keep``: ``(key, objects)`` naming the host arrays being staged
    (:meth:`clear` may keep the pinned cache under ``key`` for a later run
    over the same objects, which then starts from it)."""
    if staging not in STAGINGS:
      raise ValueError(f"staging must be one of {STAGINGS}, got {staging!r}")
    if staging != "pageable" and not pinned_available(device):
      staging = "pageable"
    self.staging = staging
    self.device = device
    self._on_device = jax.sharding.SingleDeviceSharding(device)
    self._pinned = (jax.sharding.SingleDeviceSharding(device, memory_kind="pinned_host")
                    if staging != "pageable" else None)
    self._cache: dict[Any, Any] = {}
    self._locks: dict[Any, threading.Lock] = {}
    self._locks_lock = threading.Lock()
    self._keep = keep
    if staging == "pinned_cache" and keep is not None:
      with _KEPT_LOCK:
        kept = _KEPT.pop(keep[0], None)
      if kept is not None and _alive(kept[0], keep[1]):
        self._cache = kept[1]
    _STAGERS.add(self)

  @property
  def cached_chunks(self) -> int:
    """Chunks whose pinned copy is held (kept from a previous run included)."""
    return len(self._cache)

  def put(self, key: Any, host: Callable[[], Any]) -> Any:
    """Device copy of ``host()`` (a pytree of NumPy arrays); ``key`` names the
    chunk for the pinned cache."""
    if self.staging == "pageable":
      return jax.device_put(host(), self._on_device)
    if self.staging == "pinned":
      return jax.device_put(jax.device_put(host(), self._pinned), self._on_device)
    with self._locks_lock:
      lock = self._locks.setdefault(key, threading.Lock())
    # The prefetcher may start the next pass's load of a chunk while this
    # pass's load of it is still running: the second waits for the first's
    # copy instead of reading and pinning the chunk again.
    with lock:
      pinned = self._cache.get(key)
      if pinned is None:
        pinned = jax.device_put(host(), self._pinned)
        self._cache[key] = pinned
    return jax.device_put(pinned, self._on_device)

  def clear(self, keep: bool = False) -> None:
    """Drops the pinned copies, or with ``keep`` (and a ``keep`` key given at
    construction, and host arrays that can be weakly referenced) hands them
    to the process-wide store for the next run over the same arrays."""
    cache, self._cache = self._cache, {}
    if keep and cache and self._keep is not None:
      key, objs = self._keep
      try:
        refs = [weakref.ref(o) for o in objs]
      except TypeError:  # an object without weak references: cannot tell it is the same
        return
      with _KEPT_LOCK:
        _KEPT[key] = (refs, cache)
