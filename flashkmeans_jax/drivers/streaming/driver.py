"""Out-of-core k-means runs: Lloyd passes, restarts and the labelling pass.

The public calls (:mod:`flashkmeans_jax.api.streaming`) validate their
arguments and build the :class:`~flashkmeans_jax.drivers.streaming.plan.Plan`;
the functions here trust both. A run is:

1. seeding (:mod:`~flashkmeans_jax.drivers.streaming.host_seeding`) or the
   given start;
2. Lloyd passes, each one pass over every chunk
   (:meth:`~flashkmeans_jax.drivers.streaming.streamer.Streamer.run_pass`)
   followed by :func:`~flashkmeans_jax.drivers.streaming.passes.finalize`;
   the first pass of the first restart also sums the data's moments (the
   tolerance) and counts the non-finite rows;
3. with ``n_init > 1``, one pass per restart for the inertia of its final
   centroids, and the lowest kept
   (:func:`flashkmeans_jax.lloyd.loop.best_of_runs`);
4. one labelling pass for the returned centroids, which alone copies labels
   back to the host; skipped when the last Lloyd pass already labelled every
   point for them (the centroids did not change: same labels, bit for bit),
   whose labels were kept on the device.

Every restart and pass share one :class:`Streamer` (or, over several
devices, one :class:`~flashkmeans_jax.drivers.streaming.sharded.ShardedStreamer`):
resident chunks load once, and the prefetcher runs on from one pass into
the next. Labels go to private host buffers and into the caller's
``labels_out``/``dist_out`` only once the run has finished, so an interrupted
run leaves those untouched.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from flashkmeans_jax.core import validation
from flashkmeans_jax.core import values
from flashkmeans_jax.core.options import LloydOptions
from flashkmeans_jax.core.types import KMeansResult, SeedingOptions
from flashkmeans_jax.drivers.streaming import host_seeding
from flashkmeans_jax.drivers.streaming import passes
from flashkmeans_jax.drivers.streaming.host_io import HostSource
from flashkmeans_jax.drivers.streaming.plan import Plan, free_device_bytes
from flashkmeans_jax.drivers.streaming.progress import Progress
from flashkmeans_jax.drivers.streaming.sharded import ShardedStreamer
from flashkmeans_jax.drivers.streaming.streamer import Streamer
from flashkmeans_jax.lloyd import loop
from flashkmeans_jax.lloyd import stats

__all__ = ["run_kmeans", "run_assign", "label_sink", "Setup", "LABEL_KEEP_FRACTION"]

# A Lloyd pass keeps its labels and distances on the device (8 bytes a row)
# when they take at most this share of the free device memory (of each
# device), so that a run whose centroids stop changing needs no labelling pass.
LABEL_KEEP_FRACTION = 1 / 16
LABEL_KEEP_FALLBACK_BYTES = 2**30  # where the backend reports no memory stats


class Setup(NamedTuple):
  """How a run moves its data (built and validated by the public call).

  Attributes:
    devices: the devices, in row order (one: the single-device streamer).
    plans: one :class:`Plan` per device over its rows (one: over all rows).
    method: the resolved transfer method.
    keep_pinned: keep the pinned cache after the run (``keep_pinned=True``).
    info: a line for ``verbose`` (the method and why), or ``None``.
  """
  devices: Sequence[Any]
  plans: Sequence[Plan]
  method: str
  keep_pinned: bool = False
  info: str | None = None


def _streamer(src, wsrc, setup: Setup, opts: passes.StepOptions, progress: Progress):
  if len(setup.devices) == 1:
    return Streamer(src, wsrc, setup.plans[0], opts, setup.method, setup.devices[0], progress,
                    keep_pinned=setup.keep_pinned)
  return ShardedStreamer(src, wsrc, setup.plans, opts, setup.method, setup.devices, progress,
                         keep_pinned=setup.keep_pinned)


def _keeps_labels(st, setup: Setup) -> bool:
  """Whether the Lloyd passes keep their labels on the device (see
  :data:`LABEL_KEEP_FRACTION`)."""
  if not st.keeps_labels:
    return False
  for dev, pl in zip(setup.devices, setup.plans):
    free = free_device_bytes(dev)
    limit = LABEL_KEEP_FALLBACK_BYTES if free is None else LABEL_KEEP_FRACTION * free
    if 8 * pl.n > limit:
      return False
  return True


def label_sink(labels: np.ndarray, dist: np.ndarray | None
               ) -> Callable[[int, int, np.ndarray, np.ndarray], None]:
  """``emit(start, stop, labels, dist)`` writing rows ``[start, stop)``'s
  labels (and distances, when ``dist`` is given) into the host arrays
  ``labels [N]``/``dist [N]``."""

  def put(start, stop, lab, dst):
    labels[start:stop] = lab
    if dist is not None:
      dist[start:stop] = dst

  return put


def _write_kept(kept: list, emit) -> None:
  """Copies labels kept on the device by a pass to the host through ``emit``."""
  for _, _, lab, dst in kept:
    lab.copy_to_host_async()
    dst.copy_to_host_async()
  for start, stop, lab, dst in kept:
    emit(start, stop, np.asarray(lab), np.asarray(dst))


def _check_first_pass(totals: passes.LloydTotals, *, check_finite: bool,
                      weighted: bool) -> None:
  """Errors found while summing the data's moments in the first pass."""
  mom = totals.moments
  bad = int(mom.nonfinite)
  if check_finite and bad:
    raise values.nonfinite_error("host_x")
  if weighted:
    # Weights of readers and memmaps are checked chunk by chunk (finite,
    # >= 0), so no usable row (finite, positive weight) means every weight is
    # 0, which kmeans rejects up front. The count stands in for the weights'
    # sum, so the error is check_weights' own.
    validation.check_weights(np.asarray([mom.n], np.float32), 1, require_positive=True)


def _lloyd_passes(st, c: jax.Array, opts: LloydOptions, tol_abs: jax.Array | None,
                  progress: Progress, name: str, *, check_finite: bool, keep: bool
                  ) -> tuple[KMeansResult, jax.Array, list | None]:
  """Lloyd passes from ``c float32[K, D]`` until convergence or ``max_iter``.

  ``tol_abs`` (``float32[]``) is ``None`` for the first restart, whose first
  pass computes it. Returns the run (``labels=None``; ``inertia`` is that of
  the last pass, before its update), ``tol_abs``, and, when ``keep`` and the
  last pass left the centroids unchanged, that pass's labels on the device
  (``(start, stop, labels, dist)`` per chunk: the labels of the returned
  centroids), else ``None``.
  """
  hist = np.full((opts.max_iter,), np.nan, np.float32)
  converged, n_iter, final_labels = False, 0, None
  for it in range(opts.max_iter):
    progress.start(f"{name}iter {it}")
    first = tol_abs is None
    kept = [] if keep else None
    totals = st.run_pass(passes.lloyd_totals(st.opts, st.src.shape[1], moments=first), c, keep=kept)
    if first:
      _check_first_pass(totals, check_finite=check_finite, weighted=st.wsrc is not None)
      tol_abs = stats.tolerance(totals.moments, opts.tol)
    new_c, shift, done = passes.finalize(totals, c, tol_abs, opts=st.opts)
    hist[it] = float(totals.clusters.inertia)
    n_iter = it + 1
    progress.note(inertia=f"{hist[it]:.6g}", shift=f"{float(shift):.3g}")
    if bool(done):
      converged = True
      if kept is not None and bool(jnp.array_equal(new_c, c)):
        final_labels = kept
      c = new_c
      break
    c = new_c
  run = KMeansResult(centroids=c, labels=None, inertia=jnp.float32(hist[n_iter - 1]),
                     n_iter=jnp.int32(n_iter), converged=jnp.bool_(converged),
                     inertia_history=jnp.asarray(hist))
  return run, tol_abs, final_labels


def _publish(labels: np.ndarray, dist: np.ndarray | None, labels_out: Any, dist_out: Any):
  """Copies finished labels/distances into the caller's arrays (one NumPy
  assignment each: an interrupt cannot land half-way through one)."""
  if labels_out is not None:
    labels_out[...] = labels
  if dist_out is not None:
    dist_out[...] = dist
  return (labels if labels_out is None else labels_out,
          dist if dist_out is None else dist_out)


def run_kmeans(key: jax.Array, src: HostSource, wsrc: HostSource | None, setup: Setup,
               opts: LloydOptions, init_array: Any, *, sample_size: int, check_finite: bool,
               labels_out: Any = None, dist_out: Any = None,
               seed: SeedingOptions = SeedingOptions()) -> KMeansResult:
  """Streaming k-means with validated options.

  Args:
    key: ``jax.random`` key; restarts use ``jax.random.split(key, n_init)``
      (``key`` itself when ``opts.n_init == 1``), as in memory.
    src: ``[N, D]`` host points; wsrc: ``float32[N]`` host weights or ``None``.
    setup: devices, per-device plans and the transfer method.
    opts: validated (``opts.init == "array"`` uses ``init_array [K, D]``).
    sample_size: rows of the k-means++ / k-means|| subsample.
    seed: the seeding options, applied on the subsample.
    check_finite: raise after the first pass when rows hold NaN/Inf.
    labels_out, dist_out: host ``int[N]``/``float[N]`` arrays to write the
      final labels/distances into (once the run has finished), or ``None``.

  Returns:
    :class:`KMeansResult`: ``labels`` a host ``int32[N]`` array (or
    ``labels_out``), the other fields JAX arrays; centroids in ``src``'s dtype.
  """
  n = src.shape[0]
  device = setup.devices[0]
  whole = plan_for_rows(setup, n)
  keys = [key] if opts.n_init == 1 else list(jax.random.split(key, opts.n_init))
  passes_max = opts.n_init * opts.max_iter + (opts.n_init if opts.n_init > 1 else 0) + 1
  progress = Progress(opts.verbose, n, passes_max)
  if setup.info:
    progress.info(setup.info)
  labels = np.empty((n,), np.int32)
  dist = None if dist_out is None else np.empty((n,), np.float32)
  try:
    with _streamer(src, wsrc, setup, passes.StepOptions.of(opts, n), progress) as st:
      progress.start("load resident", counts=False)
      # Lloyd runs take several passes (when the last is folded, at most the
      # few chunks the prefetcher had queued are read in vain).
      st.load_resident(prefetch_streamed=True)
      keep = _keeps_labels(st, setup)
      runs, kept, tol_abs = [], [], None
      for r, sub in enumerate(keys):
        if opts.init == "array":
          c0 = jax.device_put(jnp.asarray(init_array, jnp.float32), device)
        else:
          c0 = host_seeding.initial_centroids(sub, src, wsrc, whole, opts.k, opts.init,
                                              opts.metric, sample_size, device, seed=seed,
                                              impl=opts.impl)
        name = f"run {r} " if len(keys) > 1 else ""
        run, tol_abs, final = _lloyd_passes(st, c0, opts, tol_abs, progress, name,
                                            check_finite=check_finite, keep=keep)
        runs.append(run)
        kept.append(final)
        if len(keys) > 1 and final is None:
          # The restarts compete on the inertia of their returned centroids,
          # as in memory: one pass each without labels (no device-to-host
          # copies), unless the last pass already was one.
          progress.start(f"run {r} inertia")
          runs[r] = dataclasses.replace(run, inertia=st.run_pass(passes.label_totals(),
                                                                 run.centroids))
        if len(keys) > 1:
          # Only the best run so far may need its kept labels.
          lead = loop.best_of_runs(runs)
          best_so_far = next(i for i, x in enumerate(runs) if x is lead)
          kept = [k if i == best_so_far else None for i, k in enumerate(kept)]
      best = loop.best_of_runs(runs)
      final = next((k for i, k in enumerate(kept) if runs[i] is best), None)
      sink = label_sink(labels, dist)
      if final is not None:
        # The last pass labelled every point for these very centroids.
        _write_kept(final, sink)
        inertia = best.inertia
      else:
        progress.start("assign")
        inertia = st.run_pass(passes.label_totals(), best.centroids, sink, final=True)
  finally:
    progress.close()
  labels, _ = _publish(labels, dist, labels_out, dist_out)
  return dataclasses.replace(best, centroids=best.centroids.astype(src.dtype), labels=labels,
                             inertia=jnp.asarray(inertia, jnp.float32))


def plan_for_rows(setup: Setup, n: int) -> Plan:
  """A plan over all ``n`` rows with the first device's chunking (what
  seeding reads the weights by)."""
  p = setup.plans[0]
  if p.n == n:
    return p
  return Plan(n, p.d, p.chunk, 0, False)


def run_assign(src: HostSource, setup: Setup, c: jax.Array, opts: passes.StepOptions, *,
               verbose: bool, labels_out: Any = None,
               dist_out: Any = None, check_finite: bool = False
               ) -> tuple[np.ndarray, np.ndarray]:
  """One labelling pass over ``src [N, D]`` for centroids ``c [K, D]``.

  Returns host ``labels int32[N]`` and ``dist float32[N]`` (the given output
  arrays when passed, written once the pass has finished). With
  ``check_finite``, a row whose distance is not finite (NaN/Inf in the row:
  the centroids were checked finite) raises before anything is written.
  """
  n = src.shape[0]
  labels = np.empty((n,), np.int32)
  dist = np.empty((n,), np.float32)
  c = jax.device_put(jnp.asarray(c, jnp.float32), setup.devices[0])
  progress = Progress(verbose, n, 1)
  if setup.info:
    progress.info(setup.info)
  try:
    with _streamer(src, None, setup, opts, progress) as st:
      progress.start("load resident", counts=False)
      st.load_resident()
      progress.start("assign")
      st.run_pass(passes.label_totals(), c, label_sink(labels, dist), final=True)
  finally:
    progress.close()
  if check_finite and not np.isfinite(dist).all():
    raise values.nonfinite_error("host_x")
  return _publish(labels, dist, labels_out, dist_out)
