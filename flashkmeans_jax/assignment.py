"""``assign``: nearest centroid of every point, without an N x K matrix.

Public function, its tiled XLA implementation and its dense reference. The
Pallas kernel lives in :mod:`flashkmeans_jax.kernels.flash_assign`.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from flashkmeans_jax import _checks
from flashkmeans_jax import _dispatch
from flashkmeans_jax import _half_dot
from flashkmeans_jax import _metric

__all__ = ["assign", "assign_reference", "assign_xla"]

# Bytes of float32 scores one XLA tile may hold; keeps peak extra memory
# O(tile) whatever N and K are.
_XLA_TILE_BYTES = 32 * 1024 * 1024
_XLA_MAX_TILE_K = 4096


def _acc_dtype(dtype):
  return jnp.float64 if dtype == jnp.float64 else jnp.float32


def _operands(x, centroids, metric, precision):
  """``(c, bias, c_inverse)``: the centroids as the dot takes them.

  ``c_inverse`` is ``None`` unless float32 points run on 16-bit operands
  (:mod:`flashkmeans_jax._half_dot`); then ``c`` is the scaled 16-bit matrix
  and ``c_inverse`` the float32 power of two that undoes its scale.
  """
  c, bias = _metric.prepare_centroids(centroids, metric, x.dtype)
  op_dtype = _half_dot.operand_dtype(x.dtype, precision)
  if op_dtype is None:
    return c, bias, None
  c_op, c_inverse = _half_dot.scale_matrix(c, op_dtype)
  return c_op, bias, c_inverse


def _scores(xb, c, bias, precision, row_factor=None):
  """``bias - xb . c^T`` in float32 (float64 for float64 input).

  ``row_factor`` is given when ``xb`` and ``c`` are scaled 16-bit operands
  (:func:`_half_operands`): it undoes both scales on each row's dots.
  """
  acc = _acc_dtype(xb.dtype)
  dims = (((1,), (1,)), ((), ()))
  if row_factor is not None:
    dots = lax.dot_general(xb, c, dims, preferred_element_type=jnp.float32)
    return bias[None, :] - dots * row_factor[:, None]
  dots = lax.dot_general(xb, c, dims, precision=precision, preferred_element_type=acc)
  return bias.astype(acc)[None, :] - dots


def _half_operands(xb, c, c_inverse):
  """``(x operand, row factor)``: ``xb`` scaled once per row for the 16-bit
  dot against every centroid tile, or ``(xb, None)`` on the plain path."""
  if c_inverse is None:
    return xb, None
  x_op, x_inverse = _half_dot.scale_rows(xb, c.dtype)
  return x_op, x_inverse * c_inverse


def _argmin_tile(xb, c, bias, precision, row_factor=None):
  s = _scores(xb, c, bias, precision, row_factor)
  arg = jnp.argmin(s, axis=1).astype(jnp.int32)
  best = jnp.take_along_axis(s, arg[:, None], axis=1)[:, 0]
  return best, arg


def _clamped_start(i, tile, total):
  # The last tile is shifted back to end at `total` instead of being padded:
  # it revisits a few rows, which is harmless (same result / strict `<` keeps
  # the earlier, lower index), and no copy of x is ever made.
  return jnp.minimum(i * tile, total - tile)


def _assign_chunk(xb, c, bias, metric, precision, tile_k, c_inverse=None):
  k = c.shape[0]
  x_op, row_factor = _half_operands(xb, c, c_inverse)
  if k <= tile_k:
    best, arg = _argmin_tile(x_op, c, bias, precision, row_factor)
  else:
    n_tiles = pl_cdiv(k, tile_k)

    def body(j, carry):
      best, arg = carry
      start = _clamped_start(j, tile_k, k)
      cj = lax.dynamic_slice_in_dim(c, start, tile_k)
      bj = lax.dynamic_slice_in_dim(bias, start, tile_k)
      tbest, targ = _argmin_tile(x_op, cj, bj, precision, row_factor)
      better = tbest < best
      return jnp.where(better, tbest, best), jnp.where(better, targ + start, arg)

    acc = _acc_dtype(xb.dtype)
    init = (jnp.full(xb.shape[:1], jnp.inf, acc), jnp.zeros(xb.shape[:1], jnp.int32))
    best, arg = lax.fori_loop(0, n_tiles, body, init)
  dist = _metric.finish_distance(best, _metric.row_sqnorm(xb).astype(best.dtype), metric)
  return arg, dist.astype(jnp.float32)


def pl_cdiv(a: int, b: int) -> int:
  return -(-a // b)


def xla_tiles(n: int, k: int, tile_bytes: int = _XLA_TILE_BYTES) -> tuple[int, int]:
  """(tile_n, tile_k) for the XLA path: one float32 score tile <= tile_bytes."""
  tile_k = min(k, _XLA_MAX_TILE_K)
  tile_n = max(256, tile_bytes // (4 * tile_k))
  return min(n, tile_n), tile_k


def assign_xla(x: jax.Array, centroids: jax.Array, *, metric: str = "sqeuclidean",
               precision: Any = None, tile_n: int | None = None,
               tile_k: int | None = None) -> tuple[jax.Array, jax.Array]:
  """Tiled XLA assignment (no Pallas). Shapes and results as :func:`assign`.

  Walks tiles of ``tile_n`` points and, when K is large, tiles of ``tile_k``
  centroids with a running (min, argmin), so extra memory is
  ``O(tile_n * tile_k)`` whatever N is.
  """
  n = x.shape[0]
  k = centroids.shape[0]
  precision = _dispatch.resolve_precision(precision)
  dn, dk = xla_tiles(n, k)
  tile_n = min(n, tile_n or dn)
  tile_k = min(k, tile_k or dk)
  c, bias, c_inverse = _operands(x, centroids, metric, precision)
  chunk = functools.partial(_assign_chunk, c=c, bias=bias, metric=metric,
                            precision=precision, tile_k=tile_k, c_inverse=c_inverse)
  if n <= tile_n:
    return chunk(x)

  def body(i, carry):
    labels, dist = carry
    start = _clamped_start(i, tile_n, n)
    lb, db = chunk(lax.dynamic_slice_in_dim(x, start, tile_n))
    return (lax.dynamic_update_slice_in_dim(labels, lb, start, 0),
            lax.dynamic_update_slice_in_dim(dist, db, start, 0))

  init = (jnp.zeros((n,), jnp.int32), jnp.zeros((n,), jnp.float32))
  return lax.fori_loop(0, pl_cdiv(n, tile_n), body, init)


def assign_reference(x: jax.Array, centroids: jax.Array, *, metric: str = "sqeuclidean",
                     precision: Any = None) -> tuple[jax.Array, jax.Array]:
  """Dense plain-JAX reference: builds the full ``[N, K]`` score matrix."""
  precision = _dispatch.resolve_precision(precision)
  c, bias, c_inverse = _operands(x, centroids, metric, precision)
  x_op, row_factor = _half_operands(x, c, c_inverse)
  best, arg = _argmin_tile(x_op, c, bias, precision, row_factor)
  dist = _metric.finish_distance(best, _metric.row_sqnorm(x).astype(best.dtype), metric)
  return arg, dist.astype(jnp.float32)


def _forward(x, centroids, metric, impl, precision, config):
  if impl == "xla":
    return assign_xla(x, centroids, metric=metric, precision=precision)
  from flashkmeans_jax.kernels import flash_assign  # GPU code stays behind dispatch
  return flash_assign.flash_assign(
      x, centroids, metric=metric, precision=precision, config=config,
      interpret=(impl == "pallas_interpret"))


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4, 5))
def _assign_diff(x, centroids, metric, impl, precision, config):
  return _forward(x, centroids, metric, impl, precision, config)


def _assign_fwd(x, centroids, metric, impl, precision, config):
  labels, dist = _forward(x, centroids, metric, impl, precision, config)
  return (labels, dist), (x, centroids, labels)


def _assign_bwd(metric, impl, precision, config, res, cts):
  """Gradient of each point's distance to its chosen centroid (labels fixed)."""
  del impl, precision, config
  x, centroids, labels = res
  _, g = cts
  k = centroids.shape[0]
  xf = x.astype(jnp.float32)
  cf = centroids.astype(jnp.float32)
  cl = cf[labels]
  g = g.astype(jnp.float32)[:, None]
  if metric == "sqeuclidean":
    diff = xf - cl
    gx = 2.0 * g * diff
    gc_rows = -gx
  elif metric == "cosine":
    xn = jnp.sqrt(jnp.sum(xf * xf, -1, keepdims=True))
    cn = jnp.sqrt(jnp.sum(cl * cl, -1, keepdims=True))
    u = xf / jnp.where(xn > 0, xn, 1.0)
    v = cl / jnp.where(cn > 0, cn, 1.0)
    cos = jnp.sum(u * v, -1, keepdims=True)
    gx = jnp.where(xn > 0, -g * (v - cos * u) / jnp.where(xn > 0, xn, 1.0), 0.0)
    gc_rows = jnp.where((cn > 0) & (xn > 0),
                        -g * (u - cos * v) / jnp.where(cn > 0, cn, 1.0), 0.0)
  else:
    gx = -g * cl
    gc_rows = -g * xf
  gc = jax.ops.segment_sum(gc_rows, labels, num_segments=k)
  return gx.astype(x.dtype), gc.astype(centroids.dtype)


_assign_diff.defvjp(_assign_fwd, _assign_bwd)


def assign(x: jax.Array, centroids: jax.Array, *, metric: str = "sqeuclidean",
           impl: str | None = None, precision: Any = None,
           config: Any = None) -> tuple[jax.Array, jax.Array]:
  """Nearest centroid of every point, and its distance.

  Args:
    x: ``[N, D]`` points, float16, bfloat16 or float32 (float64 with
      ``impl="xla"`` and x64 enabled).
    centroids: ``[K, D]``, any float dtype; cast to ``x.dtype`` for the dot.
    metric: ``"sqeuclidean"`` (squared L2), ``"cosine"`` (``1 - cos``; a zero
      vector is at distance 1 from everything) or ``"dot"`` (the negative inner
      product ``-x . c``, so the nearest centroid has the largest inner
      product).
    impl: ``None``/``"auto"`` (Pallas on CUDA GPUs, XLA elsewhere), ``"xla"``,
      ``"pallas"`` or ``"pallas_interpret"`` (the Pallas kernel run on any
      backend in interpret mode; slow, for tests).
    precision: matmul precision of float32 inputs, as JAX takes it: ``None``
      follows ``jax.default_matmul_precision`` (on NVIDIA GPUs that is TF32, so
      near-ties may resolve differently from float64); ``"highest"`` (or
      ``lax.DotAlgorithmPreset.TF32_TF32_F32_X3``, which the Pallas kernel uses
      for it) is float32-accurate and gives the float64 reference's labels up to
      float32 ties. ``"F16_F16_F32"`` runs float32 points on the float16
      tensor cores (twice the TF32 rate) with a power-of-two scale per point
      and one for the centroids, so operands keep TF32's 10 mantissa bits
      without float16's range limits (:mod:`flashkmeans_jax._half_dot`);
      ``"BF16_BF16_F32"`` casts to bfloat16 (8 bits). Ignored for 16-bit
      inputs, whose products are exact in the float32 accumulator.
    config: optional :class:`flashkmeans_jax.kernels.config.AssignConfig` for
      the Pallas kernel (tile sizes, warps, stages); ``None`` picks one from
      the device and shapes.

  Returns:
    ``labels int32[N]`` (ties go to the lowest centroid index) and
    ``dist float32[N]`` (see ``metric``). ``dist`` is differentiable with
    respect to ``x`` and ``centroids`` (the gradient of each point's distance
    to its chosen centroid); ``labels`` carry no gradient.

  Works under ``jit`` and ``vmap`` (the Pallas kernel's batching rule adds a
  grid axis, so a vmapped call is one launch).

  A concrete ``jax.Array`` split over devices on axis 0 is assigned shard by
  shard (:func:`flashkmeans_jax.distributed.sharded_assign`).
  """
  # Data-parallel path (issue #9): x row-sharded over more than one device.
  from flashkmeans_jax import distributed
  if distributed.is_row_sharded(x):
    return distributed.sharded_assign(x, centroids, metric=metric, impl=impl,
                                      precision=precision, config=config)
  _checks.check_points(x)
  _checks.check_centroids(centroids, x.shape[1])
  metric = _checks.check_metric(metric)
  impl = _dispatch.resolve_impl(impl, x.shape[0], centroids.shape[0])
  precision = _dispatch.resolve_precision(precision)
  return _assign_diff(x, centroids, metric, impl, precision, config)
