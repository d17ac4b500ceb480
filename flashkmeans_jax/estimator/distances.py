"""``transform``'s distances: every point to every centroid, tile by tile.

The squared Euclidean distance is summed from direct differences
``sum_d (x_d - c_d)^2`` rather than expanded as ``|x|^2 - 2 x.c + |c|^2``: the
expansion cancels catastrophically for nearby pairs (a centroid's distance
to itself came out near 1e-3 instead of 0), while the direct sum is exact
for equal rows and accurate to a few float32 roundings relative to the
distance itself. Cosine distances are ``|u - v|^2 / 2`` of the unit rows,
for the same reason (``1 - cos`` rounds to about 1e-7 for equal rows), and
exactly 0 for a row equal to the centroid. The
work is ``N * K * D`` multiply-adds off the matrix units, which the host
copy of the ``[N, K]`` result outweighs for the shapes ``transform`` serves.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from flashkmeans_jax.estimator import rows as rows_mod

__all__ = ["TRANSFORM_TILE_BYTES", "distance_tile", "pairwise_distances_tiled"]

# Bytes of float32 distances one transform tile may hold on the device.
TRANSFORM_TILE_BYTES = 16 * 1024 * 1024


def _unit(a):
  norm = jnp.sqrt(jnp.sum(a * a, axis=-1, keepdims=True))
  return a / jnp.where(norm > 0, norm, 1.0), norm[..., 0] > 0


def distance_tile(xb: jax.Array, c: jax.Array, metric: str, sqrt: bool) -> jax.Array:
  """float32 ``[T, K]`` distances from ``xb [T, D]`` to ``c [K, D]`` (see the module)."""
  xf = xb.astype(jnp.float32)
  cf = c.astype(jnp.float32)
  if metric == "dot":
    return -jnp.matmul(xf, cf.T, precision=jax.lax.Precision.HIGHEST)
  if metric == "cosine":
    (xu, xok), (cu, cok) = _unit(xf), _unit(cf)
    half = 0.5 * jnp.sum(jnp.square(xu[:, None, :] - cu[None, :, :]), axis=-1)
    # XLA may round the two normalisations differently (they sit in
    # different fusions), so a row equal to a centroid is set to 0 exactly.
    same = jnp.all(xf[:, None, :] == cf[None, :, :], axis=-1)
    # A zero vector is at distance 1 from everything (assign's convention).
    return jnp.where(xok[:, None] & cok[None, :], jnp.where(same, 0.0, half), 1.0)
  d = jnp.sum(jnp.square(xf[:, None, :] - cf[None, :, :]), axis=-1)
  return jnp.sqrt(d) if sqrt else d


@functools.partial(jax.jit, static_argnames=("metric", "sqrt"))
def _host_tile(xb, c, metric, sqrt):
  return distance_tile(xb, c, metric, sqrt)


@functools.partial(jax.jit, static_argnames=("tile", "metric", "sqrt"))
def _device_tile(x, start, c, tile, metric, sqrt):
  # A traced start: one compilation serves every tile of x.
  return distance_tile(jax.lax.dynamic_slice_in_dim(x, start, tile), c, metric, sqrt)


def pairwise_distances_tiled(x: Any, centroids: Any, *, metric: str = "sqeuclidean",
                             sqrt: bool = False,
                             tile_bytes: int = TRANSFORM_TILE_BYTES) -> np.ndarray:
  """NumPy ``float32 [N, K]`` distances from ``x [N, D]`` to ``centroids [K, D]``.

  ``metric``: ``"sqeuclidean"`` (``sqrt=True``: Euclidean), ``"cosine"``
  (``1 - cos``, 1 for a zero vector) or ``"dot"`` (``-x.c``). At most
  ``tile_bytes`` of distances (one ``[tile, K]`` block) exist on the device
  at a time. Every tile has one shape: NumPy ``x`` is cut on the host (the
  last tile padded), a JAX ``x`` (padded to its row bucket) is sliced inside
  the compiled tile, so any N compiles at most once per bucket and a row's
  value never depends on N.
  """
  n = x.shape[0]
  k = centroids.shape[0]
  bucket = rows_mod.bucket_rows(n, int(np.prod(x.shape[1:])) * np.dtype(x.dtype).itemsize)
  tile = int(max(1, min(4096, tile_bytes // (4 * k), bucket)))
  out = np.empty((n, k), np.float32)
  c = jnp.asarray(centroids)
  if isinstance(x, jax.Array):
    xp = rows_mod.pad_rows(x, max(tile, bucket))
    last = xp.shape[0] - tile
    for start in range(0, n, tile):
      s = min(start, last)  # the last tile ends at the padded end
      block = np.asarray(_device_tile(xp, np.int32(s), c, tile, metric, sqrt))
      stop = min(n, start + tile)
      out[start:stop] = block[start - s:stop - s]
    return out
  for start in range(0, n, tile):
    stop = min(n, start + tile)
    xb = rows_mod.pad_rows(np.asarray(x[start:stop]), tile)
    out[start:stop] = np.asarray(_host_tile(xb, c, metric, sqrt))[:stop - start]
  return out
