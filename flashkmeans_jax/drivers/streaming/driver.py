"""Out-of-core k-means: the points stay in host memory and stream to the device.

:func:`kmeans_streaming` runs the same Lloyd iteration as
:func:`flashkmeans_jax.kmeans` on data that does not fit on the device: a
NumPy array, an ``np.memmap`` or any reader with ``shape``, ``dtype`` and
NumPy-style row slicing (h5py, zarr). Every iteration is one pass over the
rows in chunks: transfer, ``assign``, add the chunk's ``cluster_sums`` to a
running total; after the last chunk ``finalize_centroids`` gives the new
centroids. The device holds the centroids, O(K * D) accumulators, a few
chunks in flight and -- beyond the Triton original -- as many chunks as
``device_budget_bytes`` allows, kept resident for the whole run so that only
the rest crosses the host link every iteration.

Overlap of transfer and compute, by ``method``:

* ``"device_put"``: a Python loop over chunks; a worker thread reads chunk
  ``i + 1``/``i + 2`` and starts its ``jax.device_put`` while the device
  computes on chunk ``i`` (JAX dispatch is asynchronous). ``"pinned"`` does the
  same but copies each chunk into a pinned-host JAX array first (the
  transfer is then a plain DMA); ``"pinned_cache"`` keeps those pinned copies
  for later iterations (host memory: one extra copy of the streamed part).
* ``"io_callback"``: one jit-compiled function per pass whose
  ``lax.fori_loop`` fetches every chunk with
  ``jax.experimental.io_callback``; a host thread reads the next chunk while
  the current one is processed (the host-to-device copy itself is done by the
  runtime inside the loop).

What is not supported: the driver is host Python, so ``kmeans_streaming``
cannot be wrapped in ``jit``, ``vmap`` or ``grad`` (JAX also refuses to
``vmap`` an ``io_callback`` inside a loop); there is no ``n_init`` and no
batch axis; labels and distances come back as NumPy arrays.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import itertools
import os
import sys
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.experimental import io_callback

from flashkmeans_jax.core import validation as _checks
from flashkmeans_jax.core import validation as _dispatch
from flashkmeans_jax.core.types import KMeansResult
from flashkmeans_jax.drivers.streaming import passes as ops
from flashkmeans_jax.lloyd import seeding as init_mod
from flashkmeans_jax.drivers.streaming.host_io import (HostSource, Prefetcher, Stager,
                                          StreamingReadError)

__all__ = ["kmeans_streaming", "assign_streaming", "plan_chunks", "default_chunk_bytes",
           "StreamingReadError", "METHODS"]

METHODS = ("auto", "device_put", "pinned", "pinned_cache", "io_callback")
# What "auto" means, from the benchmark on an H200 (benchmarks/RESULTS.md;
# N=2^26, D=128, K=8192, float16, nothing resident): device_put 514 ms/iter
# (33 GB/s over PCIe from pageable memory, four chunks in flight), pinned
# 550 ms, io_callback 2950 ms (5.8 GB/s), pinned_cache 323 ms (53 GB/s after
# the first pass). The cache's first pass is slow (7.3 s: page-locking 16 GiB
# of host memory), so it pays off only after ~35 passes; "auto" takes it when
# max_iter allows at least _PINNED_CACHE_MIN_PASSES and it fits in host
# memory, else device_put (always for one pass, as in assign_streaming).
AUTO_METHOD = "pinned_cache"
AUTO_METHOD_ONE_PASS = "device_put"
_PINNED_CACHE_MIN_PASSES = 40
# Share of the host's available memory the pinned cache may take.
_PINNED_CACHE_SHARE = 0.5

# Default chunk: 1/64 of the free device memory, between 64 MiB and 1 GiB
# (about eight chunks are in flight, so they take at most 1/8). Each chunk
# pays a fixed cost (launches, the update's per-cluster work list): on an H200
# at N=2^26, K=8192, float16, 1 GiB chunks ran a pass in 271.5 ms against
# 280.2 ms with 256 MiB ones (benchmarks/RESULTS.md).
_DEFAULT_CHUNK_BYTES = 256 * 2**20  # when the device reports no memory stats
_CHUNK_FREE_FRACTION = 1 / 64
_MIN_CHUNK_BYTES, _MAX_CHUNK_BYTES = 64 * 2**20, 2**30
_FALLBACK_BUDGET_BYTES = 1 * 2**30  # when the device reports no memory stats
_BUDGET_FRACTION = 0.5  # of the free device memory, the rest is for kernels
_PREFETCH_DEPTH = 4  # chunks read/transferred ahead of the one computed, in parallel
_KPP_SAMPLE_PER_CLUSTER = 32
_KPP_SAMPLE_MIN = 2**16


# --------------------------------------------------------------------------
# Chunk plan


@dataclasses.dataclass(frozen=True)
class Plan:
  """How N rows split into chunks and which stay on the device.

  Chunk ``j`` holds rows ``[j * chunk, min(N, (j + 1) * chunk))``; chunks
  ``0 .. n_resident - 1`` (full ones) live on the device for the whole run,
  and so does the short tail chunk when ``tail_resident``; the others are
  streamed every pass.
  """
  n: int
  d: int
  chunk: int
  n_resident: int
  tail_resident: bool

  @property
  def n_full(self) -> int:
    return self.n // self.chunk

  @property
  def tail(self) -> int:
    return self.n - self.n_full * self.chunk

  @property
  def resident_rows(self) -> int:
    return self.n_resident * self.chunk + (self.tail if self.tail_resident else 0)

  def rows(self, j: int) -> tuple[int, int]:
    return j * self.chunk, min(self.n, (j + 1) * self.chunk)

  def streamed(self) -> list[int]:
    """Indices of the chunks streamed every pass, in row order."""
    last = [self.n_full] if self.tail and not self.tail_resident else []
    return list(range(self.n_resident, self.n_full)) + last

  def resident(self) -> list[int]:
    """Indices of the chunks kept on the device, in row order."""
    return list(range(self.n_resident)) + ([self.n_full] if self.tail and self.tail_resident
                                           else [])

  def schedule(self) -> list[tuple[int, bool]]:
    """One pass's order of work as ``(chunk, streamed)`` pairs.

    The streamed chunks are spread evenly among the resident ones (each in
    its own row order), so the host link carries data for the whole pass.
    With all resident chunks first, the link would go idle as soon as the
    bounded prefetch had filled, and the streamed rest would then arrive
    with no device work left to hide it: at N=2^26 float32 with half the
    data resident that cost 67 ms of a 437 ms pass. The order is fixed, so
    sums (and results) are the same on every run.
    """
    resident, streamed = self.resident(), self.streamed()
    total = len(resident) + len(streamed)
    order, r, s = [], iter(resident), iter(streamed)
    for i in range(total):
      # Streamed chunk number m goes to the first slot i with
      # (i + 1) * S // total > m: S slots in all, evenly spaced.
      if (i + 1) * len(streamed) // total > i * len(streamed) // total:
        order.append((next(s), True))
      else:
        order.append((next(r), False))
    return order


def default_budget(device: Any) -> int:
  """Bytes of data to keep resident by default: half the free device memory
  (``memory_stats``), or 1 GiB where the backend reports none."""
  free = _free_device_bytes(device)
  if free is None:
    return _FALLBACK_BUDGET_BYTES
  return max(0, int(_BUDGET_FRACTION * free))


def _free_device_bytes(device: Any) -> int | None:
  try:
    stats = device.memory_stats()
  except Exception:
    stats = None
  if stats and "bytes_limit" in stats:
    return int(stats["bytes_limit"]) - int(stats.get("bytes_in_use", 0))
  return None


def default_chunk_bytes(device: Any) -> int:
  """Bytes per streamed chunk when ``chunk_size`` is not given."""
  free = _free_device_bytes(device)
  if free is None:
    return _DEFAULT_CHUNK_BYTES
  return int(min(_MAX_CHUNK_BYTES, max(_MIN_CHUNK_BYTES, free * _CHUNK_FREE_FRACTION)))


def plan_chunks(n: int, d: int, row_bytes: int, chunk_size: int | None,
                budget_bytes: int, chunk_bytes: int = _DEFAULT_CHUNK_BYTES) -> Plan:
  """Chunk size and resident chunks for ``n`` rows of ``row_bytes`` each.

  ``chunk_bytes`` sizes the chunks when ``chunk_size`` (rows) is ``None``.
  ``budget_bytes`` bounds the resident data only (the streamed chunks in
  flight, about ``2 * _PREFETCH_DEPTH`` chunks, come on top): ``0`` streams
  everything, ``>= n * row_bytes`` keeps everything resident.
  """
  if chunk_size is None:
    chunk_size = max(1, chunk_bytes // row_bytes)
    if chunk_size >= 4096:
      chunk_size -= chunk_size % 1024  # kernel-friendly block multiple
  chunk = min(n, _checks.check_positive_int(chunk_size, "chunk_size"))
  if budget_bytes >= n * row_bytes:
    return Plan(n, d, chunk, n // chunk, True)
  n_res = min(n // chunk, budget_bytes // (chunk * row_bytes))
  return Plan(n, d, chunk, int(n_res), False)


# --------------------------------------------------------------------------
# Progress


class _Progress:
  """tqdm bar over the rows of one pass (points per second), or nothing."""

  def __init__(self, enabled: bool, n: int):
    self._bar = None
    self._n = n
    if not enabled:
      return
    try:
      from tqdm.auto import tqdm
    except ImportError:  # tqdm is an optional dependency: plain lines instead
      self._bar = _PlainBar(n)
      return
    self._bar = tqdm(total=n, unit="pt", unit_scale=True, dynamic_ncols=True,
                     file=sys.stderr, leave=True)

  def start(self, desc: str) -> None:
    if self._bar is not None:
      self._bar.reset(total=self._n)
      self._bar.set_description(desc)

  def update(self, rows: int) -> None:
    if self._bar is not None:
      self._bar.update(rows)

  def note(self, **kv) -> None:
    if self._bar is not None:
      self._bar.set_postfix(**kv)

  def close(self) -> None:
    if self._bar is not None:
      self._bar.close()


class _PlainBar:
  def __init__(self, n):
    self.n, self.done, self.desc, self.t0, self.post = n, 0, "", time.perf_counter(), {}

  def reset(self, total):
    self._flush()
    self.n, self.done, self.t0 = total, 0, time.perf_counter()

  def set_description(self, desc):
    self.desc = desc

  def set_postfix(self, **kv):
    self.post = kv

  def update(self, rows):
    self.done += rows

  def _flush(self):
    if self.done:
      rate = self.done / max(time.perf_counter() - self.t0, 1e-9)
      extra = " ".join(f"{k}={v}" for k, v in self.post.items())
      print(f"{self.desc}: {self.done}/{self.n} pt, {rate:.3g} pt/s {extra}",
            file=sys.stderr, flush=True)

  def close(self):
    self._flush()
    self.done = 0


# --------------------------------------------------------------------------
# Jitted chunk steps


@functools.partial(jax.jit, static_argnames=("cfg",))
def _step(acc, c, xb, wb, *, cfg):
  return ops.accumulate(acc, c, xb, wb, cfg)[0]


@functools.partial(jax.jit, static_argnames=("cfg",))
def _step_emit(acc, c, xb, wb, *, cfg):
  return ops.accumulate(acc, c, xb, wb, cfg)


@functools.partial(jax.jit, donate_argnums=(0,))
def _write_slot(buf, xb, j):
  # Donated: the resident buffer is filled in place, one chunk at a time,
  # so loading it never needs twice its size.
  return lax.dynamic_update_index_in_dim(buf, xb, j, 0)


# --------------------------------------------------------------------------
# io_callback plumbing: the jitted pass finds its host session by an integer
# id passed as an argument, so compiled passes are reused across runs.

_SESSIONS: dict[int, "_IoSession"] = {}
_SESSION_IDS = itertools.count(1)


class _IoSession:
  """Host end of an io_callback pass: serves chunks (read one ahead on a
  thread) and receives labels. Errors are stored, not raised into XLA, and
  the driver raises them once the pass returns."""

  def __init__(self, load, emit, progress):
    self.load, self.emit, self.progress = load, emit, progress
    self.error: BaseException | None = None
    self.pool = None
    self.ahead: dict[int, Any] = {}
    self.next_of: dict[int, int] = {}

  def start(self, order: list[int]) -> None:
    import concurrent.futures
    self.error = None
    self.pool = self.pool or concurrent.futures.ThreadPoolExecutor(
        1, thread_name_prefix="fkm-io")
    self.next_of = {a: b for a, b in zip(order, order[1:])}
    self.ahead = {order[0]: self.pool.submit(self.load, order[0])} if order else {}

  def fetch(self, j: int, zeros):
    if self.error is not None:
      return zeros()
    fut = self.ahead.pop(j, None)
    nxt = self.next_of.get(j)
    try:
      out = fut.result() if fut is not None else self.load(j)
    except BaseException as e:  # noqa: BLE001 -- re-raised by the driver
      self.error = e
      return zeros()
    if nxt is not None:
      self.ahead[nxt] = self.pool.submit(self.load, nxt)
    self.progress.update(out[0].shape[0])
    return out

  def close(self) -> None:
    for fut in self.ahead.values():
      fut.cancel()
    self.ahead.clear()
    if self.pool is not None:
      self.pool.shutdown(wait=True)
      self.pool = None


def _io_fetch(sid, j, *, shape, dtype, weighted):
  session = _SESSIONS[int(sid)]

  def zeros():
    return np.zeros(shape, dtype), np.zeros(shape[:1], np.float32)

  x, w = session.fetch(int(j), zeros)
  return (x, w) if weighted else (x,)


def _io_emit(sid, j, labels, dist):
  session = _SESSIONS[int(sid)]
  if session.error is None:
    try:
      session.emit(int(j), np.asarray(labels), np.asarray(dist))
    except BaseException as e:  # noqa: BLE001
      session.error = e
  return np.zeros((), np.int32)


def _fetch(sid, j, rows, d, dtype, weighted):
  shape = (rows, d)
  specs = [jax.ShapeDtypeStruct(shape, dtype)]
  if weighted:
    specs.append(jax.ShapeDtypeStruct((rows,), jnp.float32))
  cb = functools.partial(_io_fetch, shape=shape, dtype=np.dtype(dtype), weighted=weighted)
  out = io_callback(cb, tuple(specs), sid, j, ordered=True)
  return out[0], (out[1] if weighted else None)


def _emit(sid, j, labels, dist):
  io_callback(_io_emit, jax.ShapeDtypeStruct((), jnp.int32), sid, j, labels, dist,
              ordered=True)


@functools.partial(jax.jit, static_argnames=("cfg", "plan", "dtype", "weighted", "emit"))
def _io_pass(acc, c, buf, wbuf, tail_x, tail_w, sid, *, cfg, plan, dtype, weighted, emit):
  """One whole pass as a compiled program: resident chunks, then a
  ``fori_loop`` whose body fetches each streamed chunk with io_callback."""

  def run(acc, j, xb, wb):
    acc, labels, dist = ops.accumulate(acc, c, xb, wb, cfg)
    if emit:
      _emit(sid, j, labels, dist)
    return acc

  def resident(j, acc):
    xb = lax.dynamic_index_in_dim(buf, j, keepdims=False)
    wb = None if wbuf is None else lax.dynamic_index_in_dim(wbuf, j, keepdims=False)
    return run(acc, j, xb, wb)

  def streamed(j, acc):
    xb, wb = _fetch(sid, j, plan.chunk, plan.d, dtype, weighted)
    return run(acc, j, xb, wb)

  if plan.n_resident:
    acc = lax.fori_loop(0, plan.n_resident, resident, acc)
  if plan.tail and plan.tail_resident:
    acc = run(acc, jnp.int32(plan.n_full), tail_x, tail_w)
  if plan.n_full > plan.n_resident:
    acc = lax.fori_loop(plan.n_resident, plan.n_full, streamed, acc)
  if plan.tail and not plan.tail_resident:
    j = jnp.int32(plan.n_full)
    xb, wb = _fetch(sid, j, plan.tail, plan.d, dtype, weighted)
    acc = run(acc, j, xb, wb)
  return acc


# --------------------------------------------------------------------------
# The streamer: resident chunks + one pass at a time


class _Streamer:
  """Owns the resident chunks and runs passes over all rows by ``method``."""

  def __init__(self, src: HostSource, wsrc: HostSource | None, plan: Plan, cfg: ops.Cfg,
               method: str, device: Any, progress: _Progress):
    self.src, self.wsrc, self.plan, self.cfg = src, wsrc, plan, cfg
    self.method, self.device, self.progress = method, device, progress
    staging = {"pinned": "pinned", "pinned_cache": "pinned_cache"}.get(method, "pageable")
    self.stager = Stager(device, staging)
    # Resident chunks: separate device arrays, handed to the kernels as they
    # are (a slice of one stacked buffer is copied, a whole chunk, before
    # every Pallas call); only the io_callback pass, one compiled program,
    # takes them stacked as `buf [R, chunk, D]`.
    self.chunks: list = []
    self.wchunks: list = []
    # One prefetcher serves every pass (see `_streamed_chunks`).
    self._pf: Prefetcher | None = None
    self._pf_items = None
    self._final_pass = False
    self.buf = self.wbuf = self.tail_x = self.tail_w = None
    self.session: _IoSession | None = None
    self.sid = None

  # -- host reads

  def read(self, j: int):
    start, stop = self.plan.rows(j)
    x = self.src.read(start, stop, j)
    w = None if self.wsrc is None else self.wsrc.read(start, stop, j)
    if w is not None and not (np.all(np.isfinite(w)) and np.all(w >= 0)):
      # Readers/memmaps are not checked up front (that would be a whole
      # extra pass), so every weight chunk is checked as it arrives.
      raise ValueError(f"weights in chunk {j} (rows {start}:{stop}) must be finite and >= 0")
    return x, w

  def load(self, j: int):
    """Chunk ``j`` on the device (called on the prefetch thread)."""
    return self.stager.put(j, lambda: self.read(j))

  # -- resident part

  def load_resident(self) -> None:
    p = self.plan
    if p.n_resident:
      stacked = self.method == "io_callback"
      if stacked:
        buf = jnp.zeros((p.n_resident, p.chunk, p.d), self.src.dtype, device=self.device)
        wbuf = (None if self.wsrc is None else
                jnp.zeros((p.n_resident, p.chunk), jnp.float32, device=self.device))
      dev = jax.sharding.SingleDeviceSharding(self.device)
      with Prefetcher(lambda j: jax.device_put(self.read(j), dev),
                      range(p.n_resident), _PREFETCH_DEPTH) as pf:
        for j, (xb, wb) in enumerate(pf):
          if stacked:
            buf = _write_slot(buf, xb, j)
            if wbuf is not None:
              wbuf = _write_slot(wbuf, wb, j)
          else:
            self.chunks.append(xb)
            self.wchunks.append(wb)
          self.progress.update(p.chunk)
      if stacked:
        self.buf, self.wbuf = buf, wbuf
    if p.tail and p.tail_resident:
      self.tail_x, self.tail_w = jax.device_put(
          self.read(p.n_full), jax.sharding.SingleDeviceSharding(self.device))

  # -- passes

  def run_pass(self, acc: dict, c: jax.Array, emit=None, *, final: bool = False) -> dict:
    """Folds every chunk into ``acc``; ``emit(j, labels, dist)`` receives the
    NumPy labels/distances of chunk ``j`` when given. ``final``: no pass
    follows, so nothing of a next pass is prefetched."""
    if self.method == "io_callback":
      return self._pass_io(acc, c, emit)
    try:
      return self._pass_device_put(acc, c, emit, final)
    except BaseException:
      # A pass that stopped part-way leaves its remaining chunks queued; a
      # later pass must start from its own first chunk.
      self._stop_prefetch()
      raise

  def _streamed_jobs(self):
    streamed = self.plan.streamed()
    while True:
      yield from streamed
      if self._final_pass:
        return

  def _streamed_chunks(self, final: bool):
    """This pass's streamed chunks as ``(j, (xb, wb))``, in order.

    The prefetcher lives across passes: the data do not depend on the
    centroids, so the next pass's first chunks cross the host link while this
    pass computes its last chunks and the host waits on its result. Without
    that, each pass would start with the link busy and the device idle (one
    chunk's transfer) and end the other way round (one chunk's compute):
    24 ms per pass at N=2^26 float16 with 1 GiB chunks. It stops after the
    final pass's chunks."""
    streamed = self.plan.streamed()
    if final:
      self._final_pass = True
    if not streamed:
      return iter(())
    if self._pf is None:
      self._pf = Prefetcher(lambda j: (j, self.load(j)), self._streamed_jobs(),
                            _PREFETCH_DEPTH)
      self._pf_items = iter(self._pf)
    return itertools.islice(self._pf_items, len(streamed))

  def _stop_prefetch(self) -> None:
    if self._pf is not None:
      self._pf.close()
    self._pf = self._pf_items = None

  def _pass_device_put(self, acc, c, emit, final):
    p = self.plan
    pending: collections.deque = collections.deque()

    def retire(limit):
      # Bounded run-ahead: block on the oldest step once `limit` are queued,
      # so at most a few chunks are alive on the device at any time.
      while len(pending) > limit:
        j, out = pending.popleft()
        if emit is not None:
          emit(j, np.asarray(out[1]), np.asarray(out[2]))
        else:
          jax.block_until_ready(out["inertia"])

    def step(j, make_out):
      out = make_out()
      if emit is not None:
        out[1].copy_to_host_async()
        out[2].copy_to_host_async()
        pending.append((j, out))
        return out[0]
      pending.append((j, out))
      return out

    # The prefetcher is already loading (or now starts loading) the first
    # streamed chunks, so their transfer overlaps the work on the resident ones.
    pf = self._streamed_chunks(final)
    for j, streamed in p.schedule():
      if streamed:
        got = next(pf, None)
        if got is None or got[0] != j:  # the prefetcher is out of step: never silent
          raise RuntimeError(f"expected streamed chunk {j} of the pass, the prefetcher "
                             f"gave {'nothing' if got is None else got[0]}")
        xb, wb = got[1]
      elif j == p.n_full:
        xb, wb = self.tail_x, self.tail_w
      else:
        xb, wb = self.chunks[j], self.wchunks[j]
      acc = step(j, lambda: self._plain(acc, c, xb, wb, emit))
      self.progress.update(xb.shape[0])
      retire(1)
    retire(0)
    return acc

  def _plain(self, acc, c, xb, wb, emit):
    if emit is not None:
      return _step_emit(acc, c, xb, wb, cfg=self.cfg)
    return _step(acc, c, xb, wb, cfg=self.cfg)

  def _pass_io(self, acc, c, emit):
    p = self.plan
    if self.session is None:
      self.session = _IoSession(self.read, None, self.progress)
      self.sid = next(_SESSION_IDS)
      _SESSIONS[self.sid] = self.session
    s = self.session
    s.emit = emit
    s.start(p.streamed())
    self.progress.update(p.resident_rows)
    acc = _io_pass(acc, c, self.buf, self.wbuf, self.tail_x, self.tail_w,
                   jnp.int32(self.sid), cfg=self.cfg, plan=p, dtype=jnp.dtype(self.src.dtype),
                   weighted=self.wsrc is not None, emit=emit is not None)
    jax.block_until_ready(acc)
    if s.error is not None:
      err = s.error
      s.error = None
      raise err
    return acc

  def close(self) -> None:
    self._stop_prefetch()
    if self.session is not None:
      self.session.close()
      _SESSIONS.pop(self.sid, None)
      self.session = None
    self.stager.clear()
    self.chunks, self.wchunks = [], []
    self.buf = self.wbuf = self.tail_x = self.tail_w = None

  def resident_arrays(self) -> list:
    """Every device array holding resident data (to wait on after loading)."""
    arrays = self.chunks + [w for w in self.wchunks if w is not None]
    arrays += [a for a in (self.buf, self.wbuf, self.tail_x, self.tail_w) if a is not None]
    return arrays

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()


# --------------------------------------------------------------------------
# Seeding from host data


def _host_rng(key: jax.Array) -> np.random.Generator:
  data = np.asarray(jax.random.key_data(key)).ravel()
  return np.random.default_rng([int(v) for v in data])


def _weighted_pick(wsrc: HostSource, plan: Plan, k: int, rng: np.random.Generator):
  """``k`` rows drawn without replacement with probability ~ weight
  (Gumbel top-k, one streaming pass over the weights on the host)."""
  best_key = np.full((0,), -np.inf)
  best_idx = np.zeros((0,), np.int64)
  for j in range((plan.n + plan.chunk - 1) // plan.chunk):
    start, stop = plan.rows(j)
    w = wsrc.read(start, stop, j).astype(np.float64)
    with np.errstate(divide="ignore"):
      key = np.where(w > 0, np.log(np.where(w > 0, w, 1.0)), -1e30) + rng.gumbel(size=w.shape)
    keys = np.concatenate([best_key, key])
    idx = np.concatenate([best_idx, np.arange(start, stop)])
    top = np.argsort(-keys, kind="stable")[:k]
    best_key, best_idx = keys[top], idx[top]
  return np.sort(best_idx)


def _initial_centroids(key, src, wsrc, plan, k, init, metric, sample_size, device):
  """``float32[k, D]`` starting centroids on ``device``.

  ``"random"``: k distinct rows (weighted by ``weights`` when given), drawn
  on the host with a NumPy generator seeded from ``key``. ``"k-means++"``:
  greedy k-means++ on a uniform random subsample of ``sample_size`` rows
  (all rows when N is at most that, which gives exactly the seeds of the
  in-memory ``kmeans`` for the same key).
  """
  n = plan.n
  if init == "random":
    rng = _host_rng(key)
    rows = (np.sort(rng.choice(n, k, replace=False)) if wsrc is None
            else _weighted_pick(wsrc, plan, k, rng))
    return jax.device_put(src.take(rows), device).astype(jnp.float32)
  m = min(n, sample_size)
  rows = np.arange(n) if m == n else np.sort(_host_rng(key).choice(n, m, replace=False))
  xs = jax.device_put(src.take(rows), device)
  ws = None if wsrc is None else jax.device_put(wsrc.take(rows), device)
  return init_mod.init_kmeans_plusplus(key, xs, k, ws, metric=metric,
                                      precision=_dispatch.resolve_precision("highest"))


# --------------------------------------------------------------------------
# Public API


def _available_host_bytes() -> int:
  try:
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
  except (ValueError, OSError, AttributeError):
    return 0


def _resolve_method(method: str, plan: Plan | None = None, itemsize: int = 4,
                    device: Any = None, passes: int = 1) -> str:
  """``"auto"``: ``pinned_cache`` on a GPU when at least
  ``_PINNED_CACHE_MIN_PASSES`` passes may run, the streamed part fits in half
  the available host memory and the device offers pinned host memory; else
  ``device_put``."""
  method = _checks.check_choice(method, "method", METHODS)
  if method != "auto":
    return method
  if passes < _PINNED_CACHE_MIN_PASSES or plan is None:
    return AUTO_METHOD_ONE_PASS
  streamed = sum(plan.rows(j)[1] - plan.rows(j)[0] for j in plan.streamed()) * plan.d * itemsize
  from flashkmeans_jax.streaming_io import pinned_available
  if (device is not None and device.platform == "gpu" and pinned_available(device)
      and streamed <= _PINNED_CACHE_SHARE * _available_host_bytes()):
    return AUTO_METHOD
  return AUTO_METHOD_ONE_PASS


def _check_out(out: Any, n: int, name: str, kind: str) -> None:
  if out is None:
    return
  if not hasattr(out, "shape") or tuple(out.shape) != (n,):
    raise ValueError(f"{name} must be a host array of shape {(n,)}, got "
                     f"{getattr(out, 'shape', type(out).__name__)}")
  if np.dtype(out.dtype).kind != kind:
    raise TypeError(f"{name} must have dtype kind {kind!r}, got {out.dtype}")


def _sources(host_x, weights):
  src = HostSource(host_x, "host_x")
  _checks.check_points(src, "host_x")
  n = src.shape[0]
  wsrc = None
  if weights is not None:
    wsrc = HostSource(weights, "weights", dtype=np.float32)
    if wsrc.shape != (n,):
      raise ValueError(f"weights must have shape {(n,)} (one per point), got {wsrc.shape}")
    if isinstance(weights, np.ndarray) and not isinstance(weights, np.memmap):
      _checks.check_weights(weights, n)
  return src, wsrc


def _setup(host_x, weights, chunk_size, device_budget_bytes, device):
  src, wsrc = _sources(host_x, weights)
  n, d = src.shape
  device = device or jax.devices()[0]
  budget = default_budget(device) if device_budget_bytes is None else int(device_budget_bytes)
  if budget < 0:
    raise ValueError(f"device_budget_bytes must be >= 0, got {budget}")
  row_bytes = d * src.dtype.itemsize + (4 if wsrc is not None else 0)
  plan = plan_chunks(n, d, row_bytes, chunk_size, budget, default_chunk_bytes(device))
  return src, wsrc, plan, device


def _label_sink(n, labels_out, dist_out):
  labels = np.empty((n,), np.int32) if labels_out is None else labels_out
  dist = dist_out

  def emit(plan):
    def put(j, lab, dst):
      start, stop = plan.rows(j)
      labels[start:stop] = lab
      if dist is not None:
        dist[start:stop] = dst
    return put

  return labels, dist, emit


def kmeans_streaming(key: jax.Array, host_x: Any, k: int, *, chunk_size: int | None = None,
                     device_budget_bytes: int | None = None,
                     init: str | Any = "k-means++", max_iter: int = 300, tol: float = 1e-4,
                     metric: str = "sqeuclidean", weights: Any = None, empty: str = "keep",
                     impl: str | None = None, precision: Any = None, verbose: bool = False,
                     labels_out: Any = None, method: str = "auto",
                     init_sample_size: int | None = None, check_finite: bool = True,
                     config: Any = None, device: Any = None) -> KMeansResult:
  """Exact k-means (Lloyd) on host data streamed to the device in chunks.

  Same iteration, stopping rule and final assignment as
  :func:`flashkmeans_jax.kmeans`; only the summation order of the cluster
  sums differs (chunk by chunk), so on data that fits both give the same
  labels and centroids equal up to float32 rounding.

  Args:
    key: ``jax.random`` key (seeding).
    host_x: ``[N, D]`` float16/bfloat16/float32 points in host memory: a NumPy
      array, an ``np.memmap`` or a reader with ``shape``, ``dtype`` and
      ``host_x[start:stop]`` (h5py/zarr datasets). Never copied as a whole.
    k: number of clusters.
    chunk_size: rows per streamed chunk; default ``default_chunk_bytes``
      (1/64 of the free device memory, 64 MiB to 1 GiB) of rows.
      Any value works (the last chunk is shorter).
    device_budget_bytes: bytes of data kept resident on the device for the
      whole run (whole chunks, taken from the start of the array); only the
      remaining chunks are transferred each iteration. ``0``: pure streaming;
      ``>= N * D * itemsize``: all resident. Default: half of the device's
      free memory (``memory_stats``), 1 GiB where that is unknown. Streamed
      chunks in flight (about 4 chunks) come on top of the budget.
    init: ``"k-means++"`` (on a uniform random subsample of
      ``init_sample_size`` rows; the full data when N is at most that),
      ``"random"`` (k distinct rows drawn on the host, weighted when
      ``weights`` is given) or an array ``[k, D]`` used as given.
    max_iter, tol, metric, empty, impl, precision, config: as in ``kmeans``.
      ``empty="farthest"`` keeps the K farthest points seen during the pass.
    weights: optional ``float[N]`` host array/reader of weights >= 0,
      streamed with the points.
    verbose: a tqdm progress bar per pass (points per second, inertia and
      shift); nothing is printed otherwise.
    labels_out: optional caller-owned host ``int[N]`` array (e.g. a memmap)
      that receives the final labels.
    method: ``"auto"``, ``"device_put"``, ``"pinned"``, ``"pinned_cache"`` or
      ``"io_callback"`` (see the module docstring).
    init_sample_size: rows of the k-means++ subsample; default
      ``max(32 k, 65536)``.
    check_finite: raise ``ValueError`` after the first pass if any point has
      NaN/Inf (found during that pass, so no extra read of the data).
    device: the device to run on (default ``jax.devices()[0]``).

  Returns:
    :class:`KMeansResult` whose ``labels`` is a host NumPy ``int32[N]``
    array (``labels_out`` when given); ``centroids [k, D]`` (dtype of
    ``host_x``), ``inertia``, ``n_iter``, ``converged`` and
    ``inertia_history float32[max_iter]`` are JAX arrays as in ``kmeans``.

  Raises:
    StreamingReadError: a chunk could not be read (names the chunk and rows).
  """
  src, wsrc, plan, device = _setup(host_x, weights, chunk_size, device_budget_bytes, device)
  n, d = plan.n, plan.d
  k = _checks.check_k(k, n)
  metric = _checks.check_metric(metric)
  max_iter = _checks.check_positive_int(max_iter, "max_iter")
  tol = _checks.check_tol(tol)
  empty = _checks.check_empty(empty)
  impl = _dispatch.resolve_impl(impl)
  precision = _dispatch.resolve_precision(precision)
  method = _resolve_method(method, plan, src.dtype.itemsize, device, passes=max_iter + 1)
  _check_out(labels_out, n, "labels_out", "i")
  cfg = ops.Cfg(k, metric, impl, precision, config, empty, min(k, n))
  if isinstance(init, str):
    init = _checks.check_init_name(init)
    sample = init_sample_size or max(_KPP_SAMPLE_PER_CLUSTER * k, _KPP_SAMPLE_MIN)
    c = _initial_centroids(key, src, wsrc, plan, k, init, metric,
                           _checks.check_positive_int(sample, "init_sample_size"), device)
  elif hasattr(init, "shape"):
    _checks.check_centroids(init, d, "init", k=k)
    c = jax.device_put(jnp.asarray(init, jnp.float32), device)
  else:
    raise TypeError(
        f"init must be 'k-means++', 'random' or an array [k, D], got {type(init).__name__}")

  hist = np.full((max_iter,), np.nan, np.float32)
  progress = _Progress(verbose, n)
  converged, n_iter, tol_abs = False, 0, 0.0
  labels, _, emit = _label_sink(n, labels_out, None)
  try:
    with _Streamer(src, wsrc, plan, cfg, method, device, progress) as st:
      progress.start("load resident")
      st.load_resident()
      for it in range(max_iter):
        progress.start(f"iter {it}")
        first = it == 0
        acc = st.run_pass(ops.new_acc(cfg, d, lloyd=True, moments=first), c)
        if first:
          if check_finite and int(acc["nonfinite"]):
            raise ValueError(
                f"host_x contains NaN or Inf in {int(acc['nonfinite'])} rows; clean the "
                "data or pass check_finite=False (such points are then left out of the "
                "centroid update)")
          tol_abs = ops.tolerance(acc, tol)
        new_c, shift = ops.finalize(acc, c, cfg=cfg)
        hist[it] = float(acc["inertia"])
        shift = float(shift)
        c, n_iter = new_c, it + 1
        progress.note(inertia=f"{hist[it]:.6g}", shift=f"{shift:.3g}")
        if shift <= tol_abs:
          converged = True
          break
      progress.start("assign")
      acc = st.run_pass(ops.new_acc(cfg, d, lloyd=False, moments=False), c, emit(plan),
                        final=True)
      inertia = acc["inertia"]
  finally:
    progress.close()
  return KMeansResult(centroids=c.astype(src.dtype), labels=labels,
                      inertia=jnp.asarray(inertia, jnp.float32),
                      n_iter=jnp.int32(n_iter), converged=jnp.bool_(converged),
                      inertia_history=jnp.asarray(hist))


def assign_streaming(host_x: Any, centroids: Any, *, chunk_size: int | None = None,
                     device_budget_bytes: int | None = 0, metric: str = "sqeuclidean",
                     impl: str | None = None, precision: Any = None,
                     labels_out: Any = None, dist_out: Any = None, method: str = "auto",
                     verbose: bool = False, config: Any = None,
                     device: Any = None) -> tuple[np.ndarray, np.ndarray]:
  """Nearest centroid of every host row, streamed in chunks.

  Args:
    host_x: ``[N, D]`` host array or reader (see :func:`kmeans_streaming`).
    centroids: ``[K, D]`` (any array).
    device_budget_bytes: default ``0`` (one pass: nothing gains from staying
      resident).
    labels_out, dist_out: optional caller-owned host arrays ``int[N]`` and
      ``float[N]`` to write into.
    The rest as in :func:`kmeans_streaming` and :func:`flashkmeans_jax.assign`.

  Returns:
    ``labels int32[N]`` and ``dist float32[N]`` as host NumPy arrays (the
    given output arrays when passed).
  """
  src, _, plan, device = _setup(host_x, None, chunk_size, device_budget_bytes, device)
  n, d = plan.n, plan.d
  _checks.check_centroids(centroids, d)
  k = int(centroids.shape[0])
  metric = _checks.check_metric(metric)
  impl = _dispatch.resolve_impl(impl)
  precision = _dispatch.resolve_precision(precision)
  method = _resolve_method(method)
  _check_out(labels_out, n, "labels_out", "i")
  _check_out(dist_out, n, "dist_out", "f")
  cfg = ops.Cfg(k, metric, impl, precision, config, "keep", min(k, n))
  c = jax.device_put(jnp.asarray(centroids, jnp.float32), device)
  dist = np.empty((n,), np.float32) if dist_out is None else dist_out
  labels, _, emit = _label_sink(n, labels_out, dist)
  progress = _Progress(verbose, n)
  try:
    with _Streamer(src, None, plan, cfg, method, device, progress) as st:
      progress.start("assign")
      st.load_resident()
      st.run_pass(ops.new_acc(cfg, d, lloyd=False, moments=False), c, emit(plan), final=True)
  finally:
    progress.close()
  return labels, dist
