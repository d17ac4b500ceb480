"""Tiled XLA cluster sums (``segment_sum`` tile by tile): the path off the GPU."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from flashkmeans_jax.ops.cluster_sums import reference

__all__ = ["cluster_sums_xla"]

XLA_TILE_BYTES = 32 * 1024 * 1024


def cluster_sums_xla(x: jax.Array, labels: jax.Array, k: int,
                     weights: jax.Array | None = None,
                     tile_n: int | None = None) -> tuple[jax.Array, jax.Array]:
  """Per-cluster float32 sums ``[K, D]`` and weight counts ``[K]`` with XLA.

  Walks tiles of points so that x is converted to float32 one tile at a time.
  """
  n, d = x.shape
  w = reference.weights_or_ones(weights, n)
  tile_n = min(n, tile_n or max(1024, XLA_TILE_BYTES // (4 * d)))
  if n <= tile_n:
    return reference.chunk_sums(x, labels, w, k)
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
    s, c = reference.chunk_sums(xb, lb, wb, k)
    return sums + s, counts + c

  init = (jnp.zeros((k, d), jnp.float32), jnp.zeros((k,), jnp.float32))
  return lax.fori_loop(0, n_chunks, body, init)
