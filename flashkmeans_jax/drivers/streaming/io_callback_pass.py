"""``method="io_callback"``: one whole pass as a single compiled program.

The program walks the resident chunks and then, in a ``lax.fori_loop``,
fetches every streamed chunk from the host with
``jax.experimental.io_callback`` (and, in a labelling pass, hands the chunk's
labels back the same way). The host end is an :class:`IoSession` that reads
the next chunk on a thread while the current one is processed.

The compiled pass finds its session by an integer id passed as an argument,
not by a Python object closed over, so the program is reused across runs.
"""

from __future__ import annotations

import concurrent.futures
import functools
import itertools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.experimental import io_callback

from flashkmeans_jax.drivers.streaming import passes
from flashkmeans_jax.drivers.streaming.plan import Plan

__all__ = ["IoSession", "open_session", "close_session", "io_pass"]

_SESSIONS: dict[int, "IoSession"] = {}
_SESSION_IDS = itertools.count(1)


class IoSession:
  """Host end of an io_callback pass: serves chunks (read one ahead on a
  thread) and receives labels.

  Errors are stored, not raised into XLA (an exception inside a callback
  would abort the program with an opaque runtime error); the driver raises
  them once the pass returns.

  Args:
    load: ``load(j) -> (x [B, D], w float32[B] | None)`` NumPy chunk ``j``.
    progress: a :class:`~flashkmeans_jax.drivers.streaming.progress.Progress`.
  """

  def __init__(self, load: Callable[[int], Any], progress: Any):
    self.load, self.progress = load, progress
    self.emit: Callable | None = None
    self.error: BaseException | None = None
    self.pool: concurrent.futures.ThreadPoolExecutor | None = None
    self.ahead: dict[int, Any] = {}
    self.next_of: dict[int, int] = {}

  def start(self, order: list[int], emit: Callable | None) -> None:
    """Prepares a pass fetching chunks ``order`` in that order; ``emit(j,
    labels, dist)`` receives labels of a labelling pass."""
    self.error, self.emit = None, emit
    self.pool = self.pool or concurrent.futures.ThreadPoolExecutor(
        1, thread_name_prefix="fkm-io")
    self.next_of = {a: b for a, b in zip(order, order[1:])}
    self.ahead = {order[0]: self.pool.submit(self.load, order[0])} if order else {}

  def fetch(self, j: int, zeros: Callable[[], Any]):
    """Chunk ``j`` (after an error: ``zeros()``, so the program runs out)."""
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
    self.progress.transferred(sum(a.nbytes for a in out if a is not None))
    self.progress.update(out[0].shape[0])
    return out

  def take_error(self) -> BaseException | None:
    """The error of the last pass, cleared."""
    err, self.error = self.error, None
    return err

  def close(self) -> None:
    for fut in self.ahead.values():
      fut.cancel()
    self.ahead.clear()
    if self.pool is not None:
      self.pool.shutdown(wait=True)
      self.pool = None


def open_session(load: Callable[[int], Any], progress: Any) -> tuple[int, IoSession]:
  """A new registered session and its id (the argument of :func:`io_pass`)."""
  sid = next(_SESSION_IDS)
  _SESSIONS[sid] = IoSession(load, progress)
  return sid, _SESSIONS[sid]


def close_session(sid: int) -> None:
  session = _SESSIONS.pop(sid, None)
  if session is not None:
    session.close()


def _host_fetch(sid, j, *, shape, dtype, weighted):
  session = _SESSIONS[int(sid)]

  def zeros():
    return np.zeros(shape, dtype), np.zeros(shape[:1], np.float32)

  try:
    x, w = session.fetch(int(j), zeros)
  except BaseException as e:  # noqa: BLE001 -- e.g. Ctrl-C handled in this callback
    # Where XLA runs the program on the main thread (CPU), a KeyboardInterrupt
    # lands inside a callback; raised into XLA it would become an opaque
    # runtime error, so it is stored and the program runs out on zeros.
    if session.error is None:
      session.error = e
    x, w = zeros()
  return (x, w) if weighted else (x,)


def _host_emit(sid, j, labels, dist):
  session = _SESSIONS[int(sid)]
  try:
    if session.error is None:
      session.emit(int(j), np.asarray(labels), np.asarray(dist))
  except BaseException as e:  # noqa: BLE001 -- re-raised by the driver
    if session.error is None:
      session.error = e
  return np.zeros((), np.int32)


def _fetch(sid, j, rows, d, dtype, weighted):
  shape = (rows, d)
  specs = [jax.ShapeDtypeStruct(shape, dtype)]
  if weighted:
    specs.append(jax.ShapeDtypeStruct((rows,), jnp.float32))
  cb = functools.partial(_host_fetch, shape=shape, dtype=np.dtype(dtype), weighted=weighted)
  out = io_callback(cb, tuple(specs), sid, j, ordered=True)
  return out[0], (out[1] if weighted else None)


def _emit(sid, j, labels, dist):
  io_callback(_host_emit, jax.ShapeDtypeStruct((), jnp.int32), sid, j, labels, dist,
              ordered=True)


@functools.partial(jax.jit, static_argnames=("opts", "plan", "dtype", "weighted", "emit"))
def io_pass(totals, c: jax.Array, buf: jax.Array | None, wbuf: jax.Array | None,
            tail_x: jax.Array | None, tail_w: jax.Array | None, sid: jax.Array, *,
            opts: passes.StepOptions, plan: Plan, dtype: Any, weighted: bool, emit: bool):
  """One pass: the resident chunks ``buf [R, chunk, D]`` (weights ``wbuf
  float32[R, chunk]``) and resident tail ``tail_x``/``tail_w``, then a
  ``fori_loop`` fetching each streamed chunk of session ``sid`` (int32[]).

  Returns the pass's totals (see :func:`passes.accumulate`); with ``emit``
  every chunk's labels and distances go to the session's ``emit``.
  """

  def run(totals, j, xb, wb):
    totals, labels, dist = passes.accumulate(totals, c, xb, wb, opts)
    if emit:
      _emit(sid, j, labels, dist)
    return totals

  def resident(j, totals):
    xb = lax.dynamic_index_in_dim(buf, j, keepdims=False)
    wb = None if wbuf is None else lax.dynamic_index_in_dim(wbuf, j, keepdims=False)
    return run(totals, j, xb, wb)

  def streamed(j, totals):
    xb, wb = _fetch(sid, j, plan.chunk, plan.d, dtype, weighted)
    return run(totals, j, xb, wb)

  if plan.n_resident:
    totals = lax.fori_loop(0, plan.n_resident, resident, totals)
  if plan.tail and plan.tail_resident:
    totals = run(totals, jnp.int32(plan.n_full), tail_x, tail_w)
  if plan.n_full > plan.n_resident:
    totals = lax.fori_loop(plan.n_resident, plan.n_full, streamed, totals)
  if plan.tail and not plan.tail_resident:
    j = jnp.int32(plan.n_full)
    xb, wb = _fetch(sid, j, plan.tail, plan.d, dtype, weighted)
    totals = run(totals, j, xb, wb)
  return totals
