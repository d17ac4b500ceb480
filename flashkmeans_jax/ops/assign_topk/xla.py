"""Tiled XLA top-k assignment: the implementation off the GPU.

Walks tiles of points and, for each, tiles of centroids, merging a running
``[tile_n, k]`` list with every ``[tile_n, tile_k]`` score tile through one
``lax.top_k``; extra memory is ``O(tile_n * tile_k)`` whatever N and K are
(no ``[N, K]`` matrix).

Ties: ``lax.top_k`` is stable (equal values keep their input order) and the
running list, whose centroids all come from earlier tiles and are themselves
in (score, index) order, sits before the tile in its input, so equal scores
keep the lower centroid index first.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from flashkmeans_jax.core import metric as metric_mod
from flashkmeans_jax.core import precision as precision_mod
from flashkmeans_jax.core import tiling
from flashkmeans_jax.ops.assign import reference as assign_ref
from flashkmeans_jax.ops.assign import xla as assign_xla_mod
from flashkmeans_jax.ops.assign_topk import reference

__all__ = ["assign_topk_xla", "topk_scores_xla"]


def _smallest(s, k):
  # top_k finds the largest: negate (-(+inf) = -inf keeps unusable centroids last).
  neg, idx = lax.top_k(-s, k)
  return -neg, idx


def _topk_chunk(xb, c, bias, k, precision, tile_k, c_inverse=None):
  """Raw scores ``[rows, k]`` (ascending) and indices of the rows ``xb``."""
  x_op, row_factor = assign_ref.half_operands(xb, c, c_inverse)
  n_tiles = c.shape[0] // tile_k
  if n_tiles == 1:
    return _smallest(assign_ref.scores(x_op, c, bias, precision, row_factor), k)

  def body(j, carry):
    vals, idx = carry
    start = j * tile_k
    cj = lax.dynamic_slice_in_dim(c, start, tile_k)
    bj = lax.dynamic_slice_in_dim(bias, start, tile_k)
    s = assign_ref.scores(x_op, cj, bj, precision, row_factor)
    # One top_k over [running list | tile]: the list comes first, so on equal
    # scores its (lower) indices win.
    new_vals, pos = _smallest(jnp.concatenate([vals, s.astype(vals.dtype)], axis=1), k)
    from_list = pos < k
    tile_idx = start + pos - k
    list_idx = jnp.take_along_axis(idx, jnp.where(from_list, pos, 0), axis=1)
    return new_vals, jnp.where(from_list, list_idx, tile_idx)

  # The first tile starts the list (tile_k >= k), so unusable centroids
  # (+inf scores) fill it in index order when fewer than k are usable.
  first = assign_ref.scores(x_op, c[:tile_k], bias[:tile_k], precision, row_factor)
  return lax.fori_loop(1, n_tiles, body, _smallest(first, k))


def topk_scores_xla(x: jax.Array, centroids: jax.Array, k: int, *,
                    metric: str = "sqeuclidean", precision: Any = None,
                    tile_n: int | None = None,
                    tile_k: int | None = None) -> tuple[jax.Array, jax.Array]:
  """``(scores [N, k], indices int32[N, k])``: the k smallest raw scores
  (:mod:`flashkmeans_jax.core.metric`) of every point, ascending, equal scores
  by lower index. Scores are float32 (float64 for float64 points).

  ``tile_k`` centroids per tile (default: the assignment's XLA tiling,
  :func:`flashkmeans_jax.ops.assign.xla.xla_tiles`); the centroids are padded
  to whole tiles with ``+inf`` bias, which no real centroid ties with below
  its index.
  """
  n = x.shape[0]
  kk = centroids.shape[0]
  precision = precision_mod.resolve_precision(precision)
  dn, dk = assign_xla_mod.xla_tiles(n, kk)
  tile_k = max(k, min(kk, tile_k or dk))
  tile_n = min(n, tile_n or dn)
  c, bias, c_inverse = assign_ref.operands(x, centroids, metric, precision)
  k_pad = tiling.cdiv(kk, tile_k) * tile_k
  c = jnp.pad(c, ((0, k_pad - kk), (0, 0)))
  bias = jnp.pad(bias, (0, k_pad - kk), constant_values=jnp.inf)
  chunk = functools.partial(_topk_chunk, c=c, bias=bias, k=k, precision=precision,
                            tile_k=tile_k, c_inverse=c_inverse)
  if n <= tile_n:
    return chunk(x)

  def body(i, carry):
    # The last row tile is shifted back to end at N (it recomputes a few rows,
    # with the same result) rather than padded: x is never copied.
    start = jnp.minimum(i * tile_n, n - tile_n)
    parts = chunk(lax.dynamic_slice_in_dim(x, start, tile_n))
    return tuple(lax.dynamic_update_slice_in_dim(a, b, start, 0) for a, b in zip(carry, parts))

  acc = assign_ref.acc_dtype(x.dtype)
  init = (jnp.zeros((n, k), acc), jnp.zeros((n, k), jnp.int32))
  return lax.fori_loop(0, tiling.cdiv(n, tile_n), body, init)


# Compiled also when called eagerly, as the assignment's XLA path: eager and
# jit calls then round the scores and their finish the same way.
@functools.partial(jax.jit, static_argnames=("k", "metric", "precision", "tile_n", "tile_k"))
def assign_topk_xla(x: jax.Array, centroids: jax.Array, k: int, *,
                    metric: str = "sqeuclidean", precision: Any = None,
                    tile_n: int | None = None,
                    tile_k: int | None = None) -> tuple[jax.Array, jax.Array]:
  """``(indices int32[N, k], distances float32[N, k])`` of ``x [N, D]``
  against ``centroids [K, D]`` by the tiled XLA path (k <= K)."""
  vals, idx = topk_scores_xla(x, centroids, k, metric=metric, precision=precision,
                              tile_n=tile_n, tile_k=tile_k)
  return idx, reference.finish_topk(vals, metric_mod.row_sqnorm(x), metric)
