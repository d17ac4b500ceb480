"""Seeding: ``"random"`` (distinct points) and greedy ``"k-means++"``.

Written once against a :class:`~flashkmeans_jax.lloyd.combine.Combine`, so the
same code seeds in memory (one block) and on row-sharded data inside
``shard_map`` without ever gathering the points: a draw proportional to
``w * D^2`` first picks a block by its total (gathered: P scalars), then a row
inside it; the chosen rows reach every block as a sum of masked rows
(O(L * D)); candidate potentials are summed over blocks.

Rows holding NaN or Inf, and rows of weight 0, are never drawn while other
rows remain (``"random"``) or at all (``"k-means++"``, where they add nothing
to the potential).

No argument checks here: the public functions validate
(:mod:`flashkmeans_jax.core.validation`).
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from flashkmeans_jax.lloyd.combine import Combine, LOCAL

__all__ = ["init_random", "init_kmeans_plusplus", "init_centroids", "usable_rows",
           "draw_proportional",
           "dist_to_candidates"]


def usable_rows(x: jax.Array, w: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
  """``(w, ||x||^2, x)`` with rows holding NaN/Inf neutralised (weight 0, norm 0,
  zero row): such points never become seeds and add nothing to the potential."""
  xf_sq = jnp.sum(jnp.square(x.astype(jnp.float32)), -1)
  finite = jnp.isfinite(xf_sq)
  return (jnp.where(finite, w, 0.0), jnp.where(finite, xf_sq, 0.0),
          jnp.where(finite[:, None], x, jnp.zeros((), x.dtype)))


def dist_to_candidates(x: jax.Array, xsq: jax.Array, cand: jax.Array, metric: str,
                       precision: Any) -> jax.Array:
  """float32 ``[N, L]`` distances from every point to L candidate rows."""
  cf = cand.astype(jnp.float32)
  dots = lax.dot_general(x, cand.astype(x.dtype), (((1,), (1,)), ((), ())),
                         precision=precision, preferred_element_type=jnp.float32)
  if metric == "cosine":
    xn = jnp.sqrt(xsq)[:, None]
    cn = jnp.sqrt(jnp.sum(cf * cf, -1))[None, :]
    denom = xn * cn
    return jnp.where(denom > 0, 1.0 - dots / jnp.where(denom > 0, denom, 1.0), 1.0)
  csq = jnp.sum(cf * cf, -1)
  return jnp.maximum(xsq[:, None] - 2.0 * dots + csq[None, :], 0.0)


def _rows(owner: jax.Array, local_idx: jax.Array, x: jax.Array, combine: Combine) -> jax.Array:
  """``float32 [L, D]``: row ``local_idx[l]`` of block ``owner[l]``, on every block."""
  mine = owner == combine.block_index()
  rows = x[local_idx].astype(jnp.float32)
  return combine.sum(jnp.where(mine[:, None], rows, 0.0))


def draw_proportional(key: jax.Array, wd: jax.Array, num: int, combine: Combine):
  """``num`` independent draws with P(row) = wd / sum(wd) over all blocks.

  Returns (owner block, local index) per draw: the block is found on the
  gathered block totals, the row on the block's own cumulative sum.
  """
  n = wd.shape[0]
  cum = jnp.cumsum(wd)
  tots = combine.gather(cum[-1])  # [P]
  incl = jnp.cumsum(tots)
  excl = incl - tots
  r = jax.random.uniform(key, (num,)) * incl[-1]
  s = jnp.searchsorted(incl, r, side="right")
  last_block = combine.n_blocks - 1 - jnp.argmax((tots > 0)[::-1])
  s = jnp.where(s >= combine.n_blocks, last_block, s)  # rounding at the top end
  idx = jnp.searchsorted(cum, r - excl[combine.block_index()])
  last_local = n - 1 - jnp.argmax((wd > 0)[::-1])
  return s, jnp.clip(jnp.minimum(idx, last_local), 0, n - 1)


def init_random(key: jax.Array, x: jax.Array, k: int, weights: jax.Array | None = None,
                *, combine: Combine = LOCAL) -> jax.Array:
  """``k`` distinct rows drawn without replacement, weighted when given.

  Gumbel top-k over every block, then a top-k of the P * min(k, n) winners.
  Rows of weight 0 or holding NaN/Inf are drawn only when fewer than ``k``
  rows are left, and then come back as zero rows, so seeds are always finite.
  Returns ``float32[k, D]``.
  """
  n = x.shape[0]
  w = jnp.ones((n,), jnp.float32) if weights is None else weights.astype(jnp.float32)
  w, _, x_safe = usable_rows(x, w)
  g = jax.random.gumbel(jax.random.fold_in(key, combine.block_index()), (n,), jnp.float32)
  # log(0) = -inf would put zero-weight rows last; -1e30 does the same and
  # keeps the draw defined when fewer than k rows have weight.
  score = jnp.where(w > 0, jnp.log(jnp.where(w > 0, w, 1.0)) + g, -1e30 + g)
  kl = min(k, n)
  vals, idx = lax.top_k(score, kl)
  _, win = lax.top_k(combine.gather(vals).reshape(-1), k)
  return _rows(win // kl, idx[win % kl], x_safe, combine)


def init_kmeans_plusplus(key: jax.Array, x: jax.Array, k: int,
                         weights: jax.Array | None = None, *, metric: str = "sqeuclidean",
                         n_local_trials: int | None = None, precision: Any = None,
                         combine: Combine = LOCAL) -> jax.Array:
  """Greedy k-means++ (Arthur & Vassilvitskii; scikit-learn's variant).

  Each new centroid is the best of ``n_local_trials`` (default ``2 +
  floor(log k)``) candidates drawn with probability proportional to ``weight *
  D(x)^2``; "best" minimises the resulting potential. ``"dot"`` seeds with
  squared Euclidean distances (a negative score is no sampling weight).
  ``precision`` is the float32 dot precision of the distances (a resolved
  ``lax.Precision``). Returns ``float32[k, D]``.
  """
  seed_metric = "cosine" if metric == "cosine" else "sqeuclidean"
  trials = n_local_trials or 2 + int(math.log(k))
  n = x.shape[0]
  w = jnp.ones((n,), jnp.float32) if weights is None else weights.astype(jnp.float32)
  w, xsq, x_safe = usable_rows(x, w)
  key0, key_loop = jax.random.split(key)

  s0, i0 = draw_proportional(key0, w, 1, combine)
  first = _rows(s0, i0, x_safe, combine)  # [1, D]
  centers = jnp.zeros((k, x.shape[1]), jnp.float32).at[0].set(first[0])
  closest = dist_to_candidates(x_safe, xsq, first, seed_metric, precision)[:, 0]

  def body(c, carry):
    centers, closest = carry
    # If every point already sits on a centroid the potential is 0: any draw
    # is as good, and the loop goes on.
    s, idx = draw_proportional(jax.random.fold_in(key_loop, c), w * closest, trials, combine)
    cand = _rows(s, idx, x_safe, combine)  # [L, D]
    d = jnp.minimum(closest[:, None],
                    dist_to_candidates(x_safe, xsq, cand, seed_metric, precision))
    cand_pot = combine.sum(jnp.sum(w[:, None] * d, axis=0))
    best = jnp.argmin(cand_pot)
    return centers.at[c].set(cand[best]), d[:, best]

  centers, _ = lax.fori_loop(1, k, body, (centers, closest))
  return centers


def init_centroids(key: jax.Array, x: jax.Array, k: int, init: str,
                   weights: jax.Array | None = None, *, metric: str = "sqeuclidean",
                   precision: Any = None, combine: Combine = LOCAL) -> jax.Array:
  """A named seeding strategy (``"random"`` or ``"k-means++"``); ``float32[k, D]``."""
  if init == "random":
    return init_random(key, x, k, weights, combine=combine)
  return init_kmeans_plusplus(key, x, k, weights, metric=metric, precision=precision,
                              combine=combine)
