"""Size-constrained (balanced) Lloyd: every cluster holds at most ``max_size``
points.

One iteration is a *capacity assignment* followed by the usual update
(:func:`~flashkmeans_jax.lloyd.stats.accumulate`,
:func:`~flashkmeans_jax.lloyd.centroids.finalize`). The capacity assignment
(:func:`capacity_assign`) is

1. the ``m`` nearest centroids of every point
   (:func:`flashkmeans_jax.ops.assign_topk.api.assign_topk`, no ``N x K``
   matrix);
2. deferred acceptance over those lists: every unplaced point proposes to its
   next candidate, every cluster keeps the ``max_size`` closest of the points
   it holds and the new proposers (ranks from one stable sort by (cluster,
   distance, index)) and rejects the rest, who move one step down their
   list. It stops when no rejected point has a candidate left, or after
   ``max_rounds`` rounds;
3. the points still unplaced (every candidate full, or the round cap hit) go,
   in batches of ``spill_rows``, to their nearest centroid *that still has
   room* (dense scores of the batch against all K, full clusters masked);
   each batch places at least one point, and room exists because
   ``K * max_size >= N``.

So ``sizes <= max_size`` holds by construction for every input, whatever
the rounds did. Only points of positive weight and finite coordinates count
(and are constrained); others (padding, NaN rows) take their nearest
centroid, as in plain Lloyd.

The balanced objective is not what plain Lloyd minimises: the inertia is
higher, and an iteration need not lower it (the assignment is a stable
matching, not the optimal transport); the loop stops on the centroid shift
(``tol``) or at ``max_iter``.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from flashkmeans_jax.core import metric as metric_mod
from flashkmeans_jax.core import precision as precision_mod
from flashkmeans_jax.core.options import LloydOptions
from flashkmeans_jax.core.types import KMeansResult, SeedingOptions
from flashkmeans_jax.lloyd import centroids as centroids_mod
from flashkmeans_jax.lloyd import loop
from flashkmeans_jax.lloyd import seeding
from flashkmeans_jax.lloyd import stats
from flashkmeans_jax.ops.assign_topk import api as topk_op

__all__ = ["BalanceOptions", "capacity_assign", "rank_in_cluster", "run", "run_balanced",
           "spill_rows"]


class BalanceOptions(NamedTuple):
  """Static options of the capacity assignment (hashable).

  Attributes:
    max_size: the most points (of positive weight) a cluster may hold.
    n_candidates: ``m``, the nearest centroids each point may be placed in
      before the spill step (``1 <= m <= min(K, 32)``).
    max_rounds: cap on the deferred-acceptance rounds.
  """

  max_size: int
  n_candidates: int = 8
  max_rounds: int = 32


def spill_rows(n: int, k: int) -> int:
  """Rows per spill batch: a ``[rows, K]`` float32 score block of at most
  64 MiB, at most 8192 rows and at most N."""
  return max(1, min(n, 8192, (1 << 24) // k))


def rank_in_cluster(group: jax.Array, dist: jax.Array) -> jax.Array:
  """``int32[N]``: the 0-based rank of every point among the points of its
  ``group`` by ascending ``dist`` (equal distances: lower index first).

  One stable sort of ``(group, dist, index)``; a point's rank is its sorted
  position minus the position where its group's run starts. Points with
  a sentinel group (e.g. ``K``: not taking part) rank among themselves.
  """
  n = group.shape[0]
  pos = jnp.arange(n, dtype=jnp.int32)
  g_sorted, _, perm = lax.sort((group.astype(jnp.int32), dist, pos), num_keys=2,
                               is_stable=True)
  starts = jnp.concatenate([jnp.ones((1,), bool), g_sorted[1:] != g_sorted[:-1]])
  run_start = lax.cummax(jnp.where(starts, pos, 0))
  return jnp.zeros((n,), jnp.int32).at[perm].set(pos - run_start)


def _counted(dist0: jax.Array, weights: jax.Array | None) -> jax.Array:
  # NaN/Inf rows have a NaN distance to every centroid (assign_topk's rule).
  ok = jnp.isfinite(dist0)
  return ok if weights is None else ok & (weights > 0)


def _deferred_acceptance(cand_idx, cand_dist, counted, k: int, bal: BalanceOptions):
  """``(held bool[N], ptr int32[N])``: who holds a place after the rounds,
  and at which of their candidates."""
  n, m = cand_idx.shape

  def pick(a, ptr):
    return jnp.take_along_axis(a, jnp.clip(ptr, 0, m - 1)[:, None], axis=1)[:, 0]

  def cond(state):
    r, _, _, again = state
    return again & (r < bal.max_rounds)

  def body(state):
    r, ptr, _, _ = state
    active = counted & (ptr < m)
    # Holders propose again where they sit; their place is only kept if they
    # still rank among the max_size closest (a closer newcomer displaces them).
    group = jnp.where(active, pick(cand_idx, ptr), k)
    rank = rank_in_cluster(group, pick(cand_dist, ptr))
    held = active & (rank < bal.max_size)
    rejected = active & ~held
    ptr = ptr + rejected.astype(jnp.int32)
    return r + 1, ptr, held, jnp.any(rejected & (ptr < m))

  state = (jnp.int32(0), jnp.zeros((n,), jnp.int32), jnp.zeros((n,), bool), jnp.bool_(True))
  _, ptr, held, _ = lax.while_loop(cond, body, state)
  return held, ptr


def _spill(x, c, labels, dist, left, room, metric: str, precision, rows: int):
  """Places every ``left`` point in its nearest centroid with ``room > 0``,
  ``rows`` points at a time; returns the new ``(labels, dist)``."""
  n, k = x.shape[0], c.shape[0]
  cb, bias = metric_mod.prepare_centroids(c, metric, x.dtype)
  prec = precision_mod.dot_precision(precision)

  def cond(state):
    return jnp.any(state[2])

  def body(state):
    labels, dist, left, room = state
    n_left = jnp.sum(left, dtype=jnp.int32)
    sel = jnp.nonzero(left, size=rows, fill_value=0)[0].astype(jnp.int32)
    valid = jnp.arange(rows, dtype=jnp.int32) < n_left
    xb = x[sel]
    s = bias[None, :] - lax.dot_general(xb, cb, (((1,), (1,)), ((), ())), precision=prec,
                                        preferred_element_type=jnp.float32)
    open_ = room > 0
    s = jnp.where(open_[None, :] & ~jnp.isnan(s), s, jnp.inf)
    tgt = jnp.argmin(s, axis=1).astype(jnp.int32)
    best = jnp.min(s, axis=1)
    # Every open centroid unusable (+inf scores): take the first open one, so
    # each batch still places a point.
    tgt = jnp.where(jnp.isinf(best), jnp.argmax(open_).astype(jnp.int32), tgt)
    d = metric_mod.finish_distance(best, metric_mod.row_sqnorm(xb), metric)
    rank = rank_in_cluster(jnp.where(valid, tgt, k), d)
    ok = valid & (rank < room[tgt])
    at = jnp.where(ok, sel, n)  # out of range: dropped
    labels = labels.at[at].set(tgt, mode="drop")
    dist = dist.at[at].set(d, mode="drop")
    left = left.at[at].set(False, mode="drop")
    room = room - jnp.zeros((k,), jnp.int32).at[jnp.where(ok, tgt, k)].add(1, mode="drop")
    return labels, dist, left, room

  labels, dist, _, _ = lax.while_loop(cond, body, (labels, dist, left, room))
  return labels, dist


def capacity_assign(x: jax.Array, c: jax.Array, weights: jax.Array | None,
                    opts: LloydOptions, bal: BalanceOptions) -> tuple[jax.Array, jax.Array]:
  """``(labels int32[N], dist float32[N])`` of ``x [N, D]`` to ``c [K, D]`` with
  at most ``bal.max_size`` counted points (positive weight, finite) per
  cluster; requires ``K * max_size >= N``. ``dist`` is the distance to the
  assigned centroid. Works under ``jit`` and ``vmap``."""
  n, k = x.shape[0], c.shape[0]
  m = min(bal.n_candidates, k)
  cand_idx, cand_dist = topk_op.assign_topk(x, c, m, opts.metric, opts.impl,
                                            opts.precision, None)
  counted = _counted(cand_dist[:, 0], weights)
  held, ptr = _deferred_acceptance(cand_idx, cand_dist, counted, k, bal)
  at = jnp.clip(ptr, 0, m - 1)[:, None]
  # Points that do not count take their nearest centroid.
  labels = jnp.where(held, jnp.take_along_axis(cand_idx, at, axis=1)[:, 0], cand_idx[:, 0])
  dist = jnp.where(held, jnp.take_along_axis(cand_dist, at, axis=1)[:, 0], cand_dist[:, 0])
  left = counted & ~held
  sizes = jnp.zeros((k,), jnp.int32).at[jnp.where(held, labels, k)].add(1, mode="drop")
  room = bal.max_size - sizes
  return lax.cond(jnp.any(left),
                  lambda: _spill(x, c, labels, dist, left, room, opts.metric, opts.precision,
                                 spill_rows(n, k)),
                  lambda: (labels, dist))


def _iterate(x, c0, weights, tol_abs, opts: LloydOptions, bal: BalanceOptions):
  """The balanced ``while_loop``; returns ``(n_iter, centroids float32[K, D],
  converged, inertia_history)`` like :func:`flashkmeans_jax.lloyd.loop.iterate`."""
  k = opts.k

  def cond(state):
    return (state[0] < opts.max_iter) & ~state[2]

  def body(state):
    i, c, _, hist = state
    labels, dist = capacity_assign(x, c, weights, opts, bal)
    total = stats.accumulate(x, labels, dist, weights, k, opts.impl)
    new_c, _ = centroids_mod.finalize(
        total, c, metric=opts.metric, empty=opts.empty,
        candidates=lambda: stats.farthest(x, labels, dist, weights, min(k, x.shape[0])))
    new_c = lax.optimization_barrier(new_c)  # one rounding for carry and shift
    _, done = stats.converged(new_c, c, tol_abs)
    return i + 1, new_c, done, hist.at[i].set(total.inertia)

  state = (jnp.int32(0), c0.astype(jnp.float32), jnp.bool_(False),
           jnp.full((opts.max_iter,), jnp.nan, jnp.float32))
  return lax.while_loop(cond, body, state)


def run(key: jax.Array, x: jax.Array, weights: jax.Array | None,
        init_array: jax.Array | None, opts: LloydOptions, bal: BalanceOptions,
        seed: SeedingOptions = SeedingOptions()) -> KMeansResult:
  """Seeding, the balanced loop and one final capacity assignment against the
  returned centroids (labels, inertia). Not compiled: see :func:`run_balanced`."""
  tol_abs = loop.data_tolerance(x, opts.tol, weights)
  weights, w_scale = loop.normalise_weights(weights)
  if opts.init == "array":
    c0 = init_array.astype(jnp.float32)
  else:
    c0 = seeding.init_centroids(key, x, opts.k, opts.init, weights, metric=opts.metric,
                                precision=precision_mod.resolve_precision("highest"),
                                seed=seed, impl=opts.impl)
  n_iter, c, done, hist = _iterate(x, c0, weights, tol_abs, opts, bal)
  labels, dist = capacity_assign(x, c, weights, opts, bal)
  inertia = stats.inertia(dist, weights)
  if w_scale is not None:
    inertia, hist = inertia * w_scale, hist * w_scale
  return KMeansResult(centroids=c.astype(x.dtype), labels=labels, inertia=inertia,
                      n_iter=n_iter, converged=done, inertia_history=hist)


@functools.partial(jax.jit, static_argnames=("opts", "bal", "seed"))
def run_balanced(key: jax.Array, x: jax.Array, weights: jax.Array | None,
                 init_array: jax.Array | None, opts: LloydOptions, bal: BalanceOptions,
                 seed: SeedingOptions = SeedingOptions()) -> KMeansResult:
  """:func:`run`, compiled once per shape, dtype and options."""
  return run(key, x, weights, init_array, opts, bal, seed)
