"""Tiled XLA path of the small-D assignment (2 <= D < 16), no matmul.

A matmul of a tiny D runs far below the unit's rate (on the GPU its
contraction is padded to a tile of 16 or more) and writes each tile's scores
out before the argmin reads them back; here each tile's scores are a chain of D multiply-adds (:func:`reference.column_scores`)
that XLA fuses into the argmin's reduction, so nothing ``[N, K]`` is
materialised. Tiles of points (and, for large K, of centroids, with a
running minimum) bound the extra memory to ``O(tile_n * tile_k)`` whatever N
and K are; a batch ``[B, N, D]`` is a ``vmap`` of one problem.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax

from flashkmeans_jax.core import tiling
from flashkmeans_jax.ops.assign_small_d import reference

__all__ = ["assign_fma_xla", "TILE_ELEMENTS", "MAX_TILE_K"]

# Scores one tile may hold (float32: 32 MiB) and the widest centroid tile.
TILE_ELEMENTS = 1 << 23
MAX_TILE_K = 4096


def _clamped(i, tile, total):
  # The last tile is shifted back to end at `total` rather than padded: it
  # revisits rows (same result) and x is never copied.
  return jnp.minimum(i * tile, total - tile)


def _tile_argmin(xb, neg_c, bias, tile_k):
  k = neg_c.shape[0]
  if k <= tile_k:
    s = reference.column_scores(xb, neg_c, bias)
    arg = jnp.argmin(s, axis=-1).astype(jnp.int32)
    return jnp.min(s, axis=-1), arg

  def body(j, carry):
    best, arg = carry
    start = _clamped(j, tile_k, k)
    s = reference.column_scores(xb, lax.dynamic_slice_in_dim(neg_c, start, tile_k),
                                lax.dynamic_slice_in_dim(bias, start, tile_k))
    tb, ta = jnp.min(s, axis=-1), jnp.argmin(s, axis=-1).astype(jnp.int32) + start
    # Strict `<`: an equal score from a later tile (a higher index) loses;
    # a revisited column of the shifted last tile can only tie itself.
    better = tb < best
    return jnp.where(better, tb, best), jnp.where(better, ta, arg)

  n = xb.shape[0]
  init = (jnp.full((n,), jnp.inf, neg_c.dtype), jnp.zeros((n,), jnp.int32))
  return lax.fori_loop(0, tiling.cdiv(k, tile_k), body, init)


def _one_problem(x, neg_c, bias, metric, tile_n, tile_k):
  n = x.shape[0]

  def chunk(xb):
    best, arg = _tile_argmin(xb, neg_c, bias, tile_k)
    return reference.finish(best, arg, xb, metric)

  if n <= tile_n:
    return chunk(x)

  def body(i, carry):
    labels, dist = carry
    start = _clamped(i, tile_n, n)
    lb, db = chunk(lax.dynamic_slice_in_dim(x, start, tile_n))
    return (lax.dynamic_update_slice_in_dim(labels, lb, start, 0),
            lax.dynamic_update_slice_in_dim(dist, db, start, 0))

  init = (jnp.zeros((n,), jnp.int32), jnp.zeros((n,), jnp.float32))
  return lax.fori_loop(0, tiling.cdiv(n, tile_n), body, init)


@functools.partial(jax.jit, static_argnames=("metric", "tile_n", "tile_k"))
def assign_fma_xla(x: jax.Array, centroids: jax.Array, *, metric: str,
                   tile_n: int | None = None,
                   tile_k: int | None = None) -> tuple[jax.Array, jax.Array]:
  """Small-D assignment of a batch by XLA.

  Args:
    x: ``[B, N, D]`` points, ``D < 16`` (float16, bfloat16, float32, float64).
    centroids: ``[B, K, D]``, cast to ``x.dtype``.
    metric: ``"sqeuclidean"``, ``"cosine"`` or ``"dot"``.
    tile_n, tile_k: tile sizes (default: ``tile_n * tile_k <= TILE_ELEMENTS``).

  Returns:
    ``labels int32[B, N]`` and ``dist float32[B, N]``.
  """
  n, k = x.shape[1], centroids.shape[1]
  tile_k = min(k, tile_k or MAX_TILE_K)
  tile_n = min(n, tile_n or max(256, TILE_ELEMENTS // tile_k))
  neg_c, bias, _ = reference.operands(x, centroids, metric)
  one = functools.partial(_one_problem, metric=metric, tile_n=tile_n, tile_k=tile_k)
  return jax.vmap(one)(x, neg_c, bias)
