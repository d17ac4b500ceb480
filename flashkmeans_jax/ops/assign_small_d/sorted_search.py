"""D = 1: the exact nearest centroid by a sorted-centroid search (XLA ops).

sqeuclidean: the centroids of each problem are sorted once (stable, so equal
values keep their original order and the first of each run is its lowest
index); every point finds its two sorted neighbours by a branchless binary
search (``ceil(log2(K + 1))`` gathers, unrolled so XLA fuses them into one
pass) and keeps the nearer one, compared exactly: ``c_hi - x < x - c_lo`` is
``c_lo + c_hi < 2x``, and ``c_lo + c_hi = s + e`` exactly (TwoSum), so the
comparison of ``s`` with ``2x`` decides unless they are equal, and then the
sign of ``e`` does. An exact tie goes to the lower original index. Cost
``O(K log K)`` per problem plus ``O(N log K)``, against ``O(N K)`` for any
scan over the centroids.

dot and cosine need no sort: the best centroid of a point is the same for
every point of one sign (:func:`flashkmeans_jax.ops.assign_small_d.reference.sign_1d_key`),
so three per-problem arg-extrema serve all points.

The results are those of :func:`...reference.assign_small_d_reference` (its
module docstring states the contract), bit for bit.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from flashkmeans_jax.core import metric as metric_mod
from flashkmeans_jax.core import tiling
from flashkmeans_jax.ops.assign_small_d import reference

__all__ = ["search_1d", "lower_bound"]


def _take(a, i):
  # Every index here is in range by construction: no clamping or fill logic.
  return jnp.take_along_axis(a, i, axis=-1, mode="promise_in_bounds",
                             wrap_negative_indices=False)


def lower_bound(sorted_vals: jax.Array, v: jax.Array) -> jax.Array:
  """How many entries of each row of ``sorted_vals [B, K]`` (ascending) are
  ``< v [B, M]``: ``int32 [B, M]`` in ``[0, K]``.

  Branchless: the row is padded with ``+inf`` to a power of two ``P > K``, and
  ``log2 P`` halving steps each probe one entry; the last entry is padding,
  never below a finite ``v``, so no final correction is needed.
  """
  b, k = sorted_vals.shape
  p = tiling.next_pow2(k + 1)
  padded = jnp.pad(sorted_vals, ((0, 0), (0, p - k)), constant_values=jnp.inf)
  pos = jnp.zeros(v.shape, jnp.int32)
  step = p // 2
  while step >= 1:
    probe = _take(padded, pos + (step - 1))
    pos = jnp.where(probe < v, pos + step, pos)
    step //= 2
  return pos


def _nearest_sorted(xv, cv, usable):
  """Exact nearest centroid (sqeuclidean) of ``xv [B, N]`` among ``cv [B, K]``."""
  k = cv.shape[-1]
  key = jnp.where(usable, cv, jnp.inf)  # unusable centroids sort last
  order = jnp.argsort(key, axis=-1, stable=True).astype(jnp.int32)
  sv = _take(key, order)
  # Lowest original index of each run of equal values: the run's first entry.
  first = _take(order, lower_bound(sv, sv))
  n_usable = jnp.sum(usable, axis=-1, dtype=jnp.int32)[:, None]
  pos = lower_bound(sv, xv)  # sv[pos - 1] < x <= sv[pos]
  lo = jnp.maximum(pos - 1, 0)
  hi = jnp.minimum(pos, k - 1)
  c_lo, c_hi = _take(sv, lo), _take(sv, hi)
  f_lo, f_hi = _take(first, lo), _take(first, hi)
  has_lo, has_hi = pos > 0, pos < n_usable
  s, e = reference.two_sum(c_lo, c_hi)
  t = 2.0 * xv
  hi_closer = (s < t) | ((s == t) & (e < 0))
  tie = (s == t) & (e == 0)
  pick_hi = has_hi & (~has_lo | hi_closer | (tie & (f_hi < f_lo)))
  labels = jnp.where(pick_hi, f_hi, jnp.where(has_lo, f_lo, 0))
  diff = xv - jnp.where(pick_hi, c_hi, c_lo)
  best = jnp.where(has_lo | has_hi, diff * diff, jnp.inf)
  return labels, best


def _best_by_sign(xv, cv, usable, metric):
  """Exact best centroid (dot, cosine) of ``xv [B, N]`` among ``cv [B, K]``."""
  v = cv if metric == "dot" else jnp.sign(cv)
  i_hi = jnp.argmax(jnp.where(usable, v, -jnp.inf), axis=-1).astype(jnp.int32)[:, None]
  i_lo = jnp.argmin(jnp.where(usable, v, jnp.inf), axis=-1).astype(jnp.int32)[:, None]
  i_first = jnp.argmax(usable, axis=-1).astype(jnp.int32)[:, None]
  labels = jnp.where(xv > 0, i_hi, jnp.where(xv < 0, i_lo, i_first))
  cb = _take(cv, labels)
  if metric == "dot":
    best = 0.0 - xv * cb
  else:
    xs = jnp.sign(xv)
    best = jnp.where(xs == 0, 1.0, 1.0 - xs * jnp.sign(cb)).astype(xv.dtype)
  return labels, jnp.where(jnp.any(usable, axis=-1, keepdims=True), best, jnp.inf)


def search_1d(x: jax.Array, centroids: jax.Array, *, metric: str) -> tuple[jax.Array, jax.Array]:
  """Exact D=1 assignment of a batch.

  Args:
    x: ``[B, N, 1]`` points (any float dtype).
    centroids: ``[B, K, 1]``, cast to ``x.dtype``.
    metric: ``"sqeuclidean"``, ``"cosine"`` or ``"dot"``.

  Returns:
    ``labels int32[B, N]`` and ``dist float32[B, N]``.
  """
  acc = reference.acc_dtype(x.dtype)
  _, bias = metric_mod.prepare_centroids(centroids, metric, x.dtype)
  usable = jnp.isfinite(bias)
  cv = centroids.astype(x.dtype).astype(acc)[..., 0]
  xv = x.astype(acc)[..., 0]
  if metric == "sqeuclidean":
    labels, best = _nearest_sorted(xv, cv, usable)
  else:
    labels, best = _best_by_sign(xv, cv, usable, metric)
  bad = ~jnp.isfinite(xv)
  return (jnp.where(bad, 0, labels).astype(jnp.int32),
          jnp.where(bad, jnp.nan, best).astype(jnp.float32))
