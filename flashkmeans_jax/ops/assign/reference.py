"""Dense plain-JAX reference of the assignment, and the score formulas every
implementation shares (:mod:`flashkmeans_jax.core.metric`).

Every implementation minimises ``bias[k] - x . c[k]`` over ``k`` with the
operands :func:`operands` prepares; :func:`assign_reference` builds the whole
``[N, K]`` score matrix (tests only), the XLA path and the Pallas kernel tile it.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from flashkmeans_jax.core import half_dot
from flashkmeans_jax.core import metric as metric_mod
from flashkmeans_jax.core import precision as precision_mod

__all__ = ["assign_reference", "assign_top2_reference", "operands", "scores",
           "half_operands", "argmin_tile", "top2_tile", "merge_top2", "acc_dtype"]


def acc_dtype(dtype):
  return jnp.float64 if dtype == jnp.float64 else jnp.float32


def operands(x, centroids, metric, precision):
  """``(c, bias, c_inverse)``: the centroids as the dot takes them.

  ``c_inverse`` is ``None`` unless float32 points run on 16-bit operands
  (:mod:`flashkmeans_jax._half_dot`); then ``c`` is the scaled 16-bit matrix
  and ``c_inverse`` the float32 power of two that undoes its scale.
  """
  c, bias = metric_mod.prepare_centroids(centroids, metric, x.dtype)
  op_dtype = half_dot.operand_dtype(x.dtype, precision)
  if op_dtype is None:
    return c, bias, None
  c_op, c_inverse = half_dot.scale_matrix(c, op_dtype)
  return c_op, bias, c_inverse


def scores(xb, c, bias, precision, row_factor=None):
  """``bias - xb . c^T`` in float32 (float64 for float64 input).

  ``row_factor`` is given when ``xb`` and ``c`` are scaled 16-bit operands
  (:func:`half_operands`): it undoes both scales on each row's dots.
  """
  acc = acc_dtype(xb.dtype)
  dims = (((1,), (1,)), ((), ()))
  if row_factor is not None:
    dots = lax.dot_general(xb, c, dims, preferred_element_type=jnp.float32)
    return bias[None, :] - dots * row_factor[:, None]
  dots = lax.dot_general(xb, c, dims, precision=precision, preferred_element_type=acc)
  return bias.astype(acc)[None, :] - dots


def half_operands(xb, c, c_inverse):
  """``(x operand, row factor)``: ``xb`` scaled once per row for the 16-bit
  dot against every centroid tile, or ``(xb, None)`` on the plain path."""
  if c_inverse is None:
    return xb, None
  x_op, x_inverse = half_dot.scale_rows(xb, c.dtype)
  return x_op, x_inverse * c_inverse


def argmin_tile(xb, c, bias, precision, row_factor=None, two_pass=False):
  """``(best, arg)`` of one score tile: the smallest score and its index
  (ties to the lowest; a NaN wins, at its first column, as in
  ``jnp.argmin``).

  ``two_pass`` computes the same pair with two plain reductions, ``min``
  and then the lowest column holding it (or a NaN), instead of ``argmin``'s
  variadic (value, index) reduction, which XLA's CPU backend does not
  vectorise: 100,000 x 256 scores took 100 ms that way against 50 ms
  (2-core x86, benchmarks/NOTES.md, eighth session).
  """
  s = scores(xb, c, bias, precision, row_factor)
  if two_pass:
    best = jnp.min(s, axis=1)
    cols = lax.broadcasted_iota(jnp.int32, s.shape, 1)
    # A NaN score wins at its first column (the row's min is NaN then).
    hit = (s == best[:, None]) | jnp.isnan(s)
    return best, jnp.min(jnp.where(hit, cols, s.shape[1]), axis=1)
  arg = jnp.argmin(s, axis=1).astype(jnp.int32)
  best = jnp.take_along_axis(s, arg[:, None], axis=1)[:, 0]
  return best, arg


def top2_tile(xb, c, bias, precision, row_factor=None):
  """``(best, arg, second)`` of one score tile: the smallest score, its index
  (ties to the lowest) and the smallest score of any other column (equal to
  ``best`` on a tie, ``+inf`` for a one-column tile)."""
  s = scores(xb, c, bias, precision, row_factor)
  arg = jnp.argmin(s, axis=1).astype(jnp.int32)
  best = jnp.take_along_axis(s, arg[:, None], axis=1)[:, 0]
  cols = lax.broadcasted_iota(jnp.int32, s.shape, 1)
  second = jnp.min(jnp.where(cols == arg[:, None], jnp.inf, s), axis=1)
  return best, arg, second


def merge_top2(a, b):
  """Top two of two ``(best, arg, second)`` triples; on equal bests ``a``'s
  (earlier, lower-index) argument stays, as in the strict ``<`` sweeps."""
  best_a, arg_a, second_a = a
  best_b, arg_b, second_b = b
  better = best_b < best_a
  best = jnp.where(better, best_b, best_a)
  arg = jnp.where(better, arg_b, arg_a)
  second = jnp.minimum(jnp.minimum(second_a, second_b), jnp.maximum(best_a, best_b))
  return best, arg, second


def assign_top2_reference(x: jax.Array, centroids: jax.Array, *, metric: str = "sqeuclidean",
                          precision: Any = None):
  """Dense reference of the top-2 assignment: ``(labels int32[N], best
  float32[N], second float32[N], xsq float32[N])``, the raw scores of the
  winner and the runner-up and the float32 ``||x||^2``."""
  precision = precision_mod.resolve_precision(precision)
  c, bias, c_inverse = operands(x, centroids, metric, precision)
  x_op, row_factor = half_operands(x, c, c_inverse)
  best, arg, second = top2_tile(x_op, c, bias, precision, row_factor)
  return arg, best, second, metric_mod.row_sqnorm(x).astype(best.dtype)


def assign_reference(x: jax.Array, centroids: jax.Array, *, metric: str = "sqeuclidean",
                     precision: Any = None) -> tuple[jax.Array, jax.Array]:
  """Dense plain-JAX reference: builds the full ``[N, K]`` score matrix."""
  precision = precision_mod.resolve_precision(precision)
  c, bias, c_inverse = operands(x, centroids, metric, precision)
  x_op, row_factor = half_operands(x, c, c_inverse)
  best, arg = argmin_tile(x_op, c, bias, precision, row_factor)
  dist = metric_mod.finish_distance(best, metric_mod.row_sqnorm(x).astype(best.dtype), metric)
  return arg, dist.astype(jnp.float32)
