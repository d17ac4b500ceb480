"""``hierarchical_kmeans``: two-level k-means for very large k (k >= 65,536).

1. *Mesoclusters*: Lloyd with ``n_meso`` clusters (default ``round(sqrt(k))``)
   on all points.
2. *Fine clusters*: mesocluster ``j`` gets ``k_j`` fine clusters, ``k_j``
   proportional to its number of usable points (largest remainders; ``sum k_j
   == k``, ``1 <= k_j <= size_j``; an empty mesocluster gets none). Every
   mesocluster's points are gathered into one member of a padded batch
   ``[B, S, D]`` (padding rows: weight 0) and clustered by one batched Lloyd
   run with ``k_max = max k_j`` centroids per member: member ``j``'s first
   ``k_j`` seeds are its k-means++ (or random) seeds, the other ``k_max -
   k_j`` sit on one far point (every coordinate ``4 max|x| + 1``) that is
   farther from every point than any real centroid can be, so they win no
   point, stay empty and are dropped (``empty="keep"`` in this level).
3. Optionally ``refine_iter`` Lloyd iterations over all ``k`` centroids on all
   points (:func:`flashkmeans_jax.kmeans` with ``init=`` the fine centroids).
4. Labels and inertia: one exact assignment of every point to all ``k``
   centroids.

Exactness (``docs/large_k.md``): each level is exact Lloyd on its points and
the final labels are the exact nearest centroids, but without refinement to
convergence the result is *not* a fixed point of Lloyd with ``k`` clusters:
a fine centroid only ever saw its mesocluster's points.

The level sizes (``S``, ``k_max``, the ``k_j``) depend on the mesoclusters,
so the call syncs with the host between the levels and is not ``jit``-able;
each level is one compiled call.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from flashkmeans_jax.core import precision as precision_mod
from flashkmeans_jax.core import validation
from flashkmeans_jax.core.options import LloydOptions
from flashkmeans_jax.core.types import KMeansResult
from flashkmeans_jax.lloyd import loop
from flashkmeans_jax.lloyd import seeding
from flashkmeans_jax.lloyd import stats
from flashkmeans_jax.ops.assign import api as assign_op
from flashkmeans_jax.ops.cluster_sums import sort

__all__ = ["hierarchical_kmeans", "HierarchicalLevels", "allocate_fine_k"]

# The padded member length is rounded up to a multiple of this, so that
# mesoclusterings of similar balance reuse one compiled fine level.
_ROW_QUANTUM = 256


class HierarchicalLevels(NamedTuple):
  """The two levels behind a :func:`hierarchical_kmeans` result
  (``return_levels=True``).

  Attributes:
    meso: :class:`KMeansResult` of the mesocluster run (``n_meso`` clusters).
    fine_k: ``int64[n_meso]`` (NumPy) fine clusters per mesocluster.
    fine_offsets: ``int64[n_meso + 1]`` (NumPy): mesocluster ``j``'s fine
      centroids are rows ``fine_offsets[j]:fine_offsets[j + 1]`` of the
      centroids (before refinement: ``fine_centroids``).
    fine_centroids: ``[k, D]``: the fine level's centroids, before any
      refinement.
    fine_labels: ``int32[N]``: every point's fine cluster (global index) as
      the fine level assigned it, inside its own mesocluster (-1 for the
      points of a mesocluster without usable points).
    fine_converged: ``bool[B]`` per non-empty mesocluster.
  """

  meso: KMeansResult
  fine_k: np.ndarray
  fine_offsets: np.ndarray
  fine_centroids: jax.Array
  fine_labels: jax.Array
  fine_converged: jax.Array


def allocate_fine_k(sizes: np.ndarray, k: int) -> np.ndarray:
  """``k_j`` per mesocluster: proportional to ``sizes`` (largest remainders),
  ``sum == k``, ``1 <= k_j <= sizes_j`` where ``sizes_j > 0``, else 0.
  Requires ``count_nonzero(sizes) <= k <= sum(sizes)``."""
  sizes = np.asarray(sizes, np.int64)
  quota = k * sizes / max(int(sizes.sum()), 1)
  kj = np.where(sizes > 0, np.clip(np.floor(quota).astype(np.int64), 1, sizes), 0)
  while kj.sum() != k:
    rem = quota - kj
    if kj.sum() < k:  # one more to the largest remainders that have room
      ok = kj < sizes
      order = np.argsort(np.where(ok, -rem, np.inf), kind="stable")
      take = order[:min(k - int(kj.sum()), int(ok.sum()))]
    else:  # one fewer for the most over-allocated (clamped up to 1)
      ok = kj > 1
      order = np.argsort(np.where(ok, rem, np.inf), kind="stable")
      take = order[:min(int(kj.sum()) - k, int(ok.sum()))]
    kj[take] += 1 if kj.sum() < k else -1
  return kj


def _check_hier_args(k, n_meso, refine_iter, metric, n):
  k = validation.check_k(k, n)
  if k < 2:
    raise ValueError(f"k must be >= 2 for hierarchical_kmeans (use kmeans), got {k}")
  n_meso = max(1, round(k ** 0.5)) if n_meso is None else validation.check_positive_int(
      n_meso, "n_meso")
  if n_meso > k:
    raise ValueError(f"n_meso must be <= k={k}, got {n_meso}")
  refine_iter = validation.check_positive_int(refine_iter, "refine_iter", minimum=0)
  if validation.check_metric(metric) != "sqeuclidean":
    raise ValueError(f"hierarchical_kmeans supports metric='sqeuclidean' only (its "
                     f"disabled fine centroids rely on distance growing away from the "
                     f"data), got {metric!r}")
  return k, n_meso, refine_iter


def _check_usable(n_usable: int, k: int) -> None:
  if n_usable < k:
    raise ValueError(f"k={k} exceeds the number of usable points (finite, positive "
                     f"weight) {n_usable}")


@functools.partial(jax.jit, static_argnames=("n_meso",))
def _usable_counts(labels, weights, x, n_meso: int):
  ok = jnp.all(jnp.isfinite(x.astype(jnp.float32)), axis=-1)
  if weights is not None:
    ok = ok & (weights > 0)
  usable = jnp.zeros((n_meso,), jnp.int32).at[labels].add(ok.astype(jnp.int32))
  order, offsets, sizes = sort.cluster_segments(labels, n_meso)
  return usable, order, offsets, sizes


@functools.partial(jax.jit, static_argnames=("rows", "init", "precision"))
def _gather_members(x, weights, order, starts, sizes, rows: int, init: str,
                    keys, fine_k, k_max_arange, precision):
  """Members ``[B, rows, D]`` (weights 0 past each member's size), their seeds
  ``[B, k_max, D]`` (surplus rows on the far point) and the row indices."""
  n = x.shape[0]
  t = jnp.arange(rows, dtype=jnp.int32)
  idx = order[jnp.clip(starts[:, None] + t[None, :], 0, n - 1)]
  valid = t[None, :] < sizes[:, None]
  w = jnp.ones((n,), jnp.float32) if weights is None else weights.astype(jnp.float32)
  xb = x[idx]
  wb = jnp.where(valid, w[idx], 0.0)
  k_max = k_max_arange.shape[0]
  seeds = jax.vmap(lambda kk, xx, ww: seeding.init_centroids(
      kk, xx, k_max, init, ww, precision=precision))(keys, xb, wb)
  xf = jnp.where(jnp.isfinite(x.astype(jnp.float32)), x.astype(jnp.float32), 0.0)
  far = 4.0 * jnp.max(jnp.abs(xf)) + 1.0
  # A 16-bit dtype must hold the far point (float16 data beyond +-16376 loses
  # the margin; such data overflows float16's squared norms anyway).
  far = jnp.minimum(far, float(jnp.finfo(x.dtype).max) / 2)
  live = k_max_arange[None, :] < fine_k[:, None]
  seeds = jnp.where(live[..., None], seeds, far)
  return xb, wb, seeds, idx, valid


def hierarchical_kmeans(key: jax.Array, x: jax.Array, k: int, *, n_meso: int | None = None,
                        refine_iter: int = 2, init: str = "k-means++", max_iter: int = 50,
                        tol: float = 1e-4, metric: str = "sqeuclidean",
                        weights: jax.Array | None = None, impl: str | None = None,
                        precision: Any = None, check_finite: bool = True,
                        return_levels: bool = False):
  """Two-level k-means: ``n_meso`` mesoclusters, then ``k`` fine clusters
  split among them in proportion to their sizes, then (``refine_iter``)
  global Lloyd iterations; for k in the tens of thousands, where one flat
  run's seeding and iterations cost ``O(N k)`` each.

  Args:
    key: a ``jax.random`` key.
    x: ``[N, D]`` float16, bfloat16 or float32 points.
    k: total fine clusters, ``2 <= k <= N`` (at most the usable points).
    n_meso: mesoclusters, ``1 <= n_meso <= k``; default ``round(sqrt(k))``.
    refine_iter: Lloyd iterations over all k centroids after the fine level
      (default 2: on an H200 at N=2^22, k=65536 they cost 0.25 s and lower
      the inertia by 1%, see docs/large_k.md; 0 skips them); with enough of
      them (and ``tol``) the result is a Lloyd fixed point for k clusters.
    init: seeding of the mesocluster run (any name :func:`kmeans` takes);
      the fine level seeds with ``"random"`` when ``init="random"``, else
      with k-means++ (whose first ``k_j`` seeds are k-means++ for ``k_j``).
    max_iter, tol: per level (mesoclusters; every fine member).
    metric: ``"sqeuclidean"`` only.
    weights: optional ``float[N]`` >= 0; sizes count points of positive
      weight.
    impl, precision, check_finite: as in :func:`kmeans`.
    return_levels: also return a :class:`HierarchicalLevels`.

  Returns:
    :class:`KMeansResult`: ``centroids [k, D]`` (mesocluster ``j``'s fine
    centroids are contiguous, in mesocluster order), ``labels`` the exact
    nearest of all k centroids and ``inertia`` of them; ``n_iter`` is the sum
    of the levels' iterations (meso + the slowest fine member + refinement),
    ``converged`` whether every level converged (refinement included when
    run), ``inertia_history float32[refine_iter]`` (of the refinement). With
    ``return_levels``: ``(result, levels)``.
  """
  validation.check_key(key)
  validation.check_points(x)
  n, d = x.shape
  k, n_meso, refine_iter = _check_hier_args(k, n_meso, refine_iter, metric, n)
  return_levels = validation.check_bool(return_levels, "return_levels")
  init = validation.check_init_name(init) if isinstance(init, str) else init
  if not isinstance(init, str):
    raise TypeError(f"init must be a name for hierarchical_kmeans, got {type(init).__name__}")
  meso_opts, _ = validation.lloyd_options(
      x, n_meso, init=init, max_iter=max_iter, tol=tol, metric=metric, weights=weights,
      impl=impl, precision=precision, check_finite_values=check_finite)
  if weights is not None and not isinstance(weights, jax.core.Tracer):
    _check_usable(int(jnp.sum(jnp.asarray(weights) > 0)), k)  # before any work
  key_meso, key_fine, key_refine = jax.random.split(key, 3)
  meso = loop.run_compiled(key_meso, x, weights, None, meso_opts)

  usable, order, offsets, sizes = _usable_counts(meso.labels, weights, x, n_meso)
  usable_h = np.asarray(jax.device_get(usable)).astype(np.int64)
  _check_usable(int(usable_h.sum()), k)
  fine_k = allocate_fine_k(usable_h, k)
  members = np.flatnonzero(fine_k > 0)
  sizes_h = np.asarray(jax.device_get(sizes)).astype(np.int64)
  rows = int(min(n, -(-int(sizes_h[members].max()) // _ROW_QUANTUM) * _ROW_QUANTUM))
  k_max = int(fine_k.max())
  b = len(members)
  fine_init = "random" if init == "random" else "k-means++"
  xb, wb, seeds, idx, valid = _gather_members(
      x, weights, order, jnp.asarray(np.asarray(offsets)[members]),
      jnp.asarray(sizes_h[members], jnp.int32), rows, fine_init,
      jax.random.split(key_fine, b), jnp.asarray(fine_k[members], jnp.int32),
      jnp.arange(k_max), precision_mod.resolve_precision("highest"))
  fine_opts = LloydOptions(
      k=k_max, max_iter=meso_opts.max_iter, tol=meso_opts.tol, metric="sqeuclidean",
      empty="keep", impl=validation.resolve_impl(impl, rows, k_max, batch=b),
      precision=meso_opts.precision, init="array")
  fine = loop.run_batched(key_fine, xb, wb, seeds, fine_opts)

  # Member j's live centroids are its first k_j rows; global index = offset + row.
  fine_offsets = np.concatenate([[0], np.cumsum(fine_k)])
  live_m = np.repeat(np.arange(b), fine_k[members])
  live_r = np.concatenate([np.arange(fine_k[j]) for j in members])
  c_fine = fine.centroids[live_m, live_r]
  base = jnp.asarray(fine_offsets[members], jnp.int32)
  fine_labels = jnp.full((n,), -1, jnp.int32).at[jnp.where(valid, idx, n)].set(
      base[:, None] + fine.labels, mode="drop")

  fine_done = jnp.all(fine.converged)
  n_iter = meso.n_iter + jnp.max(fine.n_iter)
  if refine_iter > 0:
    ref_opts = meso_opts._replace(k=k, max_iter=refine_iter, init="array",
                                  impl=validation.resolve_impl(impl, n, k))
    ref = loop.run_compiled(key_refine, x, weights, c_fine, ref_opts)
    result = KMeansResult(centroids=ref.centroids, labels=ref.labels, inertia=ref.inertia,
                          n_iter=n_iter + ref.n_iter,
                          converged=meso.converged & fine_done & ref.converged,
                          inertia_history=ref.inertia_history)
  else:
    labels, dist = _final_assign(x, c_fine, weights, meso_opts._replace(
        k=k, impl=validation.resolve_impl(impl, n, k)))
    result = KMeansResult(centroids=c_fine, labels=labels, inertia=dist,
                          n_iter=n_iter, converged=meso.converged & fine_done,
                          inertia_history=jnp.zeros((0,), jnp.float32))
  if not return_levels:
    return result
  return result, HierarchicalLevels(meso=meso, fine_k=fine_k, fine_offsets=fine_offsets,
                                    fine_centroids=c_fine, fine_labels=fine_labels,
                                    fine_converged=fine.converged)


@functools.partial(jax.jit, static_argnames=("opts",))
def _final_assign(x, c, weights, opts: LloydOptions):
  """Exact labels of every point against all k centroids, and their inertia."""
  labels, dist = assign_op.assign(x, c, opts.metric, opts.impl, opts.precision, opts.config)
  return labels, stats.inertia(dist, weights)
