"""The ``verbose`` display of a streaming run: one bar per pass over the rows.

A pass is the unit a user waits on (seconds to minutes over host memory), so
the bar counts rows, names the pass (``pass 3/9``: this pass and the most a
run may take) and shows points per second, the achieved host-to-device rate
of the pass (bytes transferred over its time so far; resident chunks
transfer nothing), and the inertia and centroid shift of the last iteration.
tqdm is optional: without it one plain line per pass goes to stderr. Nothing
goes to stdout.
"""

from __future__ import annotations

import sys
import time

__all__ = ["Progress", "PlainBar"]


class Progress:
  """tqdm bar over the rows of one pass (points per second), or nothing.

  Args:
    enabled: ``False`` makes every method a no-op (counts are still kept).
    n: rows per pass (the bar's total).
    max_passes: the most passes the run may take (shown as ``pass i/max``;
      ``None`` shows ``pass i``).
  """

  def __init__(self, enabled: bool, n: int, max_passes: int | None = None):
    self._bar = None
    self._n = n
    self.max_passes = max_passes
    self.passes = 0  # passes started (the resident load is not one)
    self.nbytes = 0  # bytes transferred to the device in this pass
    self.t0 = time.perf_counter()
    self._last_post: dict = {}
    if not enabled:
      return
    try:
      from tqdm.auto import tqdm
    except ImportError:  # tqdm is an optional dependency: plain lines instead
      self._bar = PlainBar(n)
      return
    self._bar = tqdm(total=n, unit="pt", unit_scale=True, dynamic_ncols=True,
                     file=sys.stderr, leave=True)

  @property
  def enabled(self) -> bool:
    return self._bar is not None

  def info(self, line: str) -> None:
    """One line of information (e.g. the transfer method and why), on stderr."""
    if self._bar is None:
      return
    write = getattr(self._bar, "write", None)
    if write is not None and not isinstance(self._bar, PlainBar):
      write(line, file=sys.stderr)
    else:
      print(line, file=sys.stderr, flush=True)

  def start(self, desc: str, counts: bool = True) -> None:
    """Starts a new pass named ``desc`` (the bar is reset to 0 rows);
    ``counts=False`` for work that is not a pass (loading resident chunks)."""
    if counts:
      self.passes += 1
      of = f"/{self.max_passes}" if self.max_passes else ""
      desc = f"pass {self.passes}{of} {desc}"
    self.nbytes, self.t0 = 0, time.perf_counter()
    if self._bar is not None:
      self._bar.reset(total=self._n)
      self._bar.set_description(desc)

  def rate_gbs(self) -> float:
    """Host-to-device GB/s of the current pass so far."""
    return self.nbytes / max(time.perf_counter() - self.t0, 1e-9) / 1e9

  def transferred(self, nbytes: int) -> None:
    """``nbytes`` crossed the host link in this pass (any thread)."""
    self.nbytes += int(nbytes)

  def update(self, rows: int) -> None:
    if self._bar is not None:
      self._bar.update(rows)
      if self.nbytes:
        self._post(h2d=f"{self.rate_gbs():.3g}GB/s")

  def _post(self, **kv) -> None:
    post = dict(self._last_post)
    post.update(kv)
    self._last_post = post
    self._bar.set_postfix(**post)

  def note(self, **kv) -> None:
    """Postfix of the current pass (``inertia=...``, ``shift=...``)."""
    if self._bar is not None:
      self._post(**kv)

  def close(self) -> None:
    if self._bar is not None:
      self._bar.close()


class PlainBar:
  """The part of tqdm's interface :class:`Progress` uses, printing one line
  per pass to stderr when the pass ends (reset or close)."""

  def __init__(self, n: int):
    self.n, self.done, self.desc, self.t0, self.post = n, 0, "", time.perf_counter(), {}

  def reset(self, total: int) -> None:
    self._flush()
    self.n, self.done, self.t0 = total, 0, time.perf_counter()

  def set_description(self, desc: str) -> None:
    self.desc = desc

  def set_postfix(self, **kv) -> None:
    self.post = kv

  def update(self, rows: int) -> None:
    self.done += rows

  def _flush(self) -> None:
    if self.done:
      rate = self.done / max(time.perf_counter() - self.t0, 1e-9)
      extra = " ".join(f"{k}={v}" for k, v in self.post.items())
      print(f"{self.desc}: {self.done}/{self.n} pt, {rate:.3g} pt/s {extra}",
            file=sys.stderr, flush=True)

  def close(self) -> None:
    self._flush()
    self.done = 0
