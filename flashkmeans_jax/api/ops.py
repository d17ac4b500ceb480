"""The checked public ops: ``assign``, ``cluster_sums``, ``update``,
``finalize_centroids`` and the seeding functions.

Each validates its arguments once (:mod:`flashkmeans_jax.core.validation`),
sends row-sharded inputs to the sharded driver, and otherwise runs the op or
the statistics core. Eager calls of the compound functions go through one
``jax.jit`` each, so repeated calls with the same shapes compile once.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from flashkmeans_jax.api import sharded as sharded_api
from flashkmeans_jax.core import call_checks
from flashkmeans_jax.core import metric as metric_mod
from flashkmeans_jax.core import precision as precision_mod
from flashkmeans_jax.core import validation
from flashkmeans_jax.drivers.sharded import mesh
from flashkmeans_jax.lloyd import centroids as centroids_mod
from flashkmeans_jax.lloyd import seeding
from flashkmeans_jax.lloyd import stats
from flashkmeans_jax.ops.assign import api as assign_op
from flashkmeans_jax.ops.assign import bound as bound_mod
from flashkmeans_jax.ops.assign import certified as certified_mod
from flashkmeans_jax.ops.cluster_sums import api as cluster_sums_op

__all__ = ["assign", "certification", "Certification", "cluster_sums", "update", "finalize_centroids", "init_random",
           "init_kmeans_plusplus"]


def assign(x: jax.Array, centroids: jax.Array, *, metric: str = "sqeuclidean",
           impl: str | None = None, precision: Any = None, config: Any = None,
           check_finite: bool = True,
           return_runner_up: bool = False) -> tuple[jax.Array, ...]:
  """Nearest centroid of every point, and its distance.

  Args:
    x: ``[N, D]`` points, float16, bfloat16 or float32 (float64 with
      ``impl="xla"`` and x64 enabled).
    centroids: ``[K, D]``, any float dtype; cast to ``x.dtype`` for the dot.
    metric: ``"sqeuclidean"`` (squared L2), ``"cosine"`` (``1 - cos``; a zero
      vector is at distance 1 from everything) or ``"dot"`` (the negative inner
      product ``-x . c``, so the nearest centroid has the largest inner
      product).
    impl: ``None``/``"auto"`` (Pallas on CUDA GPUs, XLA elsewhere), ``"xla"``,
      ``"pallas"`` or ``"pallas_interpret"`` (the Pallas kernel run on any
      backend in interpret mode; slow, for tests).
    precision: matmul precision of float32 inputs, as JAX takes it: ``None``
      follows ``jax.default_matmul_precision`` (on NVIDIA GPUs that is TF32, so
      near-ties may resolve differently from float64); ``"highest"`` (or
      ``lax.DotAlgorithmPreset.TF32_TF32_F32_X3``, which the Pallas kernel uses
      for it) is float32-accurate and gives the float64 reference's labels up to
      float32 ties. ``"F16_F16_F32"`` runs float32 points on the float16
      tensor cores (twice the TF32 rate) with a power-of-two scale per point
      and one for the centroids, so operands keep TF32's 10 mantissa bits
      without float16's range limits (:mod:`flashkmeans_jax.core.half_dot`);
      ``"BF16_BF16_F32"`` casts to bfloat16 (8 bits). Ignored for 16-bit
      inputs, whose products are exact in the float32 accumulator.
      ``"certified"`` (over the default dot) or ``"certified:<any of the
      above>"`` (e.g. ``"certified:F16_F16_F32"``), or a
      ``flashkmeans_jax.core.precision.Certified``: float32 labels equal to the
      float64 argmin up to ties at float32 resolution, at the base's speed
      plus an exact re-check of the points its error bound cannot certify
      (:mod:`flashkmeans_jax.ops.assign.certified`); distances keep the
      base's accuracy.
    config: optional :class:`flashkmeans_jax.AssignConfig` for
      the Pallas kernel (tile sizes, warps, stages); ``None`` picks one from
      the device and shapes.
    check_finite: on an eager call, raise ``ValueError`` if x holds NaN/Inf.
      Non-finite centroids always raise on an eager call. Inside ``jit`` a
      non-finite row of x gets label 0 and distance NaN.

    return_runner_up: also return every point's distance to its second
      nearest centroid (``+inf`` with a single usable centroid, ``dist``
      itself on a tie): how close the point is to a cluster boundary.

  Returns:
    ``labels int32[N]`` (ties go to the lowest centroid index) and
    ``dist float32[N]`` (see ``metric``), and with ``return_runner_up`` the
    runner-up distance ``float32[N]``. ``dist`` is differentiable with
    respect to ``x`` and ``centroids`` (the gradient of each point's distance
    to its chosen centroid); ``labels`` and the runner-up distance carry no
    gradient (their cotangents are ignored).

  Works under ``jit`` and ``vmap`` (the Pallas kernel's batching rule adds a
  grid axis, so a vmapped call is one launch).

  A concrete ``jax.Array`` split over devices on axis 0 is assigned shard by
  shard (:func:`flashkmeans_jax.sharded_assign`).
  """
  if mesh.is_row_sharded(x) and not return_runner_up:
    return sharded_api.sharded_assign(x, centroids, metric=metric, impl=impl,
                                      precision=precision, config=config,
                                      check_finite=check_finite)
  validation.check_points(x)
  validation.check_centroids(centroids, x.shape[1])
  metric = validation.check_metric(metric)
  impl = validation.resolve_impl(impl, x.shape[0], centroids.shape[0])
  precision = validation.resolve_precision(precision)
  validation.check_finite(centroids, "centroids")
  if check_finite:
    validation.check_finite(x)
  if return_runner_up:
    return assign_op.assign_runner_up(x, centroids, metric, impl, precision, config)
  return assign_op.assign(x, centroids, metric, impl, precision, config)


class Certification(NamedTuple):
  """Which labels a fast float32 pass proves exact (:func:`certification`).

  Attributes:
    labels: ``int32[N]`` of the fast pass.
    margin: ``float32[N]`` runner-up score minus best score
      (:mod:`flashkmeans_jax.core.metric`; ``+inf`` with one centroid).
    bound: ``float32[N]`` the rigorous bound ``E`` on every score's error
      (:mod:`flashkmeans_jax.ops.assign.bound`).
    certified: ``bool[N]``, ``margin > 2 E``: the label is the exact argmin.
    tie: ``float32[N]`` the exact pass's tie width (score units).
  """

  labels: jax.Array
  margin: jax.Array
  bound: jax.Array
  certified: jax.Array
  tie: jax.Array


@functools.partial(jax.jit, static_argnames=("metric", "impl", "precision"))
def _certification_jit(x, centroids, *, metric, impl, precision):
  base = precision_mod.dot_precision(precision)
  fast = certified_mod.top2(x, centroids, metric, impl, base)
  c, bias = metric_mod.prepare_centroids(centroids, metric, x.dtype)
  stats = bound_mod.centroid_stats(c, bias, metric)
  e = bound_mod.score_error_bound(fast.xsq, stats, x.shape[1], metric,
                                  bound_mod.dot_model(base, impl))
  return Certification(fast.labels, fast.second - fast.best, e,
                       bound_mod.certified_mask(fast.best, fast.second, e),
                       certified_mod.tie_bound(x, centroids, fast.xsq, metric, impl))


def certification(x: jax.Array, centroids: jax.Array, *, metric: str = "sqeuclidean",
                  impl: str | None = None, precision: Any = None) -> Certification:
  """The certificate of a fast float32 assignment, for diagnostics.

  Runs the assignment of float32 ``x [N, D]`` at ``precision`` (a
  ``"certified:..."`` precision is read through its base) and returns a
  :class:`Certification`: ``certified.mean()`` is the fraction of points the
  certified mode does not recompute.
  """
  validation.check_points(x)
  validation.check_centroids(centroids, x.shape[1])
  metric = validation.check_metric(metric)
  impl = validation.resolve_impl(impl, x.shape[0], centroids.shape[0])
  precision = validation.resolve_precision(precision)
  validation.check_finite(centroids, "centroids")
  return _certification_jit(x.astype(jnp.float32), centroids, metric=metric, impl=impl,
                            precision=precision)


def cluster_sums(x: jax.Array, labels: jax.Array, k: int, *,
                 weights: jax.Array | None = None, impl: str | None = None,
                 config: Any = None) -> tuple[jax.Array, jax.Array]:
  """Per-cluster sums of (weighted) points and the weight sums.

  Args:
    x: ``[N, D]`` points, any float dtype.
    labels: ``int32[N]`` in ``[0, k)``.
    k: number of clusters (static).
    weights: optional ``float[N]`` point weights (>= 0); ``None`` means ones.
    impl: as in :func:`update`.
    config: optional :class:`flashkmeans_jax.UpdateConfig` for the Pallas
      kernel; ``None`` picks one from the device and shapes.

  Returns:
    ``sums float32[K, D]`` and ``counts float32[K]``.
  """
  validation.check_points(x)
  k = validation.check_k(k)
  validation.check_labels(labels, x.shape[0], k=k)
  validation.check_weights(weights, x.shape[0])
  impl = validation.resolve_impl(impl, x.shape[0], k)
  return cluster_sums_op.cluster_sums(x, labels.astype(jnp.int32), k, weights, impl, config)



def _candidates(x, labels, dist, weights, k):
  if x is None:
    return None
  return lambda: stats.farthest(x, labels, dist, weights, min(k, x.shape[0]))


@functools.partial(jax.jit, static_argnames=("metric", "empty"))
def _finalize_jit(sums, counts, previous, x, labels, dist, weights, *, metric, empty):
  k = sums.shape[0]
  total = stats.ClusterStats(sums.astype(jnp.float32), counts.astype(jnp.float32),
                             jnp.zeros((), jnp.float32))
  return centroids_mod.finalize(total, previous, metric=metric, empty=empty,
                                candidates=_candidates(x, labels, dist, weights, k))


@functools.partial(jax.jit, static_argnames=("k", "metric", "empty", "impl"))
def _update_jit(x, labels, previous, weights, dist, *, k, metric, empty, impl):
  sums, counts = cluster_sums_op.cluster_sums(x, labels, k, weights, impl)
  total = stats.ClusterStats(sums, counts, jnp.zeros((), jnp.float32))
  c, counts = centroids_mod.finalize(total, previous, metric=metric, empty=empty,
                                     candidates=_candidates(x, labels, dist, weights, k))
  return c.astype(x.dtype), counts


def finalize_centroids(sums: jax.Array, counts: jax.Array,
                       previous: jax.Array | None, *, metric: str = "sqeuclidean",
                       empty: str = "keep", x: jax.Array | None = None,
                       labels: jax.Array | None = None, dist: jax.Array | None = None,
                       weights: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
  """Centroids (float32) from per-cluster sums and counts.

  Args:
    sums: ``float32[K, D]``; counts: ``float32[K]``.
    previous: ``[K, D]`` centroids of the last iteration, or ``None`` (then an
      empty cluster gets the zero vector).
    metric: ``"cosine"`` renormalises each mean to unit length (a zero mean
      keeps the previous centroid).
    empty: ``"keep"``: an empty cluster keeps its previous centroid;
      ``"farthest"``: it is re-seeded from the farthest point (needs ``x``,
      ``labels`` and ``dist``, the distances ``assign`` returned).

  Returns:
    ``centroids float32[K, D]`` and the counts after any relocation.
  """
  k, d = validation.check_sums(sums, counts)
  metric = validation.check_metric(metric)
  empty = validation.check_empty(empty)
  if previous is not None:
    validation.check_centroids(previous, d, "previous", k=k)
  if empty == "farthest":
    validation.check_farthest(empty, None, dist, x=x, labels=labels)
    validation.check_points(x)
    n = x.shape[0]
    validation.check_labels(labels, n, k=k)
    validation.check_weights(weights, n)
    validation.check_farthest(empty, n, dist)
  else:
    x = labels = dist = weights = None
  return _finalize_jit(sums, counts, previous, x,
                       None if labels is None else labels.astype(jnp.int32), dist, weights,
                       metric=metric, empty=empty)


@functools.partial(jax.jit, static_argnames=("k",))
def _init_random_jit(key, x, weights, *, k):
  return seeding.init_random(key, x, k, weights)


def init_random(key: jax.Array, x: jax.Array, k: int,
                weights: jax.Array | None = None) -> jax.Array:
  """``k`` distinct points drawn without replacement (weighted when given).

  Returns ``float32[k, D]``. Points of weight 0, and points whose row holds
  NaN or Inf, are drawn only when fewer than ``k`` points are left; such a
  row drawn then comes back as zeros, so the seeds are always finite.
  """
  validation.check_key(key)
  validation.check_points(x)
  n = x.shape[0]
  k = validation.check_k(k, n)
  validation.check_weights(weights, n)
  return _init_random_jit(key, x, weights, k=k)


@functools.partial(jax.jit, static_argnames=("k", "metric", "n_local_trials", "precision"))
def _init_pp_jit(key, x, weights, *, k, metric, n_local_trials, precision):
  return seeding.init_kmeans_plusplus(key, x, k, weights, metric=metric,
                                      n_local_trials=n_local_trials, precision=precision)


def init_kmeans_plusplus(key: jax.Array, x: jax.Array, k: int,
                         weights: jax.Array | None = None, *,
                         metric: str = "sqeuclidean", n_local_trials: int | None = None,
                         precision: Any = "highest") -> jax.Array:
  """Greedy k-means++ (Arthur & Vassilvitskii; scikit-learn's variant).

  Each new centroid is the best of ``n_local_trials`` (default
  ``2 + floor(log k)``) candidates drawn with probability proportional to
  ``weight * D(x)^2``, where D is the distance to the nearest centroid chosen
  so far; "best" minimises the resulting potential. The ``"dot"`` metric seeds
  with squared Euclidean distances (a negative score is no sampling weight).

  Cost: ``k * n_local_trials`` passes of ``N x D`` work, fine for the K of
  most uses; for K in the tens of thousands prefer ``init="random"``.

  Returns ``float32[k, D]``.
  """
  k, metric, n_local_trials = call_checks.check_seeding_call(
      key, x, k, weights=weights, metric=metric, n_local_trials=n_local_trials)
  # Seeding's distances are plain dots: a certified precision seeds at "highest".
  precision = validation.resolve_precision(precision)
  if precision_mod.is_certified(precision):
    precision = lax.Precision.HIGHEST
  return _init_pp_jit(key, x, weights, k=k, metric=metric, n_local_trials=n_local_trials,
                      precision=precision)


def update(x: jax.Array, labels: jax.Array, centroids_or_k: jax.Array | int, *,
           weights: jax.Array | None = None, metric: str = "sqeuclidean",
           empty: str = "keep", dist: jax.Array | None = None,
           impl: str | None = None, check_finite: bool = True) -> tuple[jax.Array, jax.Array]:
  """New centroids as the (weighted) means of their points.

  Args:
    x: ``[N, D]`` points (float16, bfloat16, float32).
    labels: ``int[N]`` cluster of every point, in ``[0, K)``.
    centroids_or_k: the previous centroids ``[K, D]`` (used by the empty
      policy) or the number of clusters ``K`` (empty clusters then get zeros
      under ``"keep"``).
    weights: optional ``float[N]`` weights >= 0 (``None``: all ones).
    metric: ``"cosine"`` renormalises the means; other metrics use the plain
      mean.
    empty: ``"keep"`` (default) or ``"farthest"`` (needs ``dist``).
    dist: ``float32[N]`` distances from :func:`assign`, for ``"farthest"``.
    impl: ``None``/``"auto"``, ``"xla"`` (tiled ``segment_sum``), ``"pallas"``
      (sort-inverse kernel: argsort of labels, then contiguous per-cluster
      sums) or ``"pallas_interpret"``.
    check_finite: on an eager call, raise ``ValueError`` if x holds NaN/Inf
      (inside ``jit`` such rows are left out of the sums and counts).
      Non-finite previous centroids always raise on an eager call.

  Returns:
    ``centroids [K, D]`` in ``x.dtype`` (accumulated in float32) and
    ``counts float32[K]`` (weight sums; after relocation under
    ``"farthest"``).

  A concrete ``jax.Array`` x split over devices on axis 0 is reduced with one
  psum (:func:`flashkmeans_jax.sharded_update`).
  """
  if mesh.is_row_sharded(x):
    return sharded_api.sharded_update(x, labels, centroids_or_k, weights=weights,
                                      metric=metric, empty=empty, dist=dist, impl=impl,
                                      check_finite=check_finite)
  k, previous, metric, empty = call_checks.check_update_call(
      x, labels, centroids_or_k, weights=weights, metric=metric, empty=empty, dist=dist,
      check_finite=check_finite)
  impl = validation.resolve_impl(impl, x.shape[0], k)
  return _update_jit(x, labels.astype(jnp.int32), previous, weights, dist, k=k,
                     metric=metric, empty=empty, impl=impl)
