"""The ``verbose`` display of a streaming run: one bar per pass over the rows.

A pass is the unit a user waits on (seconds to minutes over host memory), so
the bar counts rows and shows points per second, with the inertia and
centroid shift of the last iteration as a postfix. tqdm is optional: without
it one plain line per pass goes to stderr. Nothing goes to stdout.
"""

from __future__ import annotations

import sys
import time

__all__ = ["Progress", "PlainBar"]


class Progress:
  """tqdm bar over the rows of one pass (points per second), or nothing.

  Args:
    enabled: ``False`` makes every method a no-op.
    n: rows per pass (the bar's total).
  """

  def __init__(self, enabled: bool, n: int):
    self._bar = None
    self._n = n
    if not enabled:
      return
    try:
      from tqdm.auto import tqdm
    except ImportError:  # tqdm is an optional dependency: plain lines instead
      self._bar = PlainBar(n)
      return
    self._bar = tqdm(total=n, unit="pt", unit_scale=True, dynamic_ncols=True,
                     file=sys.stderr, leave=True)

  def start(self, desc: str) -> None:
    """Starts a new pass named ``desc`` (the bar is reset to 0 rows)."""
    if self._bar is not None:
      self._bar.reset(total=self._n)
      self._bar.set_description(desc)

  def update(self, rows: int) -> None:
    if self._bar is not None:
      self._bar.update(rows)

  def note(self, **kv) -> None:
    """Postfix of the current pass (``inertia=...``, ``shift=...``)."""
    if self._bar is not None:
      self._bar.set_postfix(**kv)

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
