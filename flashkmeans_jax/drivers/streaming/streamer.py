"""The resident chunks of a streaming run, and one pass over all rows at a time.

A :class:`Streamer` loads the resident chunks once, then runs passes in the
fixed order of :meth:`~flashkmeans_jax.drivers.streaming.plan.Plan.schedule`.
For ``device_put``, ``pinned`` and ``pinned_cache`` a pass is a Python loop of
compiled chunk steps (:mod:`~flashkmeans_jax.drivers.streaming.passes`) fed by
one :class:`~flashkmeans_jax.drivers.streaming.host_io.Prefetcher` that lives
across passes; for ``io_callback`` it is one compiled program
(:mod:`~flashkmeans_jax.drivers.streaming.io_callback_pass`).
"""

from __future__ import annotations

import collections
import contextlib
import functools
import itertools
import signal
import threading
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from flashkmeans_jax.drivers.streaming import io_callback_pass
from flashkmeans_jax.drivers.streaming import passes
from flashkmeans_jax.drivers.streaming.host_io import HostSource, Prefetcher, Stager
from flashkmeans_jax.drivers.streaming.plan import PREFETCH_DEPTH, Plan
from flashkmeans_jax.drivers.streaming.progress import Progress

__all__ = ["Streamer", "PassAborted", "Emit"]

# Labels of rows [start, stop) of the whole array (a Streamer over a row range
# adds its offset): emit(start, stop, labels int32[B], dist float32[B]), NumPy.
Emit = Callable[[int, int, np.ndarray, np.ndarray], None]


class PassAborted(RuntimeError):
  """A pass was stopped from outside (:attr:`Streamer.abort` set)."""


@functools.partial(jax.jit, donate_argnums=(0,))
def _write_slot(buf, xb, j):
  # Donated: the resident buffer is filled in place, one chunk at a time,
  # so loading it never needs twice its size.
  return lax.dynamic_update_index_in_dim(buf, xb, j, 0)


POLL_S = 0.002  # how often a waiting io_callback pass lets Python handle signals


def _wait_interruptibly(tree, abort: threading.Event) -> None:
  """Waits for the device arrays of ``tree`` in short sleeps rather than one
  blocking call, so the main thread runs Python's signal handlers (a
  KeyboardInterrupt arrives within a chunk, not after the whole compiled
  pass); raises :class:`PassAborted` when ``abort`` is set."""
  leaves = jax.tree.leaves(tree)
  while not all(a.is_ready() for a in leaves):
    if abort.is_set():
      raise PassAborted("the pass was stopped")
    time.sleep(POLL_S)


@contextlib.contextmanager
def _sigint_to(session):
  """During a compiled io_callback pass, Ctrl-C is recorded as the
  session's error (the next fetch then serves zeros without reading, the
  program runs out and the driver raises the KeyboardInterrupt) instead of
  being raised wherever the main thread is: where XLA runs the program on
  the main thread (CPU), that is inside JAX's callback wrapper, which would
  turn it into an opaque runtime error. Only on the main thread (where
  Python handles signals) and over the default handler."""
  if (threading.current_thread() is not threading.main_thread()
      or signal.getsignal(signal.SIGINT) is not signal.default_int_handler):
    yield
    return

  def record(signum, frame):
    if session.error is None:
      session.error = KeyboardInterrupt()

  signal.signal(signal.SIGINT, record)
  try:
    yield
  finally:
    signal.signal(signal.SIGINT, signal.default_int_handler)


class Streamer:
  """Owns the resident chunks and runs passes over all rows by ``method``.

  Args:
    src: the ``[N, D]`` points; wsrc: their ``float32[N]`` weights or ``None``.
    plan: chunking and residency.
    opts: the chunk steps' static options.
    method: ``"device_put"``, ``"pinned"``, ``"pinned_cache"`` or
      ``"io_callback"`` (already resolved, see
      :func:`~flashkmeans_jax.drivers.streaming.plan.resolve_method`).
    device: where the chunks go.
    progress: counts the rows (and transferred bytes) of each pass.
    keep_pinned: :meth:`close` keeps the ``pinned_cache`` copies for a later
      run over the same host arrays, chunking and device (which starts from
      them) instead of freeing them.

  Use as a context manager: :meth:`close` stops the prefetch threads and
  frees the resident and pinned copies, also when a pass was interrupted.
  """

  def __init__(self, src: HostSource, wsrc: HostSource | None, plan: Plan,
               opts: passes.StepOptions, method: str, device: Any, progress: Progress,
               keep_pinned: bool = False):
    self.src, self.wsrc, self.plan, self.opts = src, wsrc, plan, opts
    self.method, self.device, self.progress = method, device, progress
    self.keep_pinned = keep_pinned
    # Set from another thread to stop a pass at the next chunk (the sharded
    # streamer's interrupt of its per-device passes).
    self.abort = threading.Event()
    staging = {"pinned": "pinned", "pinned_cache": "pinned_cache"}.get(method, "pageable")
    objs = [s.data for s in (src, wsrc) if s is not None]
    key = (src.ident, None if wsrc is None else wsrc.ident, src.shape, str(src.dtype),
           plan.chunk, getattr(device, "platform", None), getattr(device, "id", None))
    self.stager = Stager(device, staging, keep=(key, objs))
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
    self._session: io_callback_pass.IoSession | None = None
    self._sid: int | None = None

  # -- host reads

  def read(self, j: int) -> tuple[np.ndarray, np.ndarray | None]:
    """NumPy rows (and weights) of chunk ``j``; any thread."""
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

  def load_resident(self, prefetch_streamed: bool = False) -> None:
    """Reads the resident chunks onto the device (once per run).

    ``prefetch_streamed``: first start the prefetcher of the streamed
    chunks, so the first pass's first chunks are read (and pinned, for the
    pinned methods) while the resident ones load. Only for runs of more
    than one pass: the prefetcher learns that a pass is the final one when
    that pass starts, and a one-pass run could by then have queued chunks
    of a second pass.
    """
    p = self.plan
    if prefetch_streamed and self.method != "io_callback":
      self._start_prefetch()
    if p.n_resident:
      stacked = self.method == "io_callback"
      if stacked:
        buf = jnp.zeros((p.n_resident, p.chunk, p.d), self.src.dtype, device=self.device)
        wbuf = (None if self.wsrc is None else
                jnp.zeros((p.n_resident, p.chunk), jnp.float32, device=self.device))
      dev = jax.sharding.SingleDeviceSharding(self.device)
      with Prefetcher(lambda j: jax.device_put(self.read(j), dev),
                      range(p.n_resident), PREFETCH_DEPTH) as pf:
        for j, (xb, wb) in enumerate(pf):
          if stacked:
            buf = _write_slot(buf, xb, j)
            if wbuf is not None:
              wbuf = _write_slot(wbuf, wb, j)
          else:
            self.chunks.append(xb)
            self.wchunks.append(wb)
          self.progress.transferred(xb.nbytes + (0 if wb is None else wb.nbytes))
          self.progress.update(p.chunk)
      if stacked:
        self.buf, self.wbuf = buf, wbuf
    if p.tail and p.tail_resident:
      self.tail_x, self.tail_w = jax.device_put(
          self.read(p.n_full), jax.sharding.SingleDeviceSharding(self.device))

  # -- passes

  @property
  def keeps_labels(self) -> bool:
    """Whether :meth:`run_pass` can keep a pass's labels on the device
    (``keep=``): the Python-loop methods can, the compiled io_callback pass
    cannot."""
    return self.method != "io_callback"

  def run_pass(self, totals, c: jax.Array, emit: Emit | None = None, *,
               final: bool = False, keep: list | None = None):
    """Folds every chunk into ``totals`` (see :func:`passes.accumulate`) for
    centroids ``c float32[K, D]``; ``emit(j, labels, dist)`` receives the
    NumPy labels/distances of chunk ``j`` when given. ``final``: no pass
    follows, so nothing of a next pass is prefetched. ``keep``: a list that
    receives ``(start, stop, labels int32[B], dist float32[B])`` (rows of
    the whole array, device arrays) of every chunk (only where
    :attr:`keeps_labels`), so the caller can use this pass's labels without
    another pass. Returns the totals."""
    if emit is not None:
      emit = self._global(emit)
    if self.method == "io_callback":
      return self._pass_io(totals, c, emit)
    try:
      return self._pass_device_put(totals, c, emit, final, keep)
    except BaseException:
      # A pass that stopped part-way leaves its remaining chunks queued; a
      # later pass must start from its own first chunk.
      self._stop_prefetch()
      raise

  def global_rows(self, j: int) -> tuple[int, int]:
    """Rows of chunk ``j`` in the whole host array."""
    start, stop = self.plan.rows(j)
    return self.src.offset + start, self.src.offset + stop

  def _global(self, emit: Emit):
    def by_chunk(j, labels, dist):
      emit(*self.global_rows(j), labels, dist)
    return by_chunk

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
    self._start_prefetch()
    return itertools.islice(self._pf_items, len(streamed))

  def _start_prefetch(self) -> None:
    if self._pf is None and self.plan.streamed():
      self._pf = Prefetcher(lambda j: (j, self.load(j)), self._streamed_jobs(),
                            PREFETCH_DEPTH)
      self._pf_items = iter(self._pf)

  def _stop_prefetch(self) -> None:
    if self._pf is not None:
      self._pf.close()
    self._pf = self._pf_items = None

  def _pass_device_put(self, totals, c, emit, final, keep):
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
          jax.block_until_ready(out)

    def step(totals, j, xb, wb):
      # One compiled step whether or not the labels are kept (dropping them
      # saves nothing: assign computes them anyway), so runs that keep and
      # runs that cannot share their compilations.
      out = passes.step_labels(totals, c, xb, wb, opts=self.opts)
      if emit is None:
        if keep is not None:
          keep.append((*self.global_rows(j), out[1], out[2]))
        pending.append((j, out[0]))
        return out[0]
      out[1].copy_to_host_async()
      out[2].copy_to_host_async()
      pending.append((j, out))
      return out[0]

    # The prefetcher is already loading (or now starts loading) the first
    # streamed chunks, so their transfer overlaps the work on the resident ones.
    pf = self._streamed_chunks(final)
    for j, streamed in p.schedule():
      if self.abort.is_set():
        raise PassAborted("the pass was stopped")
      if streamed:
        got = next(pf, None)
        if got is None or got[0] != j:  # the prefetcher is out of step: never silent
          raise RuntimeError(f"expected streamed chunk {j} of the pass, the prefetcher "
                             f"gave {'nothing' if got is None else got[0]}")
        xb, wb = got[1]
        self.progress.transferred(xb.nbytes + (0 if wb is None else wb.nbytes))
      elif j == p.n_full:
        xb, wb = self.tail_x, self.tail_w
      else:
        xb, wb = self.chunks[j], self.wchunks[j]
      totals = step(totals, j, xb, wb)
      self.progress.update(xb.shape[0])
      retire(1)
    retire(0)
    return totals

  def _pass_io(self, totals, c, emit):
    p = self.plan
    if self._session is None:
      self._sid, self._session = io_callback_pass.open_session(self.read, self.progress)
    self._session.start(p.streamed(), emit)
    self.progress.update(p.resident_rows)
    with _sigint_to(self._session):
      totals = io_callback_pass.io_pass(
          totals, c, self.buf, self.wbuf, self.tail_x, self.tail_w, jnp.int32(self._sid),
          opts=self.opts, plan=p, dtype=jnp.dtype(self.src.dtype),
          weighted=self.wsrc is not None, emit=emit is not None)
      try:
        _wait_interruptibly(totals, self.abort)
      except BaseException as e:
        # An abort while the program runs: from the next fetch on the
        # session serves zeros without reading, so the program runs out.
        if self._session.error is None:
          self._session.error = e
        jax.block_until_ready(totals)
    err = self._session.take_error()
    if err is not None:
      raise err
    return totals

  def close(self) -> None:
    self._stop_prefetch()
    if self._sid is not None:
      io_callback_pass.close_session(self._sid)
      self._sid = self._session = None
    self.stager.clear(keep=self.keep_pinned)
    self.chunks, self.wchunks = [], []
    self.buf = self.wbuf = self.tail_x = self.tail_w = None

  def resident_arrays(self) -> list:
    """Every device array holding resident data (to wait on after loading)."""
    arrays = self.chunks + [w for w in self.wchunks if w is not None]
    arrays += [a for a in (self.buf, self.wbuf, self.tail_x, self.tail_w) if a is not None]
    return arrays

  def __enter__(self) -> "Streamer":
    return self

  def __exit__(self, *exc) -> None:
    self.close()
