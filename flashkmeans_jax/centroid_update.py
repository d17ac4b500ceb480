"""``update``: new centroids as the (weighted) means of their points.

Split in two so that streaming and sharded drivers can combine partial sums:
:func:`cluster_sums` (per-cluster float32 sums and counts; XLA here, the
sort-inverse Pallas kernel in :mod:`flashkmeans_jax.kernels.sorted_update`)
and :func:`finalize_centroids` (division, cosine renormalisation and the
empty-cluster policy).

Points whose row holds NaN or Inf are left out of sums and counts, so one bad
point cannot turn every centroid into NaN; the inertia, which sums their NaN
distances, still shows it.
"""

from __future__ import annotations

import numbers
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from flashkmeans_jax import _checks
from flashkmeans_jax import _dispatch

__all__ = ["update", "cluster_sums", "finalize_centroids", "update_reference",
           "cluster_sums_xla"]

_XLA_TILE_BYTES = 32 * 1024 * 1024


def _weights_or_ones(weights, n, batch=()):
  return jnp.ones((*batch, n), jnp.float32) if weights is None else weights.astype(jnp.float32)


def _chunk_sums(xb, lb, wb, k):
  xf = xb.astype(jnp.float32)
  ok = jnp.all(jnp.isfinite(xf), axis=-1)
  w = jnp.where(ok, wb, 0.0)
  contrib = jnp.where(ok[:, None], xf * w[:, None], 0.0)
  sums = jax.ops.segment_sum(contrib, lb, num_segments=k)
  counts = jax.ops.segment_sum(w, lb, num_segments=k)
  return sums, counts


def cluster_sums_xla(x: jax.Array, labels: jax.Array, k: int,
                     weights: jax.Array | None = None,
                     tile_n: int | None = None) -> tuple[jax.Array, jax.Array]:
  """Per-cluster float32 sums ``[K, D]`` and weight counts ``[K]`` with XLA.

  Walks tiles of points so that x is converted to float32 one tile at a time.
  """
  n, d = x.shape
  w = _weights_or_ones(weights, n)
  tile_n = min(n, tile_n or max(1024, _XLA_TILE_BYTES // (4 * d)))
  if n <= tile_n:
    return _chunk_sums(x, labels, w, k)
  n_chunks = -(-n // tile_n)

  def body(i, carry):
    sums, counts = carry
    start = jnp.minimum(i * tile_n, n - tile_n)
    # The clamped last tile overlaps the one before: zero the weight of rows
    # that tile already counted.
    fresh = start + jnp.arange(tile_n) >= i * tile_n
    xb = lax.dynamic_slice_in_dim(x, start, tile_n)
    lb = lax.dynamic_slice_in_dim(labels, start, tile_n)
    wb = jnp.where(fresh, lax.dynamic_slice_in_dim(w, start, tile_n), 0.0)
    s, c = _chunk_sums(xb, lb, wb, k)
    return sums + s, counts + c

  init = (jnp.zeros((k, d), jnp.float32), jnp.zeros((k,), jnp.float32))
  return lax.fori_loop(0, n_chunks, body, init)


def cluster_sums(x: jax.Array, labels: jax.Array, k: int, *,
                 weights: jax.Array | None = None,
                 impl: str | None = None) -> tuple[jax.Array, jax.Array]:
  """Per-cluster sums of (weighted) points and the weight sums.

  Args:
    x: ``[N, D]`` points, any float dtype.
    labels: ``int32[N]`` in ``[0, k)``.
    k: number of clusters (static).
    weights: optional ``float[N]`` point weights (>= 0); ``None`` means ones.
    impl: as in :func:`update`.

  Returns:
    ``sums float32[K, D]`` and ``counts float32[K]``.
  """
  _checks.check_points(x)
  k = _checks.check_k(k)
  _checks.check_labels(labels, x.shape[0], k=k)
  _checks.check_weights(weights, x.shape[0])
  return _cluster_sums(x, labels, k, weights, impl)


def _cluster_sums(x, labels, k, weights=None, impl=None):
  """:func:`cluster_sums` without the argument checks, for callers that have
  checked already (the Lloyd loop, ``update``, the streaming and sharded
  drivers): on concrete arrays the label range check is a device reduction
  and a host sync, which has no place in a per-chunk or per-call hot path."""
  impl = _dispatch.resolve_impl(impl, x.shape[0], k)
  if impl == "xla":
    return cluster_sums_xla(x, labels, k, weights)
  from flashkmeans_jax.kernels import sorted_update
  return sorted_update.sorted_cluster_sums(
      x, labels, k, weights=weights, interpret=(impl == "pallas_interpret"))


def _normalise_rows(c):
  norm = jnp.sqrt(jnp.sum(c * c, axis=-1, keepdims=True))
  return c / jnp.where(norm > 0, norm, 1.0), norm[..., 0] > 0


def _relocate_empty(sums, counts, x, labels, dist, weights):
  """Moves each empty cluster onto one of the farthest points.

  The j-th empty cluster (by index) takes the j-th farthest point (by
  distance to its own centroid, among points of positive weight); the point
  leaves its old cluster's sums, as scikit-learn does.
  """
  k = counts.shape[0]
  n = x.shape[0]
  w = _weights_or_ones(weights, n)
  empty = counts <= 0
  score = jnp.where((w > 0) & jnp.isfinite(dist), dist, -jnp.inf)
  n_cand = min(k, n)
  _, far = lax.top_k(score, n_cand)
  rank = jnp.cumsum(empty) - 1
  cand = far[jnp.clip(rank, 0, n_cand - 1)]
  valid = empty & (rank < n_cand) & jnp.isfinite(score[cand])
  wc = jnp.where(valid, w[cand], 0.0)
  pts = x[cand].astype(jnp.float32) * wc[:, None]
  old = labels[cand]
  sums = sums.at[old].add(-pts)
  counts = counts.at[old].add(-wc)
  sums = jnp.where(valid[:, None], pts, sums)
  counts = jnp.where(valid, wc, counts)
  return sums, counts


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
  k, d = _checks.check_sums(sums, counts)
  metric = _checks.check_metric(metric)
  empty = _checks.check_empty(empty)
  if previous is not None:
    _checks.check_centroids(previous, d, "previous", k=k)
  if empty == "farthest":
    if x is None or labels is None or dist is None:
      raise ValueError('empty="farthest" needs x, labels and dist (from assign)')
    sums, counts = lax.cond(
        jnp.any(counts <= 0),
        lambda sc: _relocate_empty(*sc, x, labels, dist, weights),
        lambda sc: sc, (sums, counts))
  prev = (jnp.zeros_like(sums) if previous is None
          else previous.astype(jnp.float32))
  has = counts > 0
  mean = sums / jnp.where(has, counts, 1.0)[:, None]
  if metric == "cosine":
    mean, nonzero = _normalise_rows(mean)
    has = has & nonzero
  return jnp.where(has[:, None], mean, prev), counts


def update(x: jax.Array, labels: jax.Array, centroids_or_k: jax.Array | int, *,
           weights: jax.Array | None = None, metric: str = "sqeuclidean",
           empty: str = "keep", dist: jax.Array | None = None,
           impl: str | None = None) -> tuple[jax.Array, jax.Array]:
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

  Returns:
    ``centroids [K, D]`` in ``x.dtype`` (accumulated in float32) and
    ``counts float32[K]`` (weight sums; after relocation under
    ``"farthest"``).

  A concrete ``jax.Array`` x split over devices on axis 0 is reduced with one
  psum (:func:`flashkmeans_jax.distributed.sharded_update`).
  """
  # Data-parallel path (issue #9): x row-sharded over more than one device.
  from flashkmeans_jax import distributed
  if distributed.is_row_sharded(x):
    return distributed.sharded_update(x, labels, centroids_or_k, weights=weights,
                                      metric=metric, empty=empty, dist=dist, impl=impl)
  _checks.check_points(x)
  n, d = x.shape
  _checks.check_weights(weights, n)
  metric = _checks.check_metric(metric)
  empty = _checks.check_empty(empty)
  if isinstance(centroids_or_k, numbers.Integral) or not hasattr(centroids_or_k, "shape"):
    # Python and NumPy ints; anything else that is not an array gets check_k's
    # TypeError naming k.
    k = _checks.check_k(centroids_or_k, name="centroids_or_k")
    previous = None
  else:
    _checks.check_centroids(centroids_or_k, d, "centroids_or_k")
    previous = centroids_or_k
    k = previous.shape[0]
  _checks.check_labels(labels, n, k=k)
  if dist is not None and tuple(dist.shape) != (n,):
    raise ValueError(f"dist must have shape {(n,)}, got {tuple(dist.shape)}")
  sums, counts = _cluster_sums(x, labels.astype(jnp.int32), k, weights, impl)
  c, counts = finalize_centroids(sums, counts, previous, metric=metric, empty=empty,
                                 x=x, labels=labels.astype(jnp.int32), dist=dist,
                                 weights=weights)
  return c.astype(x.dtype), counts


def update_reference(x: jax.Array, labels: jax.Array, k: int,
                     weights: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
  """Plain-JAX reference of :func:`cluster_sums` (one ``segment_sum``)."""
  w = _weights_or_ones(weights, x.shape[0])
  return _chunk_sums(x, labels, w, k)
