"""Seeding: ``"random"`` (distinct points), greedy ``"k-means++"`` and ``"k-means||"``
(scalable k-means++).

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

from flashkmeans_jax.core.types import SeedingOptions
from flashkmeans_jax.lloyd.combine import Combine, LOCAL
from flashkmeans_jax.lloyd.draws import (dist_to_candidates, draw_proportional, gather_rows,
                                         usable_rows)
from flashkmeans_jax.lloyd.recluster import greedy_recluster, recluster_batched
from flashkmeans_jax.ops.assign import api as assign_op

__all__ = ["init_random", "init_kmeans_plusplus", "init_centroids", "usable_rows",
           "draw_proportional", "gather_rows", "dist_to_candidates",
           "parallel_candidates", "init_kmeans_parallel", "round_capacity"]


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
  return gather_rows(win // kl, idx[win % kl], x_safe, combine)


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
  first = gather_rows(s0, i0, x_safe, combine)  # [1, D]
  centers = jnp.zeros((k, x.shape[1]), jnp.float32).at[0].set(first[0])
  closest = dist_to_candidates(x_safe, xsq, first, seed_metric, precision)[:, 0]

  def body(c, carry):
    centers, closest = carry
    # If every point already sits on a centroid the potential is 0: any draw
    # is as good, and the loop goes on.
    s, idx = draw_proportional(jax.random.fold_in(key_loop, c), w * closest, trials, combine)
    cand = gather_rows(s, idx, x_safe, combine)  # [L, D]
    d = jnp.minimum(closest[:, None],
                    dist_to_candidates(x_safe, xsq, cand, seed_metric, precision))
    cand_pot = combine.sum(jnp.sum(w[:, None] * d, axis=0))
    best = jnp.argmin(cand_pot)
    return centers.at[c].set(cand[best]), d[:, best]

  centers, _ = lax.fori_loop(1, k, body, (centers, closest))
  return centers


# k-means||' defaults: l = k / 4 draws a round, 8 rounds (2 k candidates
# in all, two assignment passes' worth of distances). On blobs where seeding
# decides which clusters are found (CPU, N=65536, K=1024, D=32, 64 points a
# centroid, 6 keys; benchmarks/NOTES.md, tenth session) this matched greedy
# k-means++'s inertia after 20 iterations (separated: 2.178e6 against
# 2.242e6; overlapping: 3.434e7 against 3.428e7, within one spread), as
# (0.5, 4) and (2, 5) did, at a fifth of (2, 5)'s distance work; fewer
# rounds found fewer blobs ((0.5, 2): 7.98e6), smaller l ((0.1, 12): 3.32e6)
# too.
DEFAULT_OVERSAMPLING = 0.25
DEFAULT_ROUNDS = 8


def round_capacity(ell: float, n_total: int) -> int:
  """Rows kept per k-means|| round: the expected ``ell`` draws plus eight
  standard deviations (a sum of Bernoulli draws has variance <= ``ell``),
  at most all ``n_total`` rows."""
  return int(min(n_total, math.ceil(ell + 8.0 * math.sqrt(ell) + 8)))


def parallel_candidates(key: jax.Array, x: jax.Array, k: int,
                        weights: jax.Array | None = None, *, metric: str = "sqeuclidean",
                        oversampling_factor: float = DEFAULT_OVERSAMPLING,
                        rounds: int = DEFAULT_ROUNDS,
                        impl: str = "xla", precision: Any = None, config: Any = None,
                        combine: Combine = LOCAL) -> tuple[jax.Array, jax.Array]:
  """The weighted candidates of k-means|| (Bahmani et al., 2012).

  One point drawn with probability proportional to its weight; then
  ``rounds`` rounds in which every point joins independently with
  probability ``min(1, l * w * D^2 / phi)`` (``l = oversampling_factor * k``,
  ``D`` its distance to the nearest candidate so far, ``phi`` the potential
  ``sum w * D^2``). Each round keeps at most :func:`round_capacity` rows (a
  uniform subset of the drawn ones if more were drawn, which the capacity
  makes rare); its distances come from the assignment op, so no N x L
  matrix is formed. Each candidate is weighted by the weight of the points
  nearest to it.

  Returns ``(candidates float32[C, D], weights float32[C])`` with ``C = 1 +
  rounds * capacity``; unused slots are zero rows of weight 0.
  """
  seed_metric = "cosine" if metric == "cosine" else "sqeuclidean"
  n, d = x.shape
  w = jnp.ones((n,), jnp.float32) if weights is None else weights.astype(jnp.float32)
  w, _, x_safe = usable_rows(x, w)
  ell = float(oversampling_factor) * k
  cap = round_capacity(ell, n * combine.n_blocks)
  cap_local = min(cap, n)
  total = 1 + rounds * cap
  key0, key_rounds = jax.random.split(key)

  def nearest_of(rows):
    return assign_op.assign(x_safe, rows, seed_metric, impl, precision, config)

  s0, i0 = draw_proportional(key0, w, 1, combine)
  first = gather_rows(s0, i0, x_safe, combine)
  # NaN slots win no point in the assignment op until a round fills them.
  cand = jnp.full((total, d), jnp.nan, jnp.float32).at[0].set(first[0])
  _, closest = nearest_of(first)
  nearest = jnp.zeros((n,), jnp.int32)

  def round_(r, carry):
    cand, closest, nearest = carry
    kr = jax.random.fold_in(jax.random.fold_in(key_rounds, r), combine.block_index())
    k_draw, k_keep = jax.random.split(kr)
    wd = w * closest
    phi = combine.sum(jnp.sum(wd))
    p = jnp.where(phi > 0, jnp.minimum(1.0, ell * wd / jnp.where(phi > 0, phi, 1.0)), 0.0)
    drawn = jax.random.uniform(k_draw, (n,)) < p
    # A random priority among the drawn rows: the capacity keeps a uniform
    # subset of them, over all blocks.
    prio = jnp.where(drawn, jax.random.uniform(k_keep, (n,)), -jnp.inf)
    vals, idx = lax.top_k(prio, cap_local)
    gvals = combine.gather(vals).reshape(-1)
    top, win = lax.top_k(gvals, cap)
    rows = gather_rows(win // cap_local, idx[win % cap_local], x_safe, combine)
    rows = jnp.where((top > -jnp.inf)[:, None], rows, jnp.nan)
    cand = lax.dynamic_update_slice(cand, rows, (1 + r * cap, 0))
    lab, dist = nearest_of(rows)
    closer = dist < closest
    return (cand, jnp.where(closer, dist, closest),
            jnp.where(closer, 1 + r * cap + lab, nearest))

  cand, _, nearest = lax.fori_loop(0, rounds, round_, (cand, closest, nearest))
  cw = combine.sum(jax.ops.segment_sum(w, nearest, num_segments=total))
  held = jnp.all(jnp.isfinite(cand), axis=-1)
  return jnp.where(held[:, None], cand, 0.0), jnp.where(held, cw, 0.0)


def init_kmeans_parallel(key: jax.Array, x: jax.Array, k: int,
                         weights: jax.Array | None = None, *, metric: str = "sqeuclidean",
                         seed: SeedingOptions = SeedingOptions(), precision: Any = None,
                         impl: str = "xla", config: Any = None,
                         combine: Combine = LOCAL) -> jax.Array:
  """k-means|| seeds ``float32[k, D]``: :func:`parallel_candidates`, then the
  weighted candidates reclustered into ``k`` (replicated on every block, so
  that step needs no communication): by greedy k-means++ when that is cheap
  (:func:`greedy_recluster`), else by :func:`recluster_batched`. Defaults:
  ``oversampling_factor`` :data:`DEFAULT_OVERSAMPLING` (``l = k / 4``),
  :data:`DEFAULT_ROUNDS` rounds, ``n_local_trials`` ``2 + floor(log k)``."""
  key_c, key_pp = jax.random.split(key)
  cand, cw = parallel_candidates(
      key_c, x, k, weights, metric=metric,
      oversampling_factor=seed.oversampling_factor or DEFAULT_OVERSAMPLING,
      rounds=seed.init_rounds or DEFAULT_ROUNDS,
      impl=impl, precision=precision, config=config, combine=combine)
  if greedy_recluster(k, cand.shape[0], x.shape[1], seed.n_local_trials):
    return init_kmeans_plusplus(key_pp, cand, k, cw, metric=metric,
                                n_local_trials=seed.n_local_trials, precision=precision)
  return recluster_batched(key_pp, cand, cw, k, metric=metric, precision=precision, impl=impl,
                           config=config, n_local_trials=seed.n_local_trials, dtype=x.dtype)


def init_centroids(key: jax.Array, x: jax.Array, k: int, init: str,
                   weights: jax.Array | None = None, *, metric: str = "sqeuclidean",
                   precision: Any = None, combine: Combine = LOCAL,
                   seed: SeedingOptions = SeedingOptions(), impl: str = "xla",
                   config: Any = None) -> jax.Array:
  """A named seeding strategy (``"random"``, ``"k-means++"`` or
  ``"k-means||"``); ``float32[k, D]``.

  ``seed`` carries ``n_local_trials`` and k-means||' ``oversampling_factor``
  and ``init_rounds``; ``impl``/``config`` run k-means||' distance passes
  through the assignment op (its rounds compare all N points with thousands
  of candidates, too many for a dense matrix).
  """
  if init == "random":
    return init_random(key, x, k, weights, combine=combine)
  if init == "k-means||":
    return init_kmeans_parallel(
        key, x, k, weights, metric=metric, seed=seed, precision=precision, impl=impl,
        config=config, combine=combine)
  return init_kmeans_plusplus(key, x, k, weights, metric=metric,
                              n_local_trials=seed.n_local_trials, precision=precision,
                              combine=combine)
