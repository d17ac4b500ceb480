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
   back to the host.

Every restart and pass share one :class:`Streamer`: resident chunks load
once, and the prefetcher runs on from one pass into the next.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from flashkmeans_jax.core import validation
from flashkmeans_jax.core import values
from flashkmeans_jax.core.options import LloydOptions
from flashkmeans_jax.core.types import KMeansResult
from flashkmeans_jax.drivers.streaming import host_seeding
from flashkmeans_jax.drivers.streaming import passes
from flashkmeans_jax.drivers.streaming.host_io import HostSource
from flashkmeans_jax.drivers.streaming.plan import Plan
from flashkmeans_jax.drivers.streaming.progress import Progress
from flashkmeans_jax.drivers.streaming.streamer import Streamer
from flashkmeans_jax.lloyd import loop
from flashkmeans_jax.lloyd import stats

__all__ = ["run_kmeans", "run_assign", "label_sink"]


def label_sink(plan: Plan, labels: np.ndarray, dist: np.ndarray | None
               ) -> Callable[[int, np.ndarray, np.ndarray], None]:
  """``emit(j, labels, dist)`` writing chunk ``j``'s labels (and distances,
  when ``dist`` is given) into the host arrays ``labels [N]``/``dist [N]``."""

  def put(j, lab, dst):
    start, stop = plan.rows(j)
    labels[start:stop] = lab
    if dist is not None:
      dist[start:stop] = dst

  return put


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


def _lloyd_passes(st: Streamer, c: jax.Array, opts: LloydOptions, tol_abs: jax.Array | None,
                  progress: Progress, name: str, *, check_finite: bool
                  ) -> tuple[KMeansResult, jax.Array]:
  """Lloyd passes from ``c float32[K, D]`` until convergence or ``max_iter``.

  ``tol_abs`` (``float32[]``) is ``None`` for the first restart, whose first
  pass computes it. Returns the run (``labels=None``; ``inertia`` is that of
  the last pass, before its update) and ``tol_abs``.
  """
  hist = np.full((opts.max_iter,), np.nan, np.float32)
  converged, n_iter = False, 0
  for it in range(opts.max_iter):
    progress.start(f"{name}iter {it}")
    first = tol_abs is None
    totals = st.run_pass(passes.lloyd_totals(st.opts, st.plan.d, moments=first), c)
    if first:
      _check_first_pass(totals, check_finite=check_finite, weighted=st.wsrc is not None)
      tol_abs = stats.tolerance(totals.moments, opts.tol)
    c, shift, done = passes.finalize(totals, c, tol_abs, opts=st.opts)
    hist[it] = float(totals.clusters.inertia)
    n_iter = it + 1
    progress.note(inertia=f"{hist[it]:.6g}", shift=f"{float(shift):.3g}")
    if bool(done):
      converged = True
      break
  run = KMeansResult(centroids=c, labels=None, inertia=jnp.float32(hist[n_iter - 1]),
                     n_iter=jnp.int32(n_iter), converged=jnp.bool_(converged),
                     inertia_history=jnp.asarray(hist))
  return run, tol_abs


def run_kmeans(key: jax.Array, src: HostSource, wsrc: HostSource | None, plan: Plan,
               opts: LloydOptions, init_array: Any, *, method: str, device: Any,
               sample_size: int, check_finite: bool, labels_out: Any = None,
               dist_out: Any = None) -> KMeansResult:
  """Streaming k-means with validated options.

  Args:
    key: ``jax.random`` key; restarts use ``jax.random.split(key, n_init)``
      (``key`` itself when ``opts.n_init == 1``), as in memory.
    src: ``[N, D]`` host points; wsrc: ``float32[N]`` host weights or ``None``.
    plan: chunking and residency; opts: validated (``opts.init == "array"``
      uses ``init_array [K, D]``).
    method: a resolved transfer method; device: where to run.
    sample_size: rows of the k-means++ subsample.
    check_finite: raise after the first pass when rows hold NaN/Inf.
    labels_out, dist_out: host ``int[N]``/``float[N]`` arrays to write the
      final labels/distances into, or ``None``.

  Returns:
    :class:`KMeansResult`: ``labels`` a host ``int32[N]`` array (or
    ``labels_out``), the other fields JAX arrays; centroids in ``src``'s dtype.
  """
  n = plan.n
  keys = [key] if opts.n_init == 1 else list(jax.random.split(key, opts.n_init))
  progress = Progress(opts.verbose, n)
  labels = np.empty((n,), np.int32) if labels_out is None else labels_out
  try:
    with Streamer(src, wsrc, plan, passes.StepOptions.of(opts, n), method, device,
                  progress) as st:
      progress.start("load resident")
      st.load_resident()
      runs, tol_abs = [], None
      for r, sub in enumerate(keys):
        if opts.init == "array":
          c0 = jax.device_put(jnp.asarray(init_array, jnp.float32), device)
        else:
          c0 = host_seeding.initial_centroids(sub, src, wsrc, plan, opts.k, opts.init,
                                              opts.metric, sample_size, device)
        name = f"run {r} " if len(keys) > 1 else ""
        run, tol_abs = _lloyd_passes(st, c0, opts, tol_abs, progress, name,
                                     check_finite=check_finite)
        runs.append(run)
      if len(runs) > 1:
        # The restarts compete on the inertia of their returned centroids, as
        # in memory: one pass each without labels (no device-to-host copies).
        for r, run in enumerate(runs):
          progress.start(f"run {r} inertia")
          inertia = st.run_pass(passes.label_totals(), run.centroids)
          runs[r] = dataclasses.replace(run, inertia=inertia)
      best = loop.best_of_runs(runs)
      progress.start("assign")
      inertia = st.run_pass(passes.label_totals(), best.centroids,
                            label_sink(plan, labels, dist_out), final=True)
  finally:
    progress.close()
  return dataclasses.replace(best, centroids=best.centroids.astype(src.dtype), labels=labels,
                             inertia=jnp.asarray(inertia, jnp.float32))


def run_assign(src: HostSource, plan: Plan, c: jax.Array, opts: passes.StepOptions, *,
               method: str, device: Any, verbose: bool, labels_out: Any = None,
               dist_out: Any = None) -> tuple[np.ndarray, np.ndarray]:
  """One labelling pass over ``src [N, D]`` for centroids ``c [K, D]``.

  Returns host ``labels int32[N]`` and ``dist float32[N]`` (the given output
  arrays when passed).
  """
  n = plan.n
  labels = np.empty((n,), np.int32) if labels_out is None else labels_out
  dist = np.empty((n,), np.float32) if dist_out is None else dist_out
  c = jax.device_put(jnp.asarray(c, jnp.float32), device)
  progress = Progress(verbose, n)
  try:
    with Streamer(src, None, plan, opts, method, device, progress) as st:
      progress.start("assign")
      st.load_resident()
      st.run_pass(passes.label_totals(), c, label_sink(plan, labels, dist), final=True)
  finally:
    progress.close()
  return labels, dist
