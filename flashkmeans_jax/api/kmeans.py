"""``kmeans`` and ``batched_kmeans``: the public Lloyd calls.

Arguments are validated once (:func:`flashkmeans_jax.core.validation.lloyd_options`);
row-sharded input goes to the sharded driver, everything else to the compiled
in-memory loop (:mod:`flashkmeans_jax.lloyd.loop`).

``kmeans`` is not differentiated (the argmin has no useful gradient); for a
loss on distances use :func:`flashkmeans_jax.assign`, whose distances are
differentiable.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

from flashkmeans_jax.api import sharded as sharded_api
from flashkmeans_jax.core import validation
from flashkmeans_jax.core import values
from flashkmeans_jax.core.types import KMeansResult
from flashkmeans_jax.drivers.sharded import mesh
from flashkmeans_jax.lloyd import loop

__all__ = ["kmeans", "batched_kmeans"]


def kmeans(key: jax.Array, x: jax.Array, k: int, *, init: str | jax.Array = "k-means++",
           max_iter: int = 300, tol: float = 1e-4, metric: str = "sqeuclidean",
           weights: jax.Array | None = None, n_init: int = 1, empty: str = "keep",
           impl: str | None = None, precision: Any = None, check_finite: bool = True,
           verbose: bool = False, config: Any = None, return_order: bool = False,
           n_local_trials: int | None = None, oversampling_factor: float | None = None,
           init_rounds: int | None = None,
           max_points_per_centroid: int | None = None,
           final_assign: bool = True) -> KMeansResult:
  """Exact k-means (Lloyd's algorithm) in one compiled loop.

  Args:
    key: a ``jax.random`` key (seeding and ``n_init`` restarts).
    x: ``[N, D]`` points, float16, bfloat16 or float32. Never upcast as a
      whole: distances and sums accumulate in float32 tile by tile.
    k: number of clusters, ``1 <= k <= N`` (a Python int: it fixes shapes).
    init: ``"k-means++"`` (greedy, as scikit-learn), ``"random"`` (k distinct
      points), ``"k-means||"`` (scalable k-means++, Bahmani et al. 2012: a few
      rounds of independent D^2 draws through the assignment kernel, then
      weighted greedy k-means++ on the ~``rounds * oversampling_factor * k``
      candidates, batched into 32 rounds of k/32 seeds at large k; for large
      k, where k-means++'s k sequential passes over x dominate) or an array ``[k, D]`` of starting centroids (then ``n_init``
      is 1).
    max_iter: most Lloyd iterations.
    tol: stop when ``sum_k ||c_new - c_old||^2 <= tol * mean(var(x, axis=0))``
      (scikit-learn's rule). ``tol=0`` stops only when an iteration changes
      no centroid (a fixed point) or at ``max_iter``.
    metric: ``"sqeuclidean"``, ``"cosine"`` (spherical k-means: unit-norm
      centroids) or ``"dot"`` (see :func:`assign`).
    weights: optional ``float[N]`` sample weights >= 0. Zero-weight points are
      assigned but never move a centroid or get picked as a seed, which is how
      padded (ragged) data is masked.
    n_init: independent runs from different seeds, run as one batch
      (``vmap``); the lowest inertia wins.
    empty: empty-cluster policy, ``"keep"`` or ``"farthest"`` (see
      :func:`update`).
    impl: ``None``/``"auto"``, ``"xla"``, ``"pallas"``, ``"pallas_interpret"``.
      ``None`` runs the Pallas kernels on CUDA GPUs, except for tiny problems
      (``N*K < 2^22``, and below ``2^25`` pairs over all ``n_init`` restarts)
      where XLA is as fast; XLA elsewhere. Under ``jax.vmap`` the choice sees
      one member, so pass ``"pallas"`` for large batches of small problems
      (``batched_kmeans`` counts its members itself).
    precision: float32 matmul precision (see :func:`assign`).
    check_finite: on an eager call, raise ``ValueError`` if x holds NaN/Inf.
      Inside ``jit``/``vmap`` it cannot raise: non-finite points are then left
      out of every update and show up as a NaN inertia. An eager ``init``
      array is checked for NaN/Inf either way.
    verbose: print inertia and centroid shift every iteration (works inside
      ``jit`` through ``jax.debug.callback``).
    config: optional kernel configuration (see :func:`assign`).
    return_order: also return the inverse map of the final labels:
      ``order int32[N]`` (stable permutation grouping the points by cluster,
      ascending index inside each), ``offsets int32[k + 1]`` and ``sizes
      int32[k]``, from one stable sort of the labels (no pass over x). Every
      point is placed by its label, zero-weight points included. See
      :func:`flashkmeans_jax.cluster_order` for labels from ``assign``.
    n_local_trials: candidates per greedy k-means++ step (also k-means||'
      final step); default ``2 + floor(log k)`` as scikit-learn; 1 is the
      classic k-means++.
    oversampling_factor: k-means|| draws ``oversampling_factor * k`` points
      per round in expectation (default 0.25).
    init_rounds: k-means|| rounds (default 8).
    max_points_per_centroid: when ``N > k * max_points_per_centroid``, seed
      and iterate on a uniform sample (without replacement, usable points
      only) of ``k * max_points_per_centroid`` points, then label all points
      (FAISS's rule; default ``None``: off). ``inertia`` and ``labels`` are
      then of all points, ``inertia_history`` of the sample.
    final_assign: ``True`` (default): after the loop every point is assigned
      once more, so ``labels`` and ``inertia`` belong to the returned
      centroids (skipped, with the same result, when the last iteration
      changed no centroid). ``False``: they are the last iteration's
      assignment, of the centroids *before* its update (what the official
      flash-kmeans returns), which saves that pass: a third of a warm-started
      2-iteration call. They then belong to the returned centroids only at a
      fixed point, and ``inertia`` equals the last entry of
      ``inertia_history``. With a ``max_points_per_centroid`` sample the
      final pass labels all points either way.

  Weights are divided by the power of two at or above the largest one before
  use (exact), so weights as large as 1e30 or as small as 1e-30 cluster as
  their normalised values do; inertias are scaled back.

  Returns:
    :class:`KMeansResult` with ``centroids [k, D]`` (x's dtype), ``labels
    int32[N]``, ``inertia``, ``n_iter``, ``converged``,
    ``inertia_history float32[max_iter]`` and (``return_order``) ``order``,
    ``offsets``, ``sizes`` (else ``None``).

  A concrete ``jax.Array`` split over devices on axis 0 runs data-parallel
  (:func:`flashkmeans_jax.sharded_kmeans`).
  """
  validation.check_key(key)
  seed = validation.seeding_options(
      n_local_trials=n_local_trials, oversampling_factor=oversampling_factor,
      init_rounds=init_rounds, max_points_per_centroid=max_points_per_centroid)
  return_order = validation.check_bool(return_order, "return_order")
  final_assign = validation.check_bool(final_assign, "final_assign")
  if mesh.is_row_sharded(x):
    _sharded_supports(seed, return_order, init, final_assign)
    return sharded_api.sharded_kmeans(
        key, x, k, init=init, max_iter=max_iter, tol=tol, metric=metric, weights=weights,
        n_init=n_init, empty=empty, impl=impl, precision=precision,
        check_finite=check_finite, verbose=verbose, config=config)
  validation.check_points(x)
  fold_x, fold_init = _fold_check(x, check_finite, verbose), _fold_init(x, init, verbose)
  opts, init_array = validation.lloyd_options(
      x, k, init=init, max_iter=max_iter, tol=tol, metric=metric, weights=weights,
      n_init=n_init, empty=empty, impl=impl, precision=precision, config=config,
      verbose=verbose, check_finite_values=check_finite and not fold_x,
      check_init_values=not fold_init, final_assign=final_assign)
  flags = True if fold_x else ("init" if fold_init else False)
  out = loop.run_compiled(key, x, weights, init_array, opts, seed, return_order, flags)
  return _checked_result(x, init_array, out, fold_x) if flags else out


# Squared row norms above this (half the limit of values.check_finite, far
# beyond the float32 rounding of the in-graph norm) send an eager call to the
# exact check, which then decides and words the error.
_SUSPECT_NORM = float(np.finfo(np.float32).max) / 8


def _fold_check(x, check_finite, verbose) -> bool:
  """Whether an eager call's finiteness check of ``x`` rides inside the
  compiled run (:func:`loop.data_flags`) instead of a separate pass and host
  sync before it. Only for device arrays: not for tracers (nothing to
  check), host arrays (checked block by block before their transfer, where
  a float64 value beyond float32 gets its own message) nor with ``verbose``
  (bad data must not print iterations before the error)."""
  return (bool(check_finite) and not verbose and isinstance(x, jax.Array)
          and not isinstance(x, jax.core.Tracer))


def _fold_init(x, init, verbose) -> bool:
  """Whether the finiteness check of an explicit ``init`` (always made, even
  with ``check_finite=False``) rides inside the compiled run too: for a
  device array (a warm start is usually the previous call's centroids,
  already on the device) with device data, outside a trace and without
  ``verbose``, as for the data's folded check (with ``check_finite=False``
  the eager check alone was one more dispatch and host sync per call, which
  made the unchecked warm call slower than the checked one)."""
  return (not verbose and isinstance(x, jax.Array) and not isinstance(x, jax.core.Tracer)
          and isinstance(init, jax.Array) and not isinstance(init, jax.core.Tracer))


def _checked_result(x, init_array, out, check_x: bool = True):
  """The result of a folded check: when the flags computed in the run
  (:func:`loop.data_flags`) show a non-finite ``init``, or (``check_x``)
  NaN/Inf or a row norm near the overflow limit in ``x``, the exact eager
  checks run and raise their usual errors (same messages, same rules,
  ``init`` first as in :func:`validation.lloyd_options`); clean inputs cost
  one transfer of three scalars after the run."""
  res, flags = out
  if isinstance(flags, jax.core.Tracer):
    # A concrete x closed over by a traced function: the eager checks can
    # still read it (the flags cannot leave the trace).
    if init_array is not None:
      values.check_finite(init_array, "init")
    if check_x:
      values.check_finite(x)
    return res
  finite, norm, init_ok = (float(v) for v in jax.device_get(flags))
  if init_array is not None and not init_ok:
    values.check_finite(init_array, "init")
  if check_x and not (finite and norm <= _SUSPECT_NORM):
    values.check_finite(x)
  return res


def _sharded_supports(seed, return_order, init, final_assign) -> None:
  """The sharded driver does not take these options yet: refuse rather than
  ignore them."""
  if not final_assign:
    raise ValueError("row-sharded x: final_assign=False is not supported by the sharded "
                     "driver yet; gather x")
  if return_order or seed != type(seed)() or (isinstance(init, str) and init == "k-means||"):
    raise ValueError(
        "row-sharded x: return_order, init='k-means||', n_local_trials, "
        "oversampling_factor, init_rounds and max_points_per_centroid are not "
        "supported by the sharded driver yet; gather x or use cluster_order on the "
        "labels")


def batched_kmeans(key: jax.Array, x: jax.Array, k: int, *,
                   init: str | jax.Array = "k-means++", max_iter: int = 300,
                   tol: float = 1e-4, metric: str = "sqeuclidean",
                   weights: jax.Array | None = None, n_init: int = 1,
                   empty: str = "keep", impl: str | None = None, precision: Any = None,
                   check_finite: bool = True, verbose: bool = False,
                   config: Any = None, return_order: bool = False,
                   n_local_trials: int | None = None,
                   oversampling_factor: float | None = None,
                   init_rounds: int | None = None,
                   max_points_per_centroid: int | None = None,
                   final_assign: bool = True) -> KMeansResult:
  """B independent clusterings of ``x [B, N, D]`` in one compiled call.

  Equivalent to ``jax.vmap(kmeans)`` over the leading axis with keys
  ``jax.random.split(key, B)``: every member converges on its own (a
  converged member stops changing while the others go on) and has its own
  ``n_iter`` and ``converged``. The kernels see the batch as one grid. The
  clusterings are those of separate ``kmeans`` calls with those keys; the
  float32 inertias may differ from them in the last bit (the batched sums
  are reduced in another order).

  Ragged batches: pad every member to the same N and give padded points
  weight 0 in ``weights [B, N]``; they are assigned but never move a centroid
  nor become a seed. ``init`` may be a name, ``[k, D]`` (shared) or
  ``[B, k, D]``.

  The seeding options, ``max_points_per_centroid``, ``return_order`` and
  ``final_assign`` are those of :func:`kmeans`, applied per member.

  Returns a :class:`KMeansResult` whose fields gain a leading ``B`` axis:
  per member ``inertia [B]``, ``n_iter [B]``, ``converged [B]``,
  ``inertia_history [B, max_iter]`` (NaN from the member's own ``n_iter``
  on: a member's history stops where it converged) and, with
  ``return_order``, ``order [B, N]``, ``offsets [B, k + 1]`` and ``sizes
  [B, k]`` (weight-0 padding points included, under their labels).
  """
  validation.check_key(key)
  seed = validation.seeding_options(
      n_local_trials=n_local_trials, oversampling_factor=oversampling_factor,
      init_rounds=init_rounds, max_points_per_centroid=max_points_per_centroid)
  return_order = validation.check_bool(return_order, "return_order")
  validation.check_points(x, ndim=3)
  b = x.shape[0]
  fold_x, fold_init = _fold_check(x, check_finite, verbose), _fold_init(x, init, verbose)
  opts, init_array = validation.lloyd_options(
      x, k, init=init, max_iter=max_iter, tol=tol, metric=metric, weights=weights,
      n_init=n_init, empty=empty, impl=impl, precision=precision, config=config,
      verbose=verbose, batch=(b,), check_finite_values=check_finite and not fold_x,
      check_init_values=not fold_init, final_assign=final_assign)
  flags = True if fold_x else ("init" if fold_init else False)
  out = loop.run_batched(key, x, weights, init_array, opts, seed, return_order, flags)
  return _checked_result(x, init_array, out, fold_x) if flags else out
