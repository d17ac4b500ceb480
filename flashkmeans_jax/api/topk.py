"""The checked public top-k assignment, :func:`assign_topk`."""

from __future__ import annotations

from typing import Any

import jax

from flashkmeans_jax.core import validation
from flashkmeans_jax.ops.assign_topk import api as topk_op

__all__ = ["assign_topk"]


def _check_topk_k(k: Any, n_centroids: int) -> int:
  # check_k gives the messages every entry point gives for a k that is not a
  # positive int; the upper bounds are the top-k's own.
  k = validation.check_k(k)
  if k > topk_op.MAX_TOPK:
    raise ValueError(f"k must be <= {topk_op.MAX_TOPK} (assign_topk keeps each point's "
                     f"list on chip), got {k}")
  if k > n_centroids:
    raise ValueError(f"k={k} exceeds the number of centroids K={n_centroids}")
  return k


def assign_topk(x: jax.Array, centroids: jax.Array, k: int, *, metric: str = "sqeuclidean",
                precision: Any = None, impl: str | None = None, config: Any = None,
                check_finite: bool = True) -> tuple[jax.Array, jax.Array]:
  """The ``k`` nearest centroids of every point, and their distances.

  A running top-k inside the assignment's tile loop: no ``N x K`` matrix is
  ever in memory.

  Args:
    x: ``[N, D]`` points, float16, bfloat16 or float32 (float64 with
      ``impl="xla"`` and x64 enabled).
    centroids: ``[K, D]``, any float dtype; cast to ``x.dtype`` for the dot.
    k: Python int, ``1 <= k <= min(32, K)``.
    metric: ``"sqeuclidean"``, ``"cosine"`` or ``"dot"``, as in
      :func:`flashkmeans_jax.assign`.
    precision: float32 matmul precision, as in :func:`flashkmeans_jax.assign`
      (a certified precision runs its base dot; the list is not certified).
    impl: ``None``/``"auto"``, ``"xla"``, ``"pallas"`` or ``"pallas_interpret"``.
    config: optional :class:`flashkmeans_jax.ops.assign_topk.config.TopKConfig`
      for the Pallas kernel.
    check_finite: on an eager call, raise ``ValueError`` if x holds NaN/Inf.
      Inside ``jit`` a non-finite row gets centroids ``0..k-1`` and NaN
      distances. Non-finite centroids always raise on an eager call; inside
      ``jit`` they come last, at distance ``+inf``.

  Returns:
    ``indices int32[N, k]`` and ``distances float32[N, k]``, each row
    ascending by distance, equal scores in increasing centroid index
    (column 0 is the nearest centroid, as :func:`flashkmeans_jax.assign`
    finds it up to float32 near-ties). No gradient (the distances are constants to
    ``jax.grad``). Works under ``jit`` and ``vmap``.
  """
  validation.check_points(x)
  validation.check_centroids(centroids, x.shape[1])
  k = _check_topk_k(k, centroids.shape[0])
  metric = validation.check_metric(metric)
  impl = validation.resolve_impl(impl, x.shape[0], centroids.shape[0])
  precision = validation.resolve_precision(precision)
  validation.check_finite(centroids, "centroids")
  if check_finite:
    validation.check_finite(x)
  return topk_op.assign_topk(x, centroids, k, metric, impl, precision, config)
