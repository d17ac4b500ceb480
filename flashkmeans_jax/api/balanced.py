"""``balanced_kmeans``: Lloyd with a hard cap on the cluster sizes.

The algorithm is :mod:`flashkmeans_jax.lloyd.balanced` (top-m candidates,
deferred acceptance, a spill step for the rest); this module validates the
arguments once and runs the compiled loop. ``docs/large_k.md`` states the
bound and what it costs in inertia.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import jax

from flashkmeans_jax.core import validation
from flashkmeans_jax.core.types import KMeansResult
from flashkmeans_jax.lloyd import balanced as balanced_mod
from flashkmeans_jax.ops.assign_topk import api as topk_op

__all__ = ["balanced_kmeans", "check_max_size", "check_capacity_factor",
           "check_n_candidates"]


def check_capacity_factor(value: Any) -> float:
  """A finite float ``>= 1`` (below 1 the ``k`` clusters cannot hold ``N``)."""
  value = validation.check_positive_float(value, "capacity_factor")
  if value < 1.0:
    raise ValueError(f"capacity_factor must be >= 1 (k clusters of at most "
                     f"ceil(capacity_factor * N / k) points must hold all N), got {value}")
  return value


def check_max_size(max_size: Any, capacity_factor: Any, n: int, k: int) -> int:
  """The cap on the cluster sizes: ``max_size`` (an int with ``k * max_size >=
  N``) or, when it is ``None``, ``ceil(capacity_factor * N / k)`` (default
  factor 1: the tightest cap that holds every point). Not both."""
  if max_size is not None and capacity_factor is not None:
    raise ValueError("pass max_size or capacity_factor, not both")
  if max_size is None:
    factor = 1.0 if capacity_factor is None else check_capacity_factor(capacity_factor)
    return min(n, max(-(-n // k), math.ceil(factor * n / k)))
  if isinstance(max_size, bool) or not isinstance(max_size, numbers.Integral):
    raise TypeError(f"max_size must be an int, got {type(max_size).__name__} ({max_size!r})")
  need = -(-n // k)
  if max_size < need:
    raise ValueError(f"max_size must be >= ceil(N / k) = {need} so that k clusters hold "
                     f"all N={n} points (k={k}), got {max_size}")
  return min(int(max_size), n)


def check_n_candidates(value: Any, k: int) -> int:
  """``1 <= n_candidates <= min(k, 32)`` (the top-k's list length)."""
  value = validation.check_positive_int(value, "n_candidates")
  top = min(k, topk_op.MAX_TOPK)
  if value > top:
    raise ValueError(f"n_candidates must be <= min(k, {topk_op.MAX_TOPK}) = {top}, "
                     f"got {value}")
  return value


def balanced_kmeans(key: jax.Array, x: jax.Array, k: int, *, max_size: int | None = None,
                    capacity_factor: float | None = None, n_candidates: int = 8,
                    max_rounds: int = 32, init: str | jax.Array = "k-means++",
                    max_iter: int = 100, tol: float = 1e-4, metric: str = "sqeuclidean",
                    weights: jax.Array | None = None, empty: str = "keep",
                    impl: str | None = None, precision: Any = None,
                    check_finite: bool = True) -> KMeansResult:
  """Balanced k-means: Lloyd iterations whose assignment holds every cluster
  to at most ``max_size`` points.

  Each iteration assigns by capacity (every point to one of its
  ``n_candidates`` nearest centroids by deferred acceptance, clusters
  keeping their closest points; points left over go to their nearest
  centroid with room), then updates the centroids as :func:`kmeans` does.
  The final labels are one more capacity assignment against the returned
  centroids, so ``bincount(labels) <= max_size`` holds for the result
  (counting the points of positive weight), on any data.

  Args:
    key: a ``jax.random`` key (seeding).
    x: ``[N, D]`` points, float16, bfloat16 or float32.
    k: number of clusters, ``1 <= k <= N``.
    max_size: the cap, an int ``>= ceil(N / k)``; default
      ``ceil(capacity_factor * N / k)``.
    capacity_factor: float ``>= 1`` (default 1.0, the tightest cap), used
      when ``max_size`` is not given; not both.
    n_candidates: ``m``, how many nearest centroids a point may join before
      the spill step, ``1 <= m <= min(k, 32)``. Larger m: closer to the best
      balanced assignment, more sort passes.
    max_rounds: cap on the deferred-acceptance rounds per assignment (points
      still unplaced then spill); the bound holds whatever it is.
    init, max_iter, tol, metric, weights, empty, impl, precision,
      check_finite: as in :func:`flashkmeans_jax.kmeans` (one run,
      ``n_init=1``). Points of weight 0 are not counted in the sizes and take
      their nearest centroid (padding).

  Returns:
    :class:`KMeansResult` (``centroids [k, D]`` in x's dtype, ``labels
    int32[N]``, ``inertia`` of those labels, ``n_iter``, ``converged``,
    ``inertia_history [max_iter]``). The inertia is at least plain k-means'
    at the same centroids, usually higher than a plain run's (the price of
    the cap). Works under ``jit`` and ``vmap``.
  """
  validation.check_key(key)
  validation.check_points(x)
  n = x.shape[0]
  opts, init_array = validation.lloyd_options(
      x, k, init=init, max_iter=max_iter, tol=tol, metric=metric, weights=weights,
      n_init=1, empty=empty, impl=impl, precision=precision,
      check_finite_values=check_finite)
  bal = balanced_mod.BalanceOptions(
      max_size=check_max_size(max_size, capacity_factor, n, opts.k),
      n_candidates=check_n_candidates(n_candidates, opts.k),
      max_rounds=validation.check_positive_int(max_rounds, "max_rounds"))
  return balanced_mod.run_balanced(key, x, weights, init_array, opts, bal)
