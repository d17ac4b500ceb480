"""What ``method="auto"`` measures: the host-to-device rate of each staging.

A fixed rule (a pass count) picked the slow path on machines it was not tuned
for: on an H200 pinned staging paid for its page-locking after about two
passes, where the rule assumed forty. So ``auto`` measures, once per process
and device, three rates on a small buffer moved the way the streamer moves
chunks (``PROBE_THREADS`` pieces side by side):

* ``pageable_gbs``: ``jax.device_put`` of pageable NumPy memory;
* ``pin_gbs``: copying NumPy memory into fresh pinned-host JAX arrays (the
  page-locking a pinned cache pays once, ``pinned`` every pass);
* ``pinned_gbs``: ``jax.device_put`` of those pinned arrays (a plain DMA).

:func:`estimate` turns them into the time the streamed bytes of a run take
by each method, and :func:`choose` takes the fastest (details in
docs/streaming.md). Only GPUs are probed: elsewhere "host" and "device"
memory are the same and every method costs a copy, so ``auto`` is
``device_put`` without measuring anything.
"""

from __future__ import annotations

import concurrent.futures
import threading
import time
from typing import Any, NamedTuple

import jax
import numpy as np

from flashkmeans_jax.drivers.streaming.host_io import pinned_available

__all__ = ["Rates", "Choice", "measure", "measured", "clear_measured", "estimate", "choose",
           "PROBE_BYTES", "PROBE_THREADS", "PROBE_REPEATS"]

PROBE_BYTES = 64 * 2**20  # per repeat; ~2 ms over PCIe 5 pageable, ~20 ms to pin
PROBE_THREADS = 4  # as many pieces in flight as the prefetcher keeps (PREFETCH_DEPTH)
PROBE_REPEATS = 2  # the best of these (the first one pays first-use costs)

_MEASURED: dict[Any, "Rates"] = {}
_LOCK = threading.Lock()


class Rates(NamedTuple):
  """Measured host-to-device rates in GB/s (``1e9`` bytes per second).

  ``pin_gbs`` and ``pinned_gbs`` are ``None`` where the device has no pinned
  host memory. ``probe_s`` is what measuring took (0 for injected rates).
  """
  pageable_gbs: float
  pin_gbs: float | None
  pinned_gbs: float | None
  probe_s: float = 0.0


class Choice(NamedTuple):
  """The outcome of ``method="auto"`` (or the method given).

  Attributes:
    method: the method the run uses.
    reason: one line saying why, for ``verbose``.
    rates: the measured rates (``None`` when nothing was measured).
    estimates_s: method -> estimated seconds of host-to-device transfer for
      the whole run (empty when nothing was estimated).
  """
  method: str
  reason: str
  rates: Rates | None = None
  estimates_s: dict | None = None

  def describe(self) -> str:
    """The choice and the probe's figures as one line."""
    parts = [f"method={self.method} ({self.reason})"]
    r = self.rates
    if r is not None:
      pinned = ("none" if r.pinned_gbs is None else
                f"pinned->device {r.pinned_gbs:.3g} GB/s, numpy->pinned {r.pin_gbs:.3g} GB/s")
      parts.append(f"probe: pageable->device {r.pageable_gbs:.3g} GB/s, {pinned}"
                   f" ({1e3 * r.probe_s:.0f} ms)")
    if self.estimates_s:
      parts.append("est. transfer " + ", ".join(f"{m} {t:.3g} s"
                                                for m, t in self.estimates_s.items()))
    return "; ".join(parts)


def _timed_puts(pieces, sharding) -> tuple[float, list]:
  """Seconds to put every piece with ``sharding`` from ``PROBE_THREADS``
  threads (as the prefetcher does), waiting until all have arrived."""
  with concurrent.futures.ThreadPoolExecutor(len(pieces)) as pool:
    t0 = time.perf_counter()
    out = list(pool.map(lambda p: jax.block_until_ready(jax.device_put(p, sharding)), pieces))
    return time.perf_counter() - t0, out


def measure(device: Any, nbytes: int = PROBE_BYTES) -> Rates:
  """Measures :class:`Rates` on ``device`` with ``nbytes`` of data (about
  ``3 * PROBE_REPEATS`` transfers of that size)."""
  t_start = time.perf_counter()
  rows = max(PROBE_THREADS, nbytes // 4 // 1024)
  host = np.ones((rows, 1024), np.float32)  # touched: no first-touch page faults timed
  pieces = np.array_split(host, PROBE_THREADS)
  size = host.nbytes
  on_device = jax.sharding.SingleDeviceSharding(device)
  has_pinned = pinned_available(device)
  pinned_kind = (jax.sharding.SingleDeviceSharding(device, memory_kind="pinned_host")
                 if has_pinned else None)
  best = {"pageable": np.inf, "pin": np.inf, "pinned": np.inf}
  for _ in range(PROBE_REPEATS):
    best["pageable"] = min(best["pageable"], _timed_puts(pieces, on_device)[0])
    if has_pinned:
      t_pin, pinned = _timed_puts(pieces, pinned_kind)
      best["pin"] = min(best["pin"], t_pin)
      best["pinned"] = min(best["pinned"], _timed_puts(pinned, on_device)[0])
      del pinned

  def gbs(t):
    return size / max(t, 1e-9) / 1e9

  return Rates(gbs(best["pageable"]), gbs(best["pin"]) if has_pinned else None,
               gbs(best["pinned"]) if has_pinned else None, time.perf_counter() - t_start)


def _device_key(device: Any) -> Any:
  return (getattr(device, "platform", None), getattr(device, "id", id(device)))


def measured(device: Any) -> Rates:
  """:func:`measure` once per process and device, then the cached rates."""
  key = _device_key(device)
  with _LOCK:
    if key not in _MEASURED:
      _MEASURED[key] = measure(device)
    return _MEASURED[key]


def clear_measured() -> None:
  """Forgets the cached rates (the next ``auto`` run measures again)."""
  with _LOCK:
    _MEASURED.clear()


def estimate(rates: Rates, streamed_bytes: int, passes: int, cache_fits: bool) -> dict:
  """Seconds of host-to-device transfer for ``passes`` passes of
  ``streamed_bytes`` each, by method.

  * ``device_put``: every pass at the pageable rate;
  * ``pinned``: every pass copies into pinned memory, then DMAs it (the two
    stages of one chunk are serial, so their times add);
  * ``pinned_cache`` (when ``cache_fits``): the first pass as ``pinned``,
    later passes at the pinned rate only.

  Compute hides transfer equally for every method, so only the transfer time
  is compared.
  """
  s = streamed_bytes / 1e9
  out = {"device_put": passes * s / rates.pageable_gbs}
  if rates.pinned_gbs is not None and rates.pin_gbs is not None:
    stage = s / rates.pin_gbs + s / rates.pinned_gbs
    out["pinned"] = passes * stage
    if cache_fits:
      out["pinned_cache"] = stage + (passes - 1) * s / rates.pinned_gbs
  return out


# A pinned method must beat device_put by this factor: it takes host memory
# (and page-locking) that device_put does not, so a near tie goes to device_put.
PINNED_MARGIN = 1.05


def choose(rates: Rates, streamed_bytes: int, passes: int, cache_fits: bool) -> Choice:
  """The method whose estimated transfer time (:func:`estimate`) is lowest;
  ``device_put`` unless a pinned method is at least ``PINNED_MARGIN`` times
  faster."""
  est = estimate(rates, streamed_bytes, passes, cache_fits)
  base = est["device_put"]
  best = min(est, key=est.get)
  if best != "device_put" and est[best] * PINNED_MARGIN <= base:
    why = f"fastest for {passes} passes of {streamed_bytes / 2**30:.3g} GiB"
    return Choice(best, why, rates, est)
  why = (f"no pinned method {PINNED_MARGIN}x faster for {passes} passes of "
         f"{streamed_bytes / 2**30:.3g} GiB")
  if rates.pinned_gbs is None:
    why = "no pinned host memory"
  return Choice("device_put", why, rates, est)
