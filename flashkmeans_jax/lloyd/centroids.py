"""New centroids from cluster statistics: division, cosine renormalisation and
the empty-cluster policy.

``"keep"``: an empty cluster keeps its previous centroid. ``"farthest"``: the
j-th empty cluster (by index) takes the j-th farthest usable point (by
distance to its own centroid), and that point leaves its old cluster's sums,
as scikit-learn does. The candidates come from
:func:`flashkmeans_jax.lloyd.stats.farthest`, so every driver relocates from
the same points.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
from jax import lax

from flashkmeans_jax.lloyd.stats import ClusterStats, Farthest

__all__ = ["finalize", "relocate_empty", "normalise_rows"]


def normalise_rows(c: jax.Array) -> tuple[jax.Array, jax.Array]:
  """``(c / ||c||, ||c|| > 0)`` row by row (zero rows stay zero)."""
  norm = jnp.sqrt(jnp.sum(c * c, axis=-1, keepdims=True))
  return c / jnp.where(norm > 0, norm, 1.0), norm[..., 0] > 0


def relocate_empty(sums: jax.Array, counts: jax.Array,
                   cand: Farthest) -> tuple[jax.Array, jax.Array]:
  """Sums and counts after moving each empty cluster onto a candidate.

  The j-th empty cluster takes candidate j (candidates are sorted farthest
  first); the candidate's weighted row leaves the cluster it was in. No
  candidate is used twice.
  """
  m = cand.dist.shape[0]
  empty = counts <= 0
  rank = jnp.cumsum(empty) - 1
  pick = jnp.clip(rank, 0, m - 1)
  valid = (empty & (rank < m) & jnp.isfinite(cand.dist[pick])
           & (cand.weights[pick] > 0))
  wc = jnp.where(valid, cand.weights[pick], 0.0)
  pts = cand.x[pick] * wc[:, None]
  old = cand.labels[pick]
  sums = sums.at[old].add(-pts)
  counts = counts.at[old].add(-wc)
  sums = jnp.where(valid[:, None], pts, sums)
  counts = jnp.where(valid, wc, counts)
  return sums, counts


def finalize(stats: ClusterStats, previous: jax.Array | None, *, metric: str,
             empty: str, candidates: Callable[[], Farthest] | None = None
             ) -> tuple[jax.Array, jax.Array]:
  """Centroids ``float32[K, D]`` and counts ``float32[K]`` (after relocation).

  Args:
    stats: totals over all rows (:class:`ClusterStats`).
    previous: ``[K, D]`` centroids of the last iteration, or ``None`` (an
      empty cluster then gets the zero vector).
    metric: ``"cosine"`` renormalises each mean (a zero mean keeps the
      previous centroid).
    empty: ``"keep"`` or ``"farthest"``.
    candidates: for ``"farthest"``, a function returning the relocation
      candidates; it is called only inside the branch taken when some
      cluster is empty, so in memory the top-k over all points runs only then.
  """
  sums, counts = stats.sums, stats.counts
  if empty == "farthest":
    if candidates is None:
      raise ValueError('empty="farthest" needs relocation candidates')
    sums, counts = lax.cond(jnp.any(counts <= 0),
                            lambda sc: relocate_empty(*sc, candidates()),
                            lambda sc: sc, (sums, counts))
  prev = jnp.zeros_like(sums) if previous is None else previous.astype(jnp.float32)
  has = counts > 0
  mean = sums / jnp.where(has, counts, 1.0)[:, None]
  if metric == "cosine":
    mean, nonzero = normalise_rows(mean)
    has = has & nonzero
  return jnp.where(has[:, None], mean, prev), counts
