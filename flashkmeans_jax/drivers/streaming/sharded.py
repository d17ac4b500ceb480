"""Streaming over the devices of one host: each device streams its own rows.

The rows split into one contiguous range per device; every device has its
own :class:`~flashkmeans_jax.drivers.streaming.streamer.Streamer` (resident
chunks, prefetch threads, pinned copies) over its range and runs its part of
every pass on its own host thread, so all devices compute and all host links
carry data at the same time. At the end of a pass the per-device totals are
merged as the sharded in-memory driver merges its shards: inside one
``shard_map`` with :func:`flashkmeans_jax.lloyd.combine.across` (a ``psum``
of the O(K * D) cluster statistics, all-gathers of the moments and the
farthest candidates). The merged totals live on the first device, where the
driver finalises the centroids; they are copied to every device for the next
pass.

Only the summation order differs from one device (per device, then across
devices, instead of chunk after chunk), so centroids agree to float32
rounding and labels are the same away from exact ties.
"""

from __future__ import annotations

import concurrent.futures
import functools
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from flashkmeans_jax.drivers.streaming import passes
from flashkmeans_jax.drivers.streaming.host_io import HostSource
from flashkmeans_jax.drivers.streaming.plan import Plan
from flashkmeans_jax.drivers.streaming.progress import Progress
from flashkmeans_jax.drivers.streaming.streamer import Emit, Streamer
from flashkmeans_jax.lloyd import stats
from flashkmeans_jax.lloyd.combine import across

__all__ = ["ShardedStreamer", "row_ranges", "merge_totals"]

AXIS = "stream"


def row_ranges(n: int, p: int) -> list[tuple[int, int]]:
  """``p`` contiguous ranges covering ``[0, n)``, sizes differing by at most
  one (the first ones larger)."""
  base, extra = divmod(n, p)
  out, start = [], 0
  for i in range(p):
    stop = start + base + (1 if i < extra else 0)
    out.append((start, stop))
    start = stop
  return out


def _combine_tree(totals, combine):
  if isinstance(totals, passes.LloydTotals):
    far = totals.farthest
    mom = totals.moments
    return passes.LloydTotals(
        stats.combine_stats(totals.clusters, combine),
        None if far is None else stats.combine_farthest(far, combine),
        None if mom is None else stats.combine_moments(mom, combine))
  return combine.sum(totals)


@functools.partial(jax.jit, static_argnames=("mesh",))
def _merge(stacked, *, mesh: Mesh):
  combine = across((AXIS,), mesh.devices.size)

  def per_device(tree):
    return _combine_tree(jax.tree.map(lambda a: a[0], tree), combine)

  return jax.shard_map(per_device, mesh=mesh, in_specs=(P(AXIS),), out_specs=P(),
                       check_vma=False)(stacked)


def merge_totals(parts: list, devices: Sequence[Any]):
  """The totals of every device's rows (``parts[i]`` on ``devices[i]``, in
  row order) merged into one, on ``devices[0]``."""
  mesh = Mesh(np.asarray(devices), (AXIS,))
  sharding = NamedSharding(mesh, P(AXIS))

  def stack(*leaves):
    pieces = [jax.device_put(jnp.expand_dims(a, 0), d) for a, d in zip(leaves, devices)]
    return jax.make_array_from_single_device_arrays((len(devices), *leaves[0].shape),
                                                    sharding, pieces)

  merged = _merge(jax.tree.map(stack, *parts), mesh=mesh)
  return jax.tree.map(lambda a: a.addressable_shards[0].data, merged)


class ShardedStreamer:
  """The :class:`Streamer` interface the driver uses, over several devices.

  Args:
    src, wsrc: the whole ``[N, D]`` points and ``float32[N]`` weights (or
      ``None``); each device gets a :meth:`HostSource.view` of its rows.
    plans: one :class:`Plan` per device, over its range's rows
      (:func:`row_ranges`).
    opts, method, progress, keep_pinned: as for :class:`Streamer`.
    devices: the devices, in row order; the merged totals land on the first.
  """

  def __init__(self, src: HostSource, wsrc: HostSource | None, plans: Sequence[Plan],
               opts: passes.StepOptions, method: str, devices: Sequence[Any],
               progress: Progress, keep_pinned: bool = False):
    self.src, self.wsrc, self.opts, self.method = src, wsrc, opts, method
    self.devices = list(devices)
    self.progress = progress
    ranges = row_ranges(src.shape[0], len(self.devices))
    self.parts = [
        Streamer(src.view(a, b), None if wsrc is None else wsrc.view(a, b), pl, opts,
                 method, dev, progress, keep_pinned=keep_pinned)
        for (a, b), pl, dev in zip(ranges, plans, self.devices)]
    self._pool = concurrent.futures.ThreadPoolExecutor(len(self.devices),
                                                       thread_name_prefix="fkm-device")

  @property
  def keeps_labels(self) -> bool:
    return all(p.keeps_labels for p in self.parts)

  def _each(self, fn: Callable[[int, Streamer], Any]) -> list:
    """``fn(i, part)`` for every device at once; an error or an interrupt
    stops every part at its next chunk before it is raised."""
    futs = [self._pool.submit(fn, i, part) for i, part in enumerate(self.parts)]
    try:
      concurrent.futures.wait(futs, return_when=concurrent.futures.FIRST_EXCEPTION)
      return [f.result() for f in futs]
    except BaseException:
      for part in self.parts:
        part.abort.set()
      concurrent.futures.wait(futs)
      for part in self.parts:
        part.abort.clear()
      raise

  def load_resident(self, prefetch_streamed: bool = False) -> None:
    self._each(lambda i, part: part.load_resident(prefetch_streamed))

  def run_pass(self, totals, c: jax.Array, emit: Emit | None = None, *,
               final: bool = False, keep: list | None = None):
    """One pass on every device; the merged totals, on the first device.
    ``emit`` is called from the devices' threads (for disjoint rows)."""
    keeps = [None if keep is None else [] for _ in self.parts]

    def one(i, part):
      c_i = jax.device_put(c, self.devices[i])
      return part.run_pass(totals, c_i, emit, final=final, keep=keeps[i])

    parts = self._each(one)
    if keep is not None:
      for k in keeps:
        keep.extend(k)
    return merge_totals(parts, self.devices)

  def close(self) -> None:
    for part in self.parts:
      part.close()
    self._pool.shutdown(wait=True)

  def __enter__(self) -> "ShardedStreamer":
    return self

  def __exit__(self, *exc) -> None:
    self.close()
