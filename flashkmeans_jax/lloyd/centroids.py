"""New centroids from cluster statistics: division, cosine renormalisation and
the empty-cluster policy.

``"keep"``: an empty cluster keeps its previous centroid. ``"farthest"``: the
j-th empty cluster (by index) takes the j-th farthest usable point (by
distance to its own centroid), and that point leaves its old cluster's sums,
as scikit-learn does; a point sitting on its centroid (within the
assignment's rounding) or repeating a farther candidate is not usable, so
relocation ends on any data, duplicated points included. The candidates come from
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


def _repeats(rows: jax.Array) -> jax.Array:
  """``bool[M]``: row ``i`` equals an earlier row (exactly, ``-0.0 == 0.0``).

  The rows are sorted by a 32-bit hash of their bits (stable, so equal rows
  stay in index order) and each is compared with its neighbour: O(M log M +
  M * D) instead of all M^2 pairs. Distinct rows sharing a hash may sit
  between two equal ones and hide the repeat; that costs one wasted
  relocation, never termination (see :func:`relocate_empty`).
  """
  m, d = rows.shape
  bits = lax.bitcast_convert_type(rows + 0.0, jnp.uint32)
  mult = (jnp.arange(d, dtype=jnp.uint32) * jnp.uint32(2) + jnp.uint32(1)) * jnp.uint32(
      0x9E3779B1)
  h = jnp.sum((bits ^ (bits >> 15)) * mult[None, :], axis=1, dtype=jnp.uint32)
  hs, perm = lax.sort((h, jnp.arange(m, dtype=jnp.int32)), num_keys=1, is_stable=True)
  same = jnp.all(rows[perm][1:] == rows[perm][:-1], axis=1) & (hs[1:] == hs[:-1])
  return jnp.zeros((m,), bool).at[perm[1:]].set(same)


def relocate_empty(sums: jax.Array, counts: jax.Array, cand: Farthest,
                   previous: jax.Array | None = None,
                   metric: str = "sqeuclidean") -> tuple[jax.Array, jax.Array]:
  """Sums and counts after moving each empty cluster onto a candidate.

  A candidate is usable when it has positive weight and a finite distance,
  repeats no farther candidate (duplicated points: one location is never
  given to two clusters) and lies off its own centroid in ``previous``: its
  direct squared distance ``||x - c||^2`` (unit rows under ``"cosine"``)
  exceeds ``8 eps (||x||^2 + ||c||^2)``, the resolution of the assignment's
  expanded distances. A point closer than that already has a centre as far
  as the assignment can tell; relocating onto it would leave one of the two
  centres empty again and the run would move centres forever (issue 16).
  Without ``previous`` the assignment's distance must be > 0.

  The j-th empty cluster takes the j-th usable candidate (candidates are
  sorted farthest first); the candidate's weighted row leaves the cluster
  it was in. Every relocation then lowers the objective by more than the
  assignment's rounding, so relocations stop after finitely many steps.
  """
  m = cand.dist.shape[0]
  rep = normalise_rows(cand.x)[0] if metric == "cosine" else cand.x
  if previous is None:
    apart = cand.dist > 0
  else:
    own = previous.astype(jnp.float32)[cand.labels]
    gap = jnp.sum(jnp.square(rep - own), axis=-1)
    scale = jnp.sum(rep * rep, axis=-1) + jnp.sum(own * own, axis=-1)
    apart = gap > 8 * float(jnp.finfo(jnp.float32).eps) * scale
  usable = jnp.isfinite(cand.dist) & (cand.weights > 0) & apart & ~_repeats(rep)
  # Usable candidates first, each group still farthest first.
  slot = jnp.argsort(~usable, stable=True)
  empty = counts <= 0
  rank = jnp.cumsum(empty) - 1
  pick = slot[jnp.clip(rank, 0, m - 1)]
  valid = empty & (rank < jnp.sum(usable))
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
                            lambda sc: relocate_empty(*sc, candidates(), previous, metric),
                            lambda sc: sc, (sums, counts))
  prev = jnp.zeros_like(sums) if previous is None else previous.astype(jnp.float32)
  has = counts > 0
  mean = sums / jnp.where(has, counts, 1.0)[:, None]
  if metric == "cosine":
    mean, nonzero = normalise_rows(mean)
    has = has & nonzero
  return jnp.where(has[:, None], mean, prev), counts
