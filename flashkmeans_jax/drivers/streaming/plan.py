"""How a streaming run splits the rows and moves them: chunk size, resident
chunks, the order of a pass, and the transfer method.

Nothing here touches the data; a :class:`Plan` depends only on N, D, the row
size in bytes and the device's free memory, so it can be tested without a
device.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

from flashkmeans_jax.core import validation
from flashkmeans_jax.drivers.streaming import probe
from flashkmeans_jax.drivers.streaming.host_io import pinned_available

__all__ = ["Plan", "plan_chunks", "plan_for", "default_chunk_bytes", "default_budget",
           "free_device_bytes", "METHODS", "choose_method", "resolve_method",
           "PREFETCH_DEPTH", "available_host_bytes"]

METHODS = ("auto", "device_put", "pinned", "pinned_cache", "io_callback")
# "auto" measures rather than assumes (:mod:`.probe`): on an H200 (N=2^26,
# D=128, K=8192, float16, nothing resident) device_put ran 514 ms/iter (33
# GB/s from pageable memory, four chunks in flight), pinned 550 ms,
# io_callback 2950 ms and pinned_cache 323 ms after a first pass that
# page-locks the data; the cache paid for itself after about two passes, so
# a fixed pass count (40 was the old rule) chose the slow path for short runs.
# Share of the host's available memory the pinned cache may take.
PINNED_CACHE_SHARE = 0.5

# Default chunk: 1/64 of the free device memory, between 64 MiB and 1 GiB
# (about eight chunks are in flight, so they take at most 1/8). Each chunk
# pays a fixed cost (launches, the update's per-cluster work list): on an H200
# at N=2^26, K=8192, float16, 1 GiB chunks ran a pass in 271.5 ms against
# 280.2 ms with 256 MiB ones (benchmarks/RESULTS.md).
DEFAULT_CHUNK_BYTES = 256 * 2**20  # when the device reports no memory stats
CHUNK_FREE_FRACTION = 1 / 64
MIN_CHUNK_BYTES, MAX_CHUNK_BYTES = 64 * 2**20, 2**30
FALLBACK_BUDGET_BYTES = 1 * 2**30  # when the device reports no memory stats
BUDGET_FRACTION = 0.5  # of the free device memory, the rest is for kernels
PREFETCH_DEPTH = 4  # chunks read/transferred ahead of the one computed, in parallel


@dataclasses.dataclass(frozen=True)
class Plan:
  """How N rows split into chunks and which stay on the device.

  Chunk ``j`` holds rows ``[j * chunk, min(N, (j + 1) * chunk))``; chunks
  ``0 .. n_resident - 1`` (full ones) live on the device for the whole run,
  and so does the short tail chunk when ``tail_resident``; the others are
  streamed every pass. Frozen and hashable: the compiled io_callback pass
  takes it as a static argument.
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

  def streamed_rows(self) -> int:
    return sum(self.rows(j)[1] - self.rows(j)[0] for j in self.streamed())

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


def free_device_bytes(device: Any) -> int | None:
  """Free memory of ``device`` from ``memory_stats()``; ``None`` where the
  backend reports none (CPU)."""
  try:
    stats = device.memory_stats()
  except Exception:  # backends without memory stats raise rather than return None
    stats = None
  if stats and "bytes_limit" in stats:
    return int(stats["bytes_limit"]) - int(stats.get("bytes_in_use", 0))
  return None


def default_budget(device: Any) -> int:
  """Bytes of data to keep resident by default: half the free device memory
  (``memory_stats``), or 1 GiB where the backend reports none."""
  free = free_device_bytes(device)
  if free is None:
    return FALLBACK_BUDGET_BYTES
  return max(0, int(BUDGET_FRACTION * free))


def default_chunk_bytes(device: Any) -> int:
  """Bytes per streamed chunk when ``chunk_size`` is not given."""
  free = free_device_bytes(device)
  if free is None:
    return DEFAULT_CHUNK_BYTES
  return int(min(MAX_CHUNK_BYTES, max(MIN_CHUNK_BYTES, free * CHUNK_FREE_FRACTION)))


def plan_chunks(n: int, d: int, row_bytes: int, chunk_size: int | None,
                budget_bytes: int, chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> Plan:
  """Chunk size and resident chunks for ``n`` rows of ``row_bytes`` each.

  ``chunk_bytes`` sizes the chunks when ``chunk_size`` (rows) is ``None``.
  ``budget_bytes`` bounds the resident data only (the streamed chunks in
  flight, about ``2 * PREFETCH_DEPTH`` chunks, come on top): ``0`` streams
  everything, ``>= n * row_bytes`` keeps everything resident.
  """
  if chunk_size is None:
    chunk_size = max(1, chunk_bytes // row_bytes)
    if chunk_size >= 4096:
      chunk_size -= chunk_size % 1024  # kernel-friendly block multiple
  chunk = min(n, validation.check_positive_int(chunk_size, "chunk_size"))
  if budget_bytes >= n * row_bytes:
    return Plan(n, d, chunk, n // chunk, True)
  n_res = min(n // chunk, budget_bytes // (chunk * row_bytes))
  return Plan(n, d, chunk, int(n_res), False)


def plan_for(shape: tuple[int, int], itemsize: int, weighted: bool, chunk_size: int | None,
             budget_bytes: int | None, device: Any) -> Plan:
  """The :class:`Plan` of ``[N, D]`` host rows of ``itemsize`` bytes per value
  (plus a float32 weight when ``weighted``) on ``device``; ``None`` sizes
  come from the device's free memory (:func:`default_chunk_bytes`,
  :func:`default_budget`)."""
  n, d = shape
  budget = default_budget(device) if budget_bytes is None else int(budget_bytes)
  row_bytes = d * itemsize + (4 if weighted else 0)
  return plan_chunks(n, d, row_bytes, chunk_size, budget, default_chunk_bytes(device))


def available_host_bytes() -> int:
  """Host memory not in use now (0 where the OS does not say)."""
  try:
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
  except (ValueError, OSError, AttributeError):
    return 0


def choose_method(method: str, plan: Plan | None = None, row_bytes: int = 4,
                  device: Any = None, passes: int = 1, rates: probe.Rates | None = None
                  ) -> probe.Choice:
  """The transfer method of a run of at most ``passes`` passes, with why.

  ``"auto"`` on a GPU with pinned host memory and streamed rows: the method
  of least estimated transfer time (:func:`probe.choose`) for the plan's
  streamed bytes (``row_bytes`` per row, weights included) over ``passes``
  passes, from ``rates`` (default: measured once per process,
  :func:`probe.measured`); ``pinned_cache`` only when the streamed part
  fits in ``PINNED_CACHE_SHARE`` of the available host memory. Elsewhere
  (CPU, nothing streamed, no pinned memory) ``device_put``, with nothing
  measured. Other names are returned as given (after the check against
  :data:`METHODS`).
  """
  method = validation.check_choice(method, "method", METHODS)
  if method != "auto":
    return probe.Choice(method, "as given")
  if plan is None or device is None:
    return probe.Choice("device_put", "no plan or device")
  streamed = plan.streamed_rows() * row_bytes
  if streamed == 0:
    return probe.Choice("device_put", "nothing streamed: every chunk is resident")
  if rates is None:
    if getattr(device, "platform", None) != "gpu":
      return probe.Choice("device_put", f"{getattr(device, 'platform', '?')}: host memory "
                          "is device memory, nothing to measure")
    if not pinned_available(device):
      return probe.Choice("device_put", "no pinned host memory")
    rates = probe.measured(device)
  fits = streamed <= PINNED_CACHE_SHARE * available_host_bytes()
  return probe.choose(rates, streamed, max(1, int(passes)), fits)


def resolve_method(method: str, plan: Plan | None = None, row_bytes: int = 4,
                   device: Any = None, passes: int = 1,
                   rates: probe.Rates | None = None) -> str:
  """:func:`choose_method`'s method name only."""
  return choose_method(method, plan, row_bytes, device, passes, rates).method
