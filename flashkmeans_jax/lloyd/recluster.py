"""k-means||' last step at large k: its weighted candidates reclustered into
``k`` seeds by batched greedy k-means++ (:func:`recluster_batched`), when
greedy k-means++ on them (:func:`greedy_recluster`) is too much work.

No argument checks here: the public functions validate
(:mod:`flashkmeans_jax.core.validation`).
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from flashkmeans_jax.lloyd.draws import dist_to_candidates
from flashkmeans_jax.ops.assign import api as assign_op

__all__ = ["GREEDY_RECLUSTER_MAX_WORK", "greedy_recluster", "recluster_batched"]


# Greedy k-means++ on the candidates is k sequential steps, each scoring
# n_local_trials draws against all C candidates: k * C * trials * D
# multiply-adds in k dependent launches. Below this many it is cheap (under a
# second on a GPU, and the small problems of tests and notebooks); above it
# (K=65,536 from 2^22 points: C ~ 670,000, about 1e17 FLOP, hours) the
# candidates are reclustered by batched greedy k-means++ instead.
GREEDY_RECLUSTER_MAX_WORK = 1 << 34
# In that case: rounds that each choose about k / rounds seeds at once (the
# same k * C * trials * D work as the greedy step, in ~rounds launches
# instead of k). Rejection within a round can leave slots open, so up to
# RECLUSTER_MAX_ROUNDS rounds run. The seeds are candidates, as greedy
# k-means++ leaves them: two weighted Lloyd iterations over the candidates
# afterwards (an earlier version) changed nothing on separated blobs and
# cost 1.9 % of inertia after 20 iterations on standard-normal data (CPU,
# N=65536, K=1024, D=128: 7.545e6 against 7.401e6; k-means++ 7.407e6), as
# each seed moved to the weighted mean of far-apart candidates.
RECLUSTER_ROUNDS = 32
RECLUSTER_MAX_ROUNDS = 4 * RECLUSTER_ROUNDS
# Elements of one block of the dense candidates x trials distance matrix
# that scores the trials (float32: 512 MiB).
RECLUSTER_GAIN_BLOCK = 1 << 27


def greedy_recluster(k: int, n_candidates: int, d: int, n_local_trials: int | None) -> bool:
  """Whether k-means|| reclusters its ``n_candidates`` weighted candidates with
  greedy k-means++ (``True``) or with :func:`recluster_batched` (``False``):
  by the greedy step's work, :data:`GREEDY_RECLUSTER_MAX_WORK`."""
  trials = n_local_trials or 2 + int(math.log(k))
  return k * n_candidates * trials * d <= GREEDY_RECLUSTER_MAX_WORK


def _gumbel_scores(key: jax.Array, weight: jax.Array) -> jax.Array:
  """``log(weight) + Gumbel`` (``-inf`` where the weight is 0): the top m of
  these are m draws proportional to ``weight`` without replacement."""
  g = jax.random.gumbel(key, weight.shape, jnp.float32)
  return jnp.where(weight > 0, jnp.log(jnp.where(weight > 0, weight, 1.0)) + g, -jnp.inf)


def recluster_batched(key: jax.Array, cand: jax.Array, cw: jax.Array, k: int, *,
                      metric: str = "sqeuclidean", precision: Any = None, impl: str = "xla",
                      config: Any = None, n_local_trials: int | None = None,
                      dtype: Any = jnp.float32, rounds: int = RECLUSTER_ROUNDS,
                      max_rounds: int = RECLUSTER_MAX_ROUNDS) -> jax.Array:
  """``k`` seeds ``float32[k, D]`` from weighted candidates ``cand [C, D]``,
  ``cw float32[C]`` (zero weight: an unused slot) by batched greedy k-means++.

  The first seed is a candidate drawn proportionally to ``cw``. Each round
  then fills up to ``m = ceil(k / rounds)`` slots:

  1. ``m * trials`` distinct candidates are drawn proportionally to ``cw *
     D`` (``D`` the distance to the nearest seed so far, squared for
     ``"sqeuclidean"``), dealt into ``m`` groups of ``trials``
     (``n_local_trials``, default ``2 + floor(log k)``);
  2. each group keeps the draw of largest gain, ``sum_c cw_c * max(0, D_c -
     d(c, draw))``: greedy k-means++'s lowest potential, against the seeds
     before the round;
  3. the winners, by decreasing gain, are kept with probability ``min(1,
     min_j d(winner, winner_j) / D_winner)`` over the winners before them:
     the test of rejection sampling (a draw made proportionally to the stale
     ``D`` and kept with probability ``D' / D`` is a draw proportional to
     ``D' <= D``), with ``D'`` counting every earlier winner of the round as
     chosen. Without it two winners of one round often land in the same
     uncovered blob.

  Rounds go on until ``k`` seeds are chosen, no candidate is left at a
  positive distance, or ``max_rounds``; open slots are then filled by plain
  draws proportional to ``cw * D`` (repeats of chosen candidates, or zero
  rows of the padding, once no candidate is left at a positive distance).
  Every seed is a candidate. Nearest-seed distances come from the
  assignment op against each round's winners only; the gains from blocks
  of a dense candidates x draws matrix in ``dtype`` (float32 accumulation):
  they only rank draws, and the work is that of the greedy step.
  """
  seed_metric = "cosine" if metric == "cosine" else "sqeuclidean"
  if cand.shape[0] < k:  # tiny oversampling: zero-weight slots, never drawn first
    cand = jnp.pad(cand, ((0, k - cand.shape[0]), (0, 0)))
    cw = jnp.pad(cw, (0, k - cw.shape[0]))
  c_total, d = cand.shape
  m = min(-(-k // rounds), c_total)
  trials = max(1, min(n_local_trials or 2 + int(math.log(k)), c_total // m))
  csq = jnp.sum(cand * cand, -1)
  cand_lo = cand.astype(dtype)
  block = max(1, min(m * trials, RECLUSTER_GAIN_BLOCK // c_total))
  n_blocks = -(-(m * trials) // block)
  key0, key_rounds, key_fill = jax.random.split(key, 3)

  def nearest(rows):
    return assign_op.assign(cand, rows, seed_metric, impl, precision, config)[1]

  def gains(rows, closest):
    padded = jnp.pad(rows, ((0, n_blocks * block - rows.shape[0]), (0, 0)))

    def one(r):
      dist = dist_to_candidates(cand_lo, csq, r, seed_metric, precision)
      return jnp.sum(cw[:, None] * jnp.maximum(closest[:, None] - dist, 0.0), 0)

    return lax.map(one, padded.reshape(n_blocks, block, d)).reshape(-1)[:rows.shape[0]]

  first = jnp.argmax(_gumbel_scores(key0, cw))
  seeds = jnp.zeros((k, d), jnp.float32).at[0].set(cand[first])
  closest = nearest(cand[first][None])
  earlier = jnp.arange(m)[None, :] < jnp.arange(m)[:, None]

  def cond(carry):
    r, count, _, closest = carry
    return (count < k) & (r < max_rounds) & jnp.any(cw * closest > 0)

  def round_(carry):
    r, count, seeds, closest = carry
    k_draw, k_keep = jax.random.split(jax.random.fold_in(key_rounds, r))
    score, idx = lax.top_k(_gumbel_scores(k_draw, cw * closest), m * trials)
    gain = jnp.where(score > -jnp.inf, gains(cand[idx], closest), -1.0)
    # Ranks j, j + m, j + 2m, ... form group j: each group mixes strong and
    # weak draws alike.
    group_gain = gain.reshape(trials, m)
    best = jnp.argmax(group_gain, 0)
    win_gain = jnp.take_along_axis(group_gain, best[None], 0)[0]
    win = jnp.take_along_axis(idx.reshape(trials, m), best[None], 0)[0]
    by_gain = jnp.argsort(-win_gain)
    win, win_gain = win[by_gain], win_gain[by_gain]
    rows = cand[win]
    pair = dist_to_candidates(rows, csq[win], rows, seed_metric, precision)
    near = jnp.min(jnp.where(earlier, pair, jnp.inf), axis=1)
    accept = jnp.minimum(1.0, near / jnp.maximum(closest[win], jnp.finfo(jnp.float32).tiny))
    keep = (win_gain > 0) & (jax.random.uniform(k_keep, (m,)) < accept)
    slot = jnp.where(keep, count + jnp.cumsum(keep) - 1, k)
    keep = keep & (slot < k)
    seeds = seeds.at[slot].set(rows, mode="drop")
    # Rejected winners are NaN rows, which win no candidate.
    new = nearest(jnp.where(keep[:, None], rows, jnp.nan))
    return r + 1, count + jnp.sum(keep), seeds, jnp.minimum(closest, new)

  _, count, seeds, closest = lax.while_loop(
      cond, round_, (jnp.int32(0), jnp.int32(1), seeds, closest))
  fill = lax.top_k(_gumbel_scores(key_fill, cw * closest), k)[1]
  open_slot = jnp.arange(k) - count
  return jnp.where((open_slot >= 0)[:, None], cand[fill[jnp.clip(open_slot, 0, k - 1)]], seeds)
