"""Tiled XLA cluster sums (``segment_sum`` tile by tile): the path off the GPU."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from flashkmeans_jax.ops.cluster_sums import reference

__all__ = ["cluster_sums_xla", "unmasked_chunk_sums"]

XLA_TILE_BYTES = 32 * 1024 * 1024


def unmasked_chunk_sums(xb, lb, wb, k, weighted=True):
  """:func:`reference.chunk_sums` without its mask of non-finite rows: equal
  to it, bit for bit, whenever every sum comes out finite (a NaN or Inf
  entry makes its cluster's sum NaN or Inf, with any weight)."""
  xf = xb.astype(jnp.float32)
  contrib = xf * wb[:, None] if weighted else xf
  return jax.ops.segment_sum(contrib, lb, num_segments=k), jax.ops.segment_sum(
      wb, lb, num_segments=k)


def _chunk_sums(xb, lb, wb, k, weighted):
  if jax.default_backend() != "cpu":
    return reference.chunk_sums(xb, lb, wb, k)
  # On a CPU the mask (a row reduction, then a select) costs a second pass
  # over x, as long as the scatter itself (10.2 against 4.6 ms at N=200,000,
  # D=32, K=64): sum unmasked, and redo the tile masked only when a sum is
  # not finite. The branch is a real one on the CPU (no host round-trip).
  sums, counts = unmasked_chunk_sums(xb, lb, wb, k, weighted)
  return lax.cond(jnp.all(jnp.isfinite(sums)), lambda: (sums, counts),
                  lambda: reference.chunk_sums(xb, lb, wb, k))


def cluster_sums_xla(x: jax.Array, labels: jax.Array, k: int,
                     weights: jax.Array | None = None,
                     tile_n: int | None = None) -> tuple[jax.Array, jax.Array]:
  """Per-cluster float32 sums ``[K, D]`` and weight counts ``[K]`` with XLA.

  Walks tiles of points so that x is converted to float32 one tile at a time.
  """
  n, d = x.shape
  w = reference.weights_or_ones(weights, n)
  weighted = weights is not None
  tile_n = min(n, tile_n or max(1024, XLA_TILE_BYTES // (4 * d)))
  if n <= tile_n:
    return _chunk_sums(x, labels, w, k, weighted)
  n_chunks = -(-n // tile_n)

  def body(i, carry):
    sums, counts = carry
    start = jnp.minimum(i * tile_n, n - tile_n)
    # The clamped last tile overlaps the one before: zero the weight of rows
    # that tile already counted.
    fresh = start + jnp.arange(tile_n) >= i * tile_n
    xb = lax.dynamic_slice_in_dim(x, start, tile_n)
    lb = lax.dynamic_slice_in_dim(labels, start, tile_n)
    wb = jnp.where(fresh, lax.dynamic_slice_in_dim(w, start, tile_n), 0.0)
    # The clamped tile's zeroed weights must reach the sums: weighted.
    s, c = _chunk_sums(xb, lb, wb, k, True)
    return sums + s, counts + c

  init = (jnp.zeros((k, d), jnp.float32), jnp.zeros((k,), jnp.float32))
  return lax.fori_loop(0, n_chunks, body, init)
