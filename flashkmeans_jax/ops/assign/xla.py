"""Tiled XLA assignment: the implementation off the GPU (and for tiny problems).

Walks tiles of points and, for large K, tiles of centroids with a running
(min, argmin), so extra memory is ``O(tile_n * tile_k)`` whatever N is.
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
from flashkmeans_jax.ops.assign import reference

__all__ = ["assign_xla", "xla_tiles", "XLA_TILE_BYTES", "XLA_MAX_TILE_K"]

# Bytes of float32 scores one XLA tile may hold; keeps peak extra memory
# O(tile) whatever N and K are. On a GPU few large tiles are best (each trip
# of the loop costs a host round-trip); on a CPU a tile that stays in cache
# is: at N=100,000, K=256, D=64 one assignment took 150 ms with 32 MiB tiles
# and 50 ms with 2-4 MiB ones (2-core x86, benchmarks/NOTES.md).
XLA_TILE_BYTES = 32 * 1024 * 1024
XLA_CPU_TILE_BYTES = 4 * 1024 * 1024
XLA_MAX_TILE_K = 4096
TWO_PASS_MIN_K = 64


def _on_cpu() -> bool:
  # Trace-time choice: the XLA path runs where JAX's default backend is.
  return jax.default_backend() == "cpu"


def _clamped_start(i, tile, total):
  # The last tile is shifted back to end at `total` instead of being padded:
  # it revisits a few rows, which is harmless (same result / strict `<` keeps
  # the earlier, lower index), and no copy of x is ever made.
  return jnp.minimum(i * tile, total - tile)


def _assign_chunk(xb, c, bias, metric, precision, tile_k, c_inverse=None):
  k = c.shape[0]
  x_op, row_factor = reference.half_operands(xb, c, c_inverse)
  # Below 64 columns a tile's argmin is cheap, and the two-pass form ran 2-4x
  # slower inside an outer jit (1e6 x 8 points, K=16: 115-145 against 27-52
  # ms per kmeans iteration; K >= 64 gained in both modes; NOTES.md).
  two_pass = _on_cpu() and min(k, tile_k) >= TWO_PASS_MIN_K
  if k <= tile_k:
    best, arg = reference.argmin_tile(x_op, c, bias, precision, row_factor, two_pass)
  else:
    n_tiles = tiling.cdiv(k, tile_k)

    def body(j, carry):
      best, arg = carry
      start = _clamped_start(j, tile_k, k)
      cj = lax.dynamic_slice_in_dim(c, start, tile_k)
      bj = lax.dynamic_slice_in_dim(bias, start, tile_k)
      tbest, targ = reference.argmin_tile(x_op, cj, bj, precision, row_factor, two_pass)
      better = tbest < best
      return jnp.where(better, tbest, best), jnp.where(better, targ + start, arg)

    acc = reference.acc_dtype(xb.dtype)
    init = (jnp.full(xb.shape[:1], jnp.inf, acc), jnp.zeros(xb.shape[:1], jnp.int32))
    best, arg = lax.fori_loop(0, n_tiles, body, init)
  dist = metric_mod.finish_distance(best, metric_mod.row_sqnorm(xb).astype(best.dtype), metric)
  return arg, dist.astype(jnp.float32)


def _top2_chunk(xb, c, bias, precision, tile_k, c_inverse=None):
  k = c.shape[0]
  x_op, row_factor = reference.half_operands(xb, c, c_inverse)
  if k <= tile_k:
    best, arg, second = reference.top2_tile(x_op, c, bias, precision, row_factor)
  else:
    def body(j, carry):
      start = _clamped_start(j, tile_k, k)
      # The shifted last tile revisits columns already seen: their bias is
      # made +inf so that no centroid is counted twice (it would pose as its
      # own runner-up).
      seen = start + jnp.arange(tile_k) < j * tile_k
      bj = jnp.where(seen, jnp.inf, lax.dynamic_slice_in_dim(bias, start, tile_k))
      cj = lax.dynamic_slice_in_dim(c, start, tile_k)
      tb, ta, ts = reference.top2_tile(x_op, cj, bj, precision, row_factor)
      return reference.merge_top2(carry, (tb, ta + start, ts))

    acc = reference.acc_dtype(xb.dtype)
    inf = jnp.full(xb.shape[:1], jnp.inf, acc)
    best, arg, second = lax.fori_loop(0, tiling.cdiv(k, tile_k), body,
                                      (inf, jnp.zeros(xb.shape[:1], jnp.int32), inf))
  xsq = metric_mod.row_sqnorm(xb).astype(best.dtype)
  return arg, best, second, xsq


def xla_tiles(n: int, k: int, tile_bytes: int | None = None) -> tuple[int, int]:
  """(tile_n, tile_k) for the XLA path: one float32 score tile <= tile_bytes
  (default: :data:`XLA_CPU_TILE_BYTES` on a CPU, :data:`XLA_TILE_BYTES`
  elsewhere)."""
  if tile_bytes is None:
    tile_bytes = XLA_CPU_TILE_BYTES if _on_cpu() else XLA_TILE_BYTES
  tile_k = min(k, XLA_MAX_TILE_K)
  tile_n = max(256, tile_bytes // (4 * tile_k))
  return min(n, tile_n), tile_k


# Compiled also when called eagerly: the unit rows of cosine centroids (and
# their 16-bit casts) then round as they do under an outer jit and in the
# Pallas wrapper, so eager and jit calls give the same bits.
@functools.partial(jax.jit, static_argnames=("metric", "precision", "tile_n", "tile_k",
                                             "runner_up"))
def assign_xla(x: jax.Array, centroids: jax.Array, *, metric: str = "sqeuclidean",
               precision: Any = None, tile_n: int | None = None,
               tile_k: int | None = None, runner_up: bool = False) -> tuple[jax.Array, ...]:
  """Tiled XLA assignment (no Pallas). Shapes and results as :func:`assign`.

  Walks tiles of ``tile_n`` points and, when K is large, tiles of ``tile_k``
  centroids with a running (min, argmin), so extra memory is
  ``O(tile_n * tile_k)`` whatever N is.

  With ``runner_up`` it returns the raw top two instead: ``(labels int32[N],
  best float32[N], second float32[N], xsq float32[N])``, the winning and
  runner-up scores (:mod:`flashkmeans_jax.core.metric`) and ``||x||^2``.
  """
  n = x.shape[0]
  k = centroids.shape[0]
  precision = precision_mod.resolve_precision(precision)
  dn, dk = xla_tiles(n, k)
  tile_n = min(n, tile_n or dn)
  tile_k = min(k, tile_k or dk)
  c, bias, c_inverse = reference.operands(x, centroids, metric, precision)
  if runner_up:
    chunk = functools.partial(_top2_chunk, c=c, bias=bias, precision=precision,
                              tile_k=tile_k, c_inverse=c_inverse)
  else:
    chunk = functools.partial(_assign_chunk, c=c, bias=bias, metric=metric,
                              precision=precision, tile_k=tile_k, c_inverse=c_inverse)
  if n <= tile_n:
    return chunk(x)

  def body(i, carry):
    start = _clamped_start(i, tile_n, n)
    parts = chunk(lax.dynamic_slice_in_dim(x, start, tile_n))
    return tuple(lax.dynamic_update_slice_in_dim(a, b, start, 0) for a, b in zip(carry, parts))

  acc = reference.acc_dtype(x.dtype) if runner_up else jnp.float32
  init = (jnp.zeros((n,), jnp.int32),) + tuple(
      jnp.zeros((n,), acc) for _ in range(3 if runner_up else 1))
  return lax.fori_loop(0, tiling.cdiv(n, tile_n), body, init)
