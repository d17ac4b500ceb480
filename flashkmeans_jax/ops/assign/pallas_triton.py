"""FlashAssign: fused distance + online argmin as a Pallas (Triton) kernel.

One program owns ``block_n`` points, keeps them on chip and streams the
centroids past them in tiles of ``block_k``: the cross term ``x . c^T`` runs on
the tensor cores with a float32 accumulator, and each tile is folded into a
running (min score, argmin) pair. Only labels (int32) and distances (float32)
are written: the N x K distance matrix never reaches device memory.

Scores and distances follow :mod:`flashkmeans_jax.core.metric`: the kernel
minimises ``bias[k] - x . c[k]`` and finishes with ``||x||^2`` computed in
float32 from the tile it already holds.

float32 points with the ``F16_F16_F32`` (or ``BF16_BF16_F32``) precision are
loaded as float32 (for ``||x||^2``), scaled by a power of two per row and cast
to 16 bits on chip, so the dot runs on the 16-bit tensor cores; each row's
scores are multiplied back by that row's and the centroids' inverse scales
(:mod:`flashkmeans_jax.core.half_dot`). With ``half_prepass`` (the default from
K=4096 on) an XLA pass does the scaling and cast beforehand, which costs a
temporary float16 copy of the points (half their float32 size) and runs the
kernel on 16-bit loads.

Padding: the centroids (small) are padded to whole tiles with bias ``+inf`` so
padded centroids never win; the points are not copied: rows past N and
columns past D are masked loads (``other=0``) and masked stores.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as plgpu

from flashkmeans_jax.core import half_dot
from flashkmeans_jax.core import metric as metric_mod
from flashkmeans_jax.core import precision as precision_mod
from flashkmeans_jax.core import tiling
from flashkmeans_jax.ops.assign import config as config_mod

__all__ = ["flash_assign", "kernel_precision"]


def kernel_precision(dtype, precision: Any, interpret: bool = False) -> Any:
  """Precision handed to the in-kernel dot.

  16-bit operands: the default (native MMA with float32 accumulation).
  float32: JAX's precision, except that HIGHEST (a true float32 dot, ~50x
  slower in the Triton lowering) becomes the 3-pass TF32 algorithm, which is
  float32-accurate for the argmin. Interpret mode runs the dot with XLA on
  the host, where HIGHEST is native and the 3-pass presets do not exist.
  """
  if jnp.dtype(dtype).itemsize == 2:
    return None
  if interpret:
    return precision
  if precision in (lax.Precision.HIGHEST, lax.DotAlgorithmPreset.F32_F32_F32):
    return lax.DotAlgorithmPreset.TF32_TF32_F32_X3
  return precision


def _flash_assign_kernel(x_ref, c_ref, bias_ref, *refs, n, d, block_n, block_k, block_d,
                         n_k_tiles, metric, precision, deferred_argmin, op_dtype, prescaled,
                         runner_up):
  # op_dtype: None (the dot takes x as loaded), float16 (scaled, with the
  # centroids' inverse scale in an extra input) or bfloat16 (cast only).
  # prescaled: x already holds the scaled float16 rows; their inverse scales
  # and float32 squared norms come as two more inputs.
  scaled = op_dtype is not None and jnp.dtype(op_dtype) == jnp.float16
  # runner_up: the outputs are (labels, best, second, xsq), else (labels, dist).
  n_out = 4 if runner_up else 2
  refs, outs = refs[:len(refs) - n_out], refs[len(refs) - n_out:]
  row_inverse_ref = xsq_ref = None
  if prescaled:
    c_inverse_ref, row_inverse_ref, xsq_ref = refs
  elif scaled:
    (c_inverse_ref,) = refs
  row0 = pl.program_id(0) * block_n
  row_mask = row0 + jnp.arange(block_n) < n
  n_d_tiles = c_ref.shape[1] // block_d

  def load_x(t):
    col_mask = t * block_d + jnp.arange(block_d) < d
    return plgpu.load(x_ref.at[pl.ds(row0, block_n), pl.ds(t * block_d, block_d)],
                      mask=row_mask[:, None] & col_mask[None, :], other=0.0)

  def sqnorm(xt):
    xf = xt.astype(jnp.float32)
    return jnp.sum(xf * xf, axis=1)

  def rowmax(xt):
    return jnp.max(jnp.abs(xt), axis=1)

  def load_rows(ref, other):
    return plgpu.load(ref.at[pl.ds(row0, block_n)], mask=row_mask, other=other)

  if prescaled:
    x_tile = load_x(0) if n_d_tiles == 1 else None
    xsq = load_rows(xsq_ref, 0.0)
  elif n_d_tiles == 1:
    x_tile = load_x(0)  # stays on chip for the whole centroid sweep
    xsq = sqnorm(x_tile)
    amax = rowmax(x_tile) if scaled else None
  else:
    def norms(t, carry):
      xt = load_x(t)
      return carry[0] + sqnorm(xt), (jnp.maximum(carry[1], rowmax(xt)) if scaled else None)

    xsq, amax = lax.fori_loop(0, n_d_tiles, norms, (
        jnp.zeros((block_n,), jnp.float32),
        jnp.zeros((block_n,), jnp.float32) if scaled else None))

  row_factor = None
  to_operand = lambda xt: xt  # noqa: E731
  if prescaled:
    row_factor = load_rows(row_inverse_ref, 1.0) * jnp.max(c_inverse_ref[...])
  elif scaled:
    row_scale, row_inverse = half_dot.pow2_scale(amax)
    # Both factors are powers of two: the product and the rescaled scores are
    # exact (the centroids' inverse is one value, repeated to a tile shape).
    row_factor = row_inverse * jnp.max(c_inverse_ref[...])
    to_operand = lambda xt: (xt * row_scale[:, None]).astype(op_dtype)  # noqa: E731
  elif op_dtype is not None:
    to_operand = lambda xt: xt.astype(op_dtype)  # noqa: E731

  if n_d_tiles == 1:
    x_op = to_operand(x_tile)

    def cross(j):
      c = c_ref[pl.ds(j * block_k, block_k), :]
      return plgpu.dot(x_op, c, trans_b=True, precision=precision)
  else:
    def cross(j):
      def body(t, acc):
        c = c_ref[pl.ds(j * block_k, block_k), pl.ds(t * block_d, block_d)]
        return acc + plgpu.dot(to_operand(load_x(t)), c, trans_b=True, precision=precision)
      return lax.fori_loop(0, n_d_tiles, body, jnp.zeros((block_n, block_k), jnp.float32))

  def score(j):
    b = bias_ref[pl.ds(j * block_k, block_k)][None, :]
    if row_factor is None:
      return b - cross(j)
    return b - cross(j) * row_factor[:, None]

  cols = jnp.arange(block_k, dtype=jnp.int32)[None, :]
  if deferred_argmin:
    # Element-wise running minimum over the centroid tiles: no cross-lane
    # reduction per tile (two per tile otherwise), one at the very end, for
    # the price of two [block_n, block_k] accumulators in registers (three
    # with the runner-up: each column's second smallest score).
    def sweep(j, carry):
      best, tile, second = carry
      s = score(j)
      if runner_up:
        second = jnp.minimum(second, jnp.maximum(best, s))
      better = s < best  # strict: in each column the earlier tile keeps a tie
      return jnp.where(better, s, best), jnp.where(better, j, tile), second

    full = jnp.full((block_n, block_k), jnp.inf, jnp.float32)
    best_all, tile, second_all = lax.fori_loop(
        0, n_k_tiles, sweep,
        (full, jnp.zeros((block_n, block_k), jnp.int32), full if runner_up else None))
    best = jnp.min(best_all, axis=1)
    index = tile * block_k + cols
    # Ties across columns go to the lowest centroid index, as in the eager sweep.
    arg = jnp.min(jnp.where(best_all == best[:, None], index, jnp.iinfo(jnp.int32).max),
                  axis=1)
    if runner_up:
      # The winner's column offers its own second; every other column its best.
      is_arg = index == arg[:, None]
      second = jnp.min(jnp.where(is_arg, second_all, best_all), axis=1)
  else:
    def sweep(j, carry):
      best, arg, second = carry
      s = score(j)
      tile_best = jnp.min(s, axis=1)
      tile_col = jnp.argmin(s, axis=1).astype(jnp.int32)
      tile_arg = tile_col + j * block_k
      # Strict `<`: on equal scores the earlier tile, hence the lower index, stays.
      better = tile_best < best
      if runner_up:
        tile_second = jnp.min(jnp.where(cols == tile_col[:, None], jnp.inf, s), axis=1)
        second = jnp.minimum(jnp.minimum(second, tile_second), jnp.maximum(best, tile_best))
      return jnp.where(better, tile_best, best), jnp.where(better, tile_arg, arg), second

    inf = jnp.full((block_n,), jnp.inf, jnp.float32)
    best, arg, second = lax.fori_loop(
        0, n_k_tiles, sweep, (inf, jnp.zeros((block_n,), jnp.int32),
                              inf if runner_up else None))
  if runner_up:
    values = (arg, best, second, xsq)
  else:
    values = (arg, metric_mod.finish_distance(best, xsq, metric))
  for ref, v in zip(outs, values):
    plgpu.store(ref.at[pl.ds(row0, block_n)], v, mask=row_mask)


@functools.partial(jax.jit, static_argnames=("metric", "precision", "config", "interpret",
                                             "runner_up"))
def flash_assign(x: jax.Array, centroids: jax.Array, *, metric: str = "sqeuclidean",
                 precision: Any = None, config: config_mod.AssignConfig | None = None,
                 interpret: bool = False, runner_up: bool = False) -> tuple[jax.Array, ...]:
  """Nearest centroid for every point with the FlashAssign kernel.

  Args:
    x: ``[N, D]`` float16, bfloat16 or float32 points (any N and D).
    centroids: ``[K, D]``, any float dtype; cast to ``x.dtype`` for the dot.
    metric: ``"sqeuclidean"``, ``"cosine"`` or ``"dot"``.
    precision: float32 dot precision (see :func:`kernel_precision`);
      ``F16_F16_F32`` / ``BF16_BF16_F32`` run float32 points on 16-bit
      operands (:mod:`flashkmeans_jax.core.half_dot`).
    config: tiling; ``None`` picks one with :func:`config.assign_config`.
    interpret: run the kernel in Pallas interpret mode (any backend).

    runner_up: also keep every point's second smallest score.

  Returns:
    ``labels int32[N]`` (ties to the lowest index) and ``dist float32[N]``;
    with ``runner_up``, ``(labels, best, second, xsq)`` instead: the raw
    winning and runner-up scores (:mod:`flashkmeans_jax.core.metric`; the
    runner-up is ``+inf`` with one usable centroid) and ``||x||^2``, all
    float32[N].
  """
  n, d = x.shape
  k = centroids.shape[0]
  precision = kernel_precision(x.dtype, precision_mod.resolve_precision(precision), interpret)
  op_dtype = half_dot.operand_dtype(x.dtype, precision)
  exact = precision == lax.DotAlgorithmPreset.TF32_TF32_F32_X3
  cfg = config or config_mod.assign_config(n, k, d, x.dtype, exact_f32=exact,
                                           operand_dtype=op_dtype)
  prescaled = cfg.half_prepass and op_dtype is not None and jnp.dtype(op_dtype) == jnp.float16
  dp = max(16, tiling.next_pow2(d))
  block_d = min(cfg.block_d, dp)
  block_k = min(cfg.block_k, max(16, tiling.next_pow2(k)))
  block_n = min(cfg.block_n, max(16, tiling.next_pow2(n)))
  k_pad = pl.cdiv(k, block_k) * block_k

  c, bias = metric_mod.prepare_centroids(centroids, metric, x.dtype)
  extra = ()
  if op_dtype is not None:
    precision = None  # the dot now sees 16-bit operands
    c, c_inverse = half_dot.scale_matrix(c, op_dtype)
    if jnp.dtype(op_dtype) == jnp.float16:
      extra = (jnp.full((16,), c_inverse, jnp.float32),)
    if prescaled:
      xsq = metric_mod.row_sqnorm(x)
      x, row_inverse = half_dot.scale_rows(x, op_dtype)
      extra += (row_inverse, xsq)
  c = jnp.pad(c, ((0, k_pad - k), (0, dp - d)))
  bias = jnp.pad(bias, (0, k_pad - k), constant_values=jnp.inf)

  kernel = functools.partial(
      _flash_assign_kernel, n=n, d=d, block_n=block_n, block_k=block_k, block_d=block_d,
      n_k_tiles=k_pad // block_k, metric=metric, precision=precision,
      deferred_argmin=cfg.deferred_argmin, op_dtype=None if prescaled else op_dtype,
      prescaled=prescaled, runner_up=runner_up)
  n_float = 3 if runner_up else 1
  return pl.pallas_call(
      kernel,
      out_shape=(jax.ShapeDtypeStruct((n,), jnp.int32),) + tuple(
          jax.ShapeDtypeStruct((n,), jnp.float32) for _ in range(n_float)),
      grid=(pl.cdiv(n, block_n),),
      compiler_params=cfg.compiler_params(),
      interpret=interpret,
      name="flash_assign",
  )(x, c, bias, *extra)
