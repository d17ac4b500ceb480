"""Dense plain-JAX reference of the small-D assignment, and the pieces every
implementation of it shares.

For ``D >= 2`` every implementation minimises the score of
:mod:`flashkmeans_jax.core.metric`, ``bias[k] - x . c[k]``, evaluated as
``bias[k] + sum_d x[d] * (-c[k, d])`` in float32 (float64 for float64
points), the columns added in order ``d = 0 .. D-1`` (one FMA each on the
GPU); the distance is :func:`flashkmeans_jax.core.metric.finish_distance`
of the winning score, as in ``ops.assign``.

For ``D = 1`` the labels are exact: the nearest centroid in real arithmetic
of the inputs as rounded to the points' dtype, ties to the lowest index.

* sqeuclidean: the exact ``|x - c|`` as a pair ``(|s|, sign(s) e)`` with
  ``s + e = x - c`` (Knuth's TwoSum, exact in round-to-nearest), compared
  lexicographically; the distance is ``fl(fl(x - c)^2)``.
* dot: the largest ``c`` for ``x > 0``, the smallest for ``x < 0``;
  distance ``-x c``.
* cosine: every unit centroid is ``sign(c)`` (0 for ``c = 0``): the first
  centroid of the best sign; distance ``1 - sign(x) sign(c)``, exactly
  ``0``, ``1`` or ``2``.
* ``x = 0`` (dot, cosine): every centroid scores the same, label 0 (the first
  usable one); distance 0 (dot) or 1 (cosine).

Shared conventions (``ops.assign``'s): centroids are cast to the points'
dtype; a centroid holding NaN/Inf, or overflowing a 16-bit dtype, is
unusable and wins no point (all unusable: label 0, distance ``+inf``, as
``docs/errors.md`` states, for every metric); a point holding NaN/Inf gets label 0 and distance NaN.
Exactness assumes ``|x|, |c| < 2^127`` (``2x`` and ``c + c'`` must not
overflow), beyond which every squared distance overflows anyway.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from flashkmeans_jax.core import metric as metric_mod

__all__ = ["assign_small_d_reference", "acc_dtype", "operands", "column_scores",
           "finish", "two_sum", "exact_1d_key", "sign_1d_key"]


def acc_dtype(dtype):
  """float64 for float64 points, else float32."""
  return jnp.float64 if jnp.dtype(dtype) == jnp.float64 else jnp.float32


def operands(x, centroids, metric):
  """``(neg_c, bias, usable)``: ``-c [..., K, D]`` in the accumulation dtype
  (centroids cast to ``x.dtype`` first, unit rows for cosine), ``bias
  [..., K]`` (``+inf`` for an unusable centroid) and ``usable bool[..., K]``."""
  c, bias = metric_mod.prepare_centroids(centroids, metric, x.dtype)
  acc = acc_dtype(x.dtype)
  return -c.astype(acc), bias.astype(acc), jnp.isfinite(bias)


def column_scores(xb, neg_c, bias):
  """``bias + sum_d x[:, d] (-c[:, d])``: ``[n, K]`` scores of ``xb [n, D]``
  against ``neg_c [K, D]``, columns added in order (the kernel's order)."""
  xf = xb.astype(neg_c.dtype)
  s = bias[None, :]
  for j in range(xb.shape[-1]):
    s = s + xf[:, j, None] * neg_c[None, :, j]
  return s


def finish(best, arg, x, metric):
  """``(labels int32, dist float32)`` from the winning score and index of
  every row of ``x [..., n, D]``; non-finite rows get label 0 and NaN."""
  acc = best.dtype
  xsq = jnp.sum(jnp.square(x.astype(acc)), axis=-1)
  # A winning +inf score means no usable centroid: distance +inf (cosine's
  # finish would clip it to 2).
  dist = jnp.where(best == jnp.inf, jnp.inf, metric_mod.finish_distance(best, xsq, metric))
  bad = ~jnp.isfinite(xsq)
  return (jnp.where(bad, 0, arg).astype(jnp.int32),
          jnp.where(bad, jnp.nan, dist).astype(jnp.float32))


def two_sum(a, b):
  """``(s, e)`` with ``s = fl(a + b)`` and ``s + e = a + b`` exactly (Knuth;
  round to nearest, no overflow). XLA does not reassociate floating point,
  so the error term survives compilation."""
  s = a + b
  bp = s - a
  ap = s - bp
  return s, (a - ap) + (b - bp)


def exact_1d_key(xv, cv):
  """``(|s|, sign(s) e)`` with ``s + e = x - c`` exactly: ordering these
  pairs lexicographically orders the exact ``|x - c|`` (``fl`` is monotone,
  and ``s = 0`` only when ``x = c``)."""
  s, e = two_sum(xv, -cv)
  return jnp.abs(s), jnp.where(s < 0, -e, e)


def sign_1d_key(xv, cv, metric):
  """Exact D=1 score order of dot and cosine: ``-sign(x) c`` (dot) or
  ``-sign(x) sign(c)`` (cosine); equal for every centroid when ``x = 0``."""
  v = cv if metric == "dot" else jnp.sign(cv)
  return -jnp.sign(xv) * v


def _first_min(key, mask):
  """Lowest index of the minimum of ``key`` over ``mask`` along the last axis."""
  m = jnp.min(jnp.where(mask, key, jnp.inf), axis=-1, keepdims=True)
  return mask & (key == m)


def _reference_1d(x, centroids, metric):
  acc = acc_dtype(x.dtype)
  c, bias = metric_mod.prepare_centroids(centroids, metric, x.dtype)
  usable = jnp.isfinite(bias)[None, :]
  xv = x.astype(acc)[:, :1]  # [n, 1]
  cv = centroids.astype(x.dtype).astype(acc)[:, 0][None, :]  # [1, K]
  if metric == "sqeuclidean":
    primary, secondary = exact_1d_key(xv, cv)
    cand = _first_min(primary, usable)
    cand = _first_min(secondary, cand)
  else:
    cand = _first_min(sign_1d_key(xv, cv, metric), usable)
  arg = jnp.argmax(cand, axis=-1).astype(jnp.int32)  # first True; 0 if none usable
  cb = cv[0][arg]
  if metric == "sqeuclidean":
    diff = xv[:, 0] - cb
    best = diff * diff
  elif metric == "dot":
    best = 0.0 - xv[:, 0] * cb
  else:
    xs = jnp.sign(xv[:, 0])
    best = jnp.where(xs == 0, 1.0, 1.0 - xs * jnp.sign(cb)).astype(acc)
  none = ~jnp.any(usable)
  best = jnp.where(none, jnp.inf, best)
  bad = ~jnp.isfinite(xv[:, 0])
  return (jnp.where(bad, 0, arg).astype(jnp.int32),
          jnp.where(bad, jnp.nan, best).astype(jnp.float32))


def assign_small_d_reference(x: jax.Array, centroids: jax.Array, *,
                             metric: str = "sqeuclidean") -> tuple[jax.Array, jax.Array]:
  """Dense reference (tests only: builds the ``[N, K]`` scores).

  Args:
    x: ``[N, D]`` points, ``D < 16``; centroids: ``[K, D]``.
    metric: ``"sqeuclidean"``, ``"cosine"`` or ``"dot"``.

  Returns:
    ``labels int32[N]`` and ``dist float32[N]`` (module docstring).
  """
  if x.shape[-1] == 1:
    return _reference_1d(x, centroids, metric)
  neg_c, bias, _ = operands(x, centroids, metric)
  s = column_scores(x, neg_c, bias)
  arg = jnp.argmin(s, axis=-1).astype(jnp.int32)
  best = jnp.take_along_axis(s, arg[:, None], axis=-1)[:, 0]
  return finish(best, arg, x, metric)
