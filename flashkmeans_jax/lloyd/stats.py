"""The statistics core of Lloyd's algorithm: accumulate, merge, finalise.

Every driver computes one iteration the same way; they differ only in how
partial results of row blocks meet (:mod:`flashkmeans_jax.lloyd.combine`):

1. :func:`accumulate` a block: per-cluster float32 sums, weight counts and
   the inertia of its assignment (:class:`ClusterStats`); for
   ``empty="farthest"`` also the block's farthest points (:class:`Farthest`).
2. :func:`merge` two partial results (streaming: chunk after chunk), or
   reduce them over blocks with a :class:`~flashkmeans_jax.lloyd.combine.Combine`
   (:func:`combine_stats`, :func:`combine_farthest`; sharded: one ``psum``).
3. :func:`finalize`: new centroids from the totals with the empty-cluster
   policy (:mod:`flashkmeans_jax.lloyd.centroids`), and the shift that the
   convergence test compares with the tolerance (:func:`converged`).

The tolerance is ``tol`` times the mean per-feature variance of the data
(scikit-learn's rule), from :class:`Moments` that merge the same way (Chan et
al.'s pairwise formula), so streaming and sharded runs stop where the
in-memory run stops.

Rows holding NaN or Inf and rows of weight 0 count in no sum, count, moment or
candidate; their (NaN) distances do reach the inertia, which is how a NaN in
the data shows in a result computed inside ``jit``.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from flashkmeans_jax.lloyd.combine import Combine
from flashkmeans_jax.ops.cluster_sums import api as cluster_sums_op

__all__ = ["ClusterStats", "Farthest", "Moments", "accumulate", "merge", "combine_stats",
           "farthest", "merge_farthest", "combine_farthest", "moments", "merge_moments",
           "combine_moments", "tolerance", "converged", "inertia", "zeros", "no_farthest",
           "no_moments"]


class ClusterStats(NamedTuple):
  """What a block of points adds to an iteration.

  Attributes:
    sums: ``float32[K, D]`` weighted sums of the points of each cluster.
    counts: ``float32[K]`` weight sums of each cluster.
    inertia: ``float32[]`` weighted sum of the block's distances.
  """

  sums: jax.Array
  counts: jax.Array
  inertia: jax.Array


class Farthest(NamedTuple):
  """The ``M`` farthest points of positive weight (relocation candidates).

  Attributes:
    x: ``float32[M, D]`` the points.
    labels: ``int32[M]`` their clusters.
    dist: ``float32[M]`` their distances, ``-inf`` where no candidate is held
      (fewer than M usable points, weight 0, non-finite distance).
    weights: ``float32[M]`` their weights.

  Ties in distance are broken towards the lower row index, in memory,
  chunk by chunk and over shards alike.
  """

  x: jax.Array
  labels: jax.Array
  dist: jax.Array
  weights: jax.Array


class Moments(NamedTuple):
  """Count, mean and sum of squared deviations of the usable rows.

  Attributes:
    n: ``float32[]`` usable rows (finite, positive weight; weights do not
      weigh the variance, as in scikit-learn).
    mean: ``float32[D]``; m2: ``float32[D]``.
    nonfinite: ``int32[]`` rows holding NaN or Inf.
  """

  n: jax.Array
  mean: jax.Array
  m2: jax.Array
  nonfinite: jax.Array


def zeros(k: int, d: int) -> ClusterStats:
  """The neutral element of :func:`merge`."""
  return ClusterStats(jnp.zeros((k, d), jnp.float32), jnp.zeros((k,), jnp.float32),
                      jnp.zeros((), jnp.float32))


def no_farthest(m: int, d: int) -> Farthest:
  """The neutral element of :func:`merge_farthest`: ``m`` empty slots
  (distance ``-inf``: never picked, lose every merge)."""
  return Farthest(jnp.zeros((m, d), jnp.float32), jnp.zeros((m,), jnp.int32),
                  jnp.full((m,), -jnp.inf, jnp.float32), jnp.zeros((m,), jnp.float32))


def no_moments(d: int) -> Moments:
  """The neutral element of :func:`merge_moments` (no rows)."""
  return Moments(jnp.zeros((), jnp.float32), jnp.zeros((d,), jnp.float32),
                 jnp.zeros((d,), jnp.float32), jnp.zeros((), jnp.int32))


def inertia(dist: jax.Array, weights: jax.Array | None) -> jax.Array:
  """``sum(weights * dist)`` in float32 (NaN distances propagate)."""
  if weights is None:
    return jnp.sum(dist)
  return jnp.sum(weights.astype(jnp.float32) * dist)


def accumulate(x: jax.Array, labels: jax.Array, dist: jax.Array,
               weights: jax.Array | None, k: int, impl: str,
               config=None) -> ClusterStats:
  """Statistics of one block ``x [N, D]`` with its assignment ``labels
  int32[N]``, ``dist float32[N]`` and optional ``weights float[N]``."""
  sums, counts = cluster_sums_op.cluster_sums(x, labels, k, weights, impl, config)
  return ClusterStats(sums, counts, inertia(dist, weights))


def merge(a: ClusterStats, b: ClusterStats) -> ClusterStats:
  """Statistics of the union of two disjoint sets of rows."""
  return ClusterStats(a.sums + b.sums, a.counts + b.counts, a.inertia + b.inertia)


def combine_stats(s: ClusterStats, combine: Combine) -> ClusterStats:
  """Totals over all blocks (one ``psum`` of O(K * D) when sharded)."""
  return combine.sum(s)


# ----------------------------------------------------------------------------
# Relocation candidates


def _score(dist, weights):
  ok = (weights > 0) & jnp.isfinite(dist)
  return jnp.where(ok, dist, -jnp.inf)


def farthest(x: jax.Array, labels: jax.Array, dist: jax.Array,
             weights: jax.Array | None, m: int) -> Farthest:
  """The ``min(m, N)`` farthest usable points of a block, padded to ``m``."""
  n = x.shape[0]
  w = jnp.ones((n,), jnp.float32) if weights is None else weights.astype(jnp.float32)
  score = _score(dist, w)
  take = min(m, n)
  top, idx = lax.top_k(score, take)
  out = Farthest(x[idx].astype(jnp.float32), labels[idx].astype(jnp.int32), top, w[idx])
  if take < m:
    pad = m - take
    out = Farthest(jnp.pad(out.x, ((0, pad), (0, 0))), jnp.pad(out.labels, (0, pad)),
                   jnp.pad(out.dist, (0, pad), constant_values=-jnp.inf),
                   jnp.pad(out.weights, (0, pad)))
  return out


def _top_of(stacked: Farthest, m: int) -> Farthest:
  """The ``m`` best of candidates stacked in row order (earlier wins ties)."""
  _, idx = lax.top_k(stacked.dist, m)
  return jax.tree.map(lambda a: a[idx], stacked)


def merge_farthest(a: Farthest, b: Farthest) -> Farthest:
  """The farthest candidates of two blocks; ``a`` holds the earlier rows."""
  m = a.dist.shape[0]
  return _top_of(jax.tree.map(lambda u, v: jnp.concatenate([u, v]), a, b), m)


def combine_farthest(f: Farthest, combine: Combine) -> Farthest:
  """The farthest candidates over all blocks (an all-gather of O(P * M * D))."""
  if combine.n_blocks == 1:
    return f
  m = f.dist.shape[0]
  stacked = jax.tree.map(lambda a: combine.gather(a).reshape((-1,) + a.shape[1:]), f)
  return _top_of(stacked, m)


# ----------------------------------------------------------------------------
# Moments and the tolerance


def moments(x: jax.Array, weights: jax.Array | None = None,
            valid: jax.Array | None = None) -> Moments:
  """Two-pass moments of the usable rows of ``x [N, D]`` (``valid``: an extra
  ``bool[N]`` mask, e.g. of padding rows)."""
  xf = x.astype(jnp.float32)
  finite = jnp.all(jnp.isfinite(xf), axis=-1)
  ok = finite if weights is None else finite & (weights > 0)
  if valid is not None:
    ok = ok & valid
    finite = finite | ~valid
  n = jnp.sum(ok, dtype=jnp.float32)
  xf = jnp.where(ok[:, None], xf, 0.0)
  mean = jnp.sum(xf, axis=0) / jnp.maximum(n, 1.0)
  m2 = jnp.sum(jnp.where(ok[:, None], jnp.square(xf - mean), 0.0), axis=0)
  return Moments(n, mean, m2, jnp.sum(~finite, dtype=jnp.int32))


def _combine_stacked(m: Moments) -> Moments:
  """Moments of the union of the stacked parts ``m.n [P]``, ``m.mean [P, D]``."""
  n = jnp.sum(m.n)
  safe = jnp.maximum(n, 1.0)
  mean = jnp.sum(m.n[:, None] * m.mean, axis=0) / safe
  m2 = jnp.sum(m.m2 + m.n[:, None] * jnp.square(m.mean - mean), axis=0)
  return Moments(n, mean, m2, jnp.sum(m.nonfinite))


def merge_moments(a: Moments, b: Moments) -> Moments:
  """Moments of the union of two disjoint sets of rows (Chan et al.)."""
  return _combine_stacked(jax.tree.map(lambda u, v: jnp.stack([u, v]), a, b))


def combine_moments(m: Moments, combine: Combine) -> Moments:
  """Moments over all blocks (an all-gather of O(P * D))."""
  if combine.n_blocks == 1:
    return m
  return _combine_stacked(jax.tree.map(combine.gather, m))


def tolerance(m: Moments, tol: float) -> jax.Array:
  """``tol`` times the mean per-feature (population) variance, float32."""
  if tol == 0:
    return jnp.float32(0.0)
  return jnp.float32(tol) * jnp.mean(m.m2 / jnp.maximum(m.n, 1.0))


def converged(new_c: jax.Array, c: jax.Array, tol_abs: jax.Array) -> tuple[jax.Array, jax.Array]:
  """``(shift, shift <= tol_abs)`` with ``shift`` the squared centroid move
  summed over clusters."""
  shift = jnp.sum(jnp.square(new_c - c))
  return shift, shift <= tol_abs
