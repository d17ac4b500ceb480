"""The FlashAssign score tiles as a reusable piece: operands prepared once in
XLA, then, inside a Pallas (Triton) kernel, one program's block of points on
chip and the ``[block_n, block_k]`` score tile of any centroid tile.

The scheme is the assignment kernel's (:mod:`flashkmeans_jax.ops.assign.pallas_triton`):
scores ``bias[k] - x . c[k]`` (:mod:`flashkmeans_jax.core.metric`) from a
tensor-core dot with a float32 accumulator; float32 points under
``F16_F16_F32`` / ``BF16_BF16_F32`` run on 16-bit operands
(:mod:`flashkmeans_jax.core.half_dot`), scaled on chip or, with
``half_prepass``, by an XLA pass before the kernel. Centroids are padded to
whole tiles with bias ``+inf`` (padded centroids never win); points are not
copied: rows past N and columns past D are masked loads with ``other=0``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as plgpu

from flashkmeans_jax.core import half_dot
from flashkmeans_jax.core import metric as metric_mod
from flashkmeans_jax.core import tiling

__all__ = ["Operands", "prepare", "PointBlock", "point_block", "padded_sizes"]


class Operands(NamedTuple):
  """What the kernel reads, and how (all static but the arrays).

  Attributes:
    arrays: ``(x, c, bias, *extra)``: the points (maybe prescaled float16),
      the centroids ``[k_pad, d_pad]`` as the dot takes them, the float32
      bias ``[k_pad]`` (``+inf`` past K), then the centroids' inverse scale
      (repeated to 16 entries) for float16 operands and, prescaled, the rows'
      inverse scales and float32 squared norms.
    op_dtype: 16-bit type float32 points are cast to on chip, or ``None``.
    prescaled: the points were scaled and cast by the XLA pass.
    precision: the in-kernel dot's precision (``None`` for 16-bit operands).
  """

  arrays: tuple
  op_dtype: Any
  prescaled: bool
  precision: Any


def prepare(x, centroids, metric, precision, op_dtype, half_prepass, k_pad, d_pad) -> Operands:
  """Operands of the score tiles for ``x [N, D]`` and ``centroids [K, D]``;
  ``precision`` is the kernel dot's (``op_dtype`` from
  :func:`flashkmeans_jax.core.half_dot.operand_dtype`)."""
  c, bias = metric_mod.prepare_centroids(centroids, metric, x.dtype)
  prescaled = half_prepass and op_dtype is not None and jnp.dtype(op_dtype) == jnp.float16
  extra = ()
  if op_dtype is not None:
    precision = None  # the dot sees 16-bit operands
    c, c_inverse = half_dot.scale_matrix(c, op_dtype)
    if jnp.dtype(op_dtype) == jnp.float16:
      extra = (jnp.full((16,), c_inverse, jnp.float32),)
    if prescaled:
      xsq = metric_mod.row_sqnorm(x)
      x, row_inverse = half_dot.scale_rows(x, op_dtype)
      extra += (row_inverse, xsq)
  k, d = centroids.shape
  c = jnp.pad(c, ((0, k_pad - k), (0, d_pad - d)))
  bias = jnp.pad(bias, (0, k_pad - k), constant_values=jnp.inf)
  return Operands((x, c, bias) + extra, None if prescaled else op_dtype, prescaled, precision)


class PointBlock(NamedTuple):
  """One program's points: ``xsq float32[block_n]`` and ``score(j)``, the
  float32 ``[block_n, block_k]`` scores of centroid tile ``j``."""

  xsq: jax.Array
  score: Any


def point_block(x_ref, c_ref, bias_ref, extra_refs, *, row0, row_mask, d, block_n, block_k,
                block_d, op_dtype, prescaled, precision) -> PointBlock:
  """Loads (or prepares to stream) the points ``row0 .. row0 + block_n`` and
  returns their norms and score-tile function. Call inside the kernel."""
  scaled = op_dtype is not None and jnp.dtype(op_dtype) == jnp.float16
  n_d = c_ref.shape[1] // block_d
  c_inverse_ref = extra_refs[0] if (scaled or prescaled) else None

  def load_x(t):
    cols = t * block_d + jnp.arange(block_d) < d
    return plgpu.load(x_ref.at[pl.ds(row0, block_n), pl.ds(t * block_d, block_d)],
                      mask=row_mask[:, None] & cols[None, :], other=0.0)

  def load_rows(ref, other):
    return plgpu.load(ref.at[pl.ds(row0, block_n)], mask=row_mask, other=other)

  def stats(xt):
    xf = xt.astype(jnp.float32)
    return jnp.sum(xf * xf, axis=1), jnp.max(jnp.abs(xf), axis=1)

  resident = load_x(0) if n_d == 1 else None  # one D tile: kept for the whole sweep
  if prescaled:
    xsq, factor = load_rows(extra_refs[2], 0.0), load_rows(extra_refs[1], 1.0)
    to_op = lambda xt: xt  # noqa: E731
  else:
    if resident is not None:
      xsq, amax = stats(resident)
    else:
      def acc(t, carry):
        sq, mx = stats(load_x(t))
        return carry[0] + sq, jnp.maximum(carry[1], mx)
      zeros = jnp.zeros((block_n,), jnp.float32)
      xsq, amax = lax.fori_loop(0, n_d, acc, (zeros, zeros))
    factor = None
    to_op = (lambda xt: xt) if op_dtype is None else (lambda xt: xt.astype(op_dtype))  # noqa: E731
    if scaled:
      row_scale, factor = half_dot.pow2_scale(amax)
      to_op = lambda xt: (xt * row_scale[:, None]).astype(op_dtype)  # noqa: E731
  if factor is not None:
    # Powers of two: the product and the rescaled scores are exact.
    factor = factor * jnp.max(c_inverse_ref[...])
  x_op = to_op(resident) if resident is not None else None

  def cross(j):
    if x_op is not None:
      c = c_ref[pl.ds(j * block_k, block_k), :]
      return plgpu.dot(x_op, c, trans_b=True, precision=precision)

    def body(t, acc):
      c = c_ref[pl.ds(j * block_k, block_k), pl.ds(t * block_d, block_d)]
      return acc + plgpu.dot(to_op(load_x(t)), c, trans_b=True, precision=precision)
    return lax.fori_loop(0, n_d, body, jnp.zeros((block_n, block_k), jnp.float32))

  def score(j):
    b = bias_ref[pl.ds(j * block_k, block_k)][None, :]
    dots = cross(j)
    return b - (dots if factor is None else dots * factor[:, None])

  return PointBlock(xsq, score)


def padded_sizes(n, k, d, block_n, block_k, block_d) -> tuple[int, int, int, int, int]:
  """``(block_n, block_k, block_d, k_pad, d_pad)`` clipped to the problem,
  all powers of two as the Triton lowering needs."""
  d_pad = max(16, tiling.next_pow2(d))
  block_d = min(block_d, d_pad)
  block_k = min(block_k, max(16, tiling.next_pow2(k)))
  block_n = min(block_n, max(16, tiling.next_pow2(n)))
  return block_n, block_k, block_d, pl.cdiv(k, block_k) * block_k, d_pad
