"""Plain-JAX reference of the per-cluster sums (one ``segment_sum``)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["cluster_sums_reference", "chunk_sums", "weights_or_ones"]


def weights_or_ones(weights, n, batch=()):
  return jnp.ones((*batch, n), jnp.float32) if weights is None else weights.astype(jnp.float32)


def chunk_sums(xb, lb, wb, k):
  """Sums and counts of one tile ``xb [T, D]`` with labels ``lb`` and float32
  weights ``wb``; non-finite rows get weight 0."""
  xf = xb.astype(jnp.float32)
  ok = jnp.all(jnp.isfinite(xf), axis=-1)
  w = jnp.where(ok, wb, 0.0)
  contrib = jnp.where(ok[:, None], xf * w[:, None], 0.0)
  sums = jax.ops.segment_sum(contrib, lb, num_segments=k)
  counts = jax.ops.segment_sum(w, lb, num_segments=k)
  return sums, counts


def cluster_sums_reference(x: jax.Array, labels: jax.Array, k: int,
                     weights: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
  """Plain-JAX reference of the cluster sums: one unsorted ``segment_sum``.

  Returns ``sums float32[K, D]`` and ``counts float32[K]``; rows holding NaN or
  Inf count as weight 0 (the rule every implementation follows)."""
  w = weights_or_ones(weights, x.shape[0])
  return chunk_sums(x, labels, w, k)
