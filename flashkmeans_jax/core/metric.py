"""The three metrics as one score to minimise plus a per-point finish.

Every implementation of ``assign`` minimises

    score[n, k] = bias[k] - x[n] . c[k]

over k, with (c, bias) from :func:`prepare_centroids`, then turns the winning
score into the reported distance with :func:`finish_distance`:

==============  =====================  ===========================  =======================
metric          c                      bias                         distance
==============  =====================  ===========================  =======================
sqeuclidean     centroids              ||c||^2 / 2                  max(2 score + ||x||^2, 0)
cosine          centroids / ||c||      0                            1 + score / ||x||  (1 if x = 0)
dot             centroids              0                            score = -x . c
==============  =====================  ===========================  =======================

so the argmin never needs ||x||, and no implementation stores ||x||^2 in a
16-bit type (it overflows float16 above 65504).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax


def prepare_centroids(centroids: jax.Array, metric: str, dtype) -> tuple[jax.Array, jax.Array]:
  """Centroids cast to the points' dtype, and the float32 bias of each.

  Args:
    centroids: ``[K, D]``, any float dtype.
    metric: one of ``"sqeuclidean"``, ``"cosine"``, ``"dot"``.
    dtype: dtype of the points; the dot runs in it.

  Returns:
    ``c [K, D] dtype`` and ``bias float32[K]``. The bias is computed from the
    cast centroids so that score and distance describe the same centroid. A
    centroid with a NaN or Inf entry gets a zero row and bias ``+inf``: it wins
    no point (if every centroid is non-finite, points get label 0 and an
    infinite distance).
  """
  c32 = centroids.astype(jnp.float32)
  # A centroid holding NaN or Inf never wins a point (inside jit no error can
  # be raised): its row is zeroed and its bias made +inf below, so its score
  # is +inf whatever x is (a NaN score would win or lose at random).
  finite = jnp.all(jnp.isfinite(c32), axis=-1)
  c32 = jnp.where(finite[..., None], c32, 0.0)
  if metric == "cosine":
    # An explicit rsqrt and a product: XLA rewrites c / sqrt(s) into that form
    # inside fusions but not op by op, so the division would round the unit
    # rows (and their 16-bit casts) differently eagerly and under jit.
    sq = jnp.sum(c32 * c32, axis=-1, keepdims=True)
    c32 = jnp.where(sq > 0, c32 * lax.rsqrt(jnp.where(sq > 0, sq, 1.0)), 0.0)
  c = c32.astype(dtype)
  # A finite centroid that overflows the points' 16-bit dtype is as unusable.
  fits = jnp.all(jnp.isfinite(c.astype(jnp.float32)), axis=-1)
  finite = finite & fits
  c = jnp.where(fits[..., None], c, jnp.zeros((), c.dtype))
  if metric == "sqeuclidean":
    cf = c.astype(jnp.float32)
    bias = 0.5 * jnp.sum(cf * cf, axis=-1)
  else:
    bias = jnp.zeros(c.shape[:-1], jnp.float32)
  return c, jnp.where(finite, bias, jnp.inf)


def row_sqnorm(x: jax.Array) -> jax.Array:
  """float32 squared norm of every row of ``x [..., D]``."""
  xf = x.astype(jnp.float32)
  return jnp.sum(xf * xf, axis=-1)


def finish_distance(best: jax.Array, xsq: jax.Array, metric: str) -> jax.Array:
  """Distance (float32) from the winning score and the float32 ``||x||^2``."""
  if metric == "sqeuclidean":
    return jnp.maximum(2.0 * best + xsq, 0.0)
  if metric == "cosine":
    xnorm = jnp.sqrt(xsq)
    safe = jnp.where(xnorm > 0, xnorm, 1.0)
    return jnp.where(xnorm > 0, jnp.clip(1.0 + best / safe, 0.0, 2.0), 1.0)
  return best


def distance_to(x: jax.Array, c_rows: jax.Array, metric: str) -> jax.Array:
  """Direct float32 distance from each point to one centroid each.

  Args:
    x: ``[N, D]``; c_rows: ``[N, D]`` (the centroid paired with every point).

  Returns:
    ``float32[N]``, computed without the expansion (used by k-means++ and
    tests, where the direct form is more accurate).
  """
  xf = x.astype(jnp.float32)
  cf = c_rows.astype(jnp.float32)
  if metric == "sqeuclidean":
    d = xf - cf
    return jnp.sum(d * d, axis=-1)
  if metric == "cosine":
    xn = jnp.sqrt(jnp.sum(xf * xf, -1))
    cn = jnp.sqrt(jnp.sum(cf * cf, -1))
    denom = xn * cn
    cos = jnp.sum(xf * cf, -1) / jnp.where(denom > 0, denom, 1.0)
    return jnp.where(xn > 0, 1.0 - jnp.where(denom > 0, cos, 0.0), 1.0)
  return -jnp.sum(xf * cf, -1)
