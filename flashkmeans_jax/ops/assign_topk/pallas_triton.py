"""Fused top-k assignment as a Pallas (Triton) kernel.

One program owns ``block_n`` points and streams the centroids past them in
tiles of ``block_k``, as FlashAssign does (:mod:`.tiles`). Each point keeps
its k best (score, index) pairs in registers, an unsorted list of ``k_pad``
slots (``k`` rounded up to a power of two; slots past ``k`` are dead). Its
k-th best score ``kth`` is the bar a centroid must beat.

Per tile the kernel takes each row's smallest score; only while some row of
the block has one below its ``kth`` does it run an insertion round: every
such row moves the lowest column holding its minimum into the slot of its
current k-th best, masks that column out and recomputes both. After the
first few tiles most tiles need one round or none, so the cost over the
assignment is about one extra row reduction per tile, not k. No sort in the
kernel: the list is put in order once at the end by k rounds of (min,
lowest index).

Ties to the lower index: tiles arrive in increasing index and a tile's score
must be strictly below ``kth`` to enter, so on equal scores the earlier
(lower) centroid stays; inside a tile the lowest column of the minimum goes
first; the eviction takes the highest index among equal k-th scores.

Unusable centroids (``+inf`` score: non-finite, or padding) never enter;
their slots keep placeholder indices ``>= k_pad_centroids`` that the wrapper
replaces, when fewer than k centroids are usable, by the lowest unusable
indices, as a stable sort would order them.
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
from flashkmeans_jax.ops.assign import pallas_triton as assign_kernel
from flashkmeans_jax.ops.assign_topk import config as config_mod
from flashkmeans_jax.ops.assign_topk import tiles

__all__ = ["flash_assign_topk"]

_BIG = jnp.iinfo(jnp.int32).max


def _any(mask):
  # A block-wide "some row": max of int32 (a reduction the lowering has).
  return jnp.max(mask.astype(jnp.int32)) > 0


def _topk_kernel(*refs, n, d, k, width, block_n, block_k, block_d, n_k_tiles, k_pad,
                 metric, op_dtype, prescaled, precision, n_extra):
  x_ref, c_ref, bias_ref = refs[:3]
  extra_refs = refs[3:3 + n_extra]
  idx_ref, dist_ref = refs[3 + n_extra:]
  row0 = pl.program_id(0) * block_n
  row_mask = row0 + jnp.arange(block_n) < n
  blk = tiles.point_block(x_ref, c_ref, bias_ref, extra_refs, row0=row0, row_mask=row_mask,
                          d=d, block_n=block_n, block_k=block_k, block_d=block_d,
                          op_dtype=op_dtype, prescaled=prescaled, precision=precision)
  slots = lax.broadcasted_iota(jnp.int32, (block_n, width), 1)
  cols = lax.broadcasted_iota(jnp.int32, (block_n, block_k), 1)
  live = slots < k
  # Live slots start as placeholders (+inf, distinct indices past every
  # centroid); dead slots hold -inf so they are never the k-th best.
  vals0 = jnp.where(live, jnp.inf, -jnp.inf)
  idx0 = jnp.where(live, k_pad + slots, -2)

  def kth_of(vals, idx):
    kth = jnp.max(vals, axis=1)
    # The slot to evict: the k-th score's highest index (-1 matches no slot).
    ev = jnp.max(jnp.where(vals == kth[:, None], idx, -1), axis=1)
    return kth, ev

  def sweep(j, carry):
    vals, idx, kth, ev = carry
    s = blk.score(j)
    m = jnp.min(s, axis=1)

    def more(c):
      s, m, vals, idx, kth, ev = c
      return _any(m < kth)

    def insert(c):
      s, m, vals, idx, kth, ev = c
      enter = m < kth
      col = jnp.min(jnp.where(s == m[:, None], cols, block_k), axis=1)
      hit = (idx == ev[:, None]) & enter[:, None]
      vals = jnp.where(hit, m[:, None], vals)
      idx = jnp.where(hit, (j * block_k + col)[:, None], idx)
      s = jnp.where((cols == col[:, None]) & enter[:, None], jnp.inf, s)
      kth, ev = kth_of(vals, idx)
      return s, jnp.min(s, axis=1), vals, idx, kth, ev

    _, _, vals, idx, kth, ev = lax.while_loop(more, insert, (s, m, vals, idx, kth, ev))
    return vals, idx, kth, ev

  kth, ev = kth_of(vals0, idx0)
  vals, idx, _, _ = lax.fori_loop(0, n_k_tiles, sweep, (vals0, idx0, kth, ev))

  # Into order: k rounds of (min, lowest index among equals), each taken
  # entry marked (+inf, INT_MAX) so it is never taken again.
  vals = jnp.where(live, vals, jnp.inf)
  idx = jnp.where(live, idx, _BIG)

  def order(r, carry):
    vals, idx, out_v, out_i = carry
    m = jnp.min(vals, axis=1)
    i = jnp.min(jnp.where(vals == m[:, None], idx, _BIG), axis=1)
    put = slots == r
    out_v = jnp.where(put, m[:, None], out_v)
    out_i = jnp.where(put, i[:, None], out_i)
    taken = idx == i[:, None]
    return jnp.where(taken, jnp.inf, vals), jnp.where(taken, _BIG, idx), out_v, out_i

  _, _, out_v, out_i = lax.fori_loop(
      0, k, order, (vals, idx, jnp.full((block_n, width), jnp.inf, jnp.float32),
                    jnp.full((block_n, width), _BIG, jnp.int32)))
  dist = metric_mod.finish_distance(out_v, blk.xsq[:, None], metric)
  rows = pl.ds(row0, block_n)
  out_mask = row_mask[:, None] & (slots >= 0)  # the value's full shape
  plgpu.store(idx_ref.at[rows, :], out_i, mask=out_mask)
  plgpu.store(dist_ref.at[rows, :], dist, mask=out_mask)


def _fill_unusable(idx, bias, k_centroids):
  """Placeholders (indices >= K; only where a row has fewer than k usable
  centroids, at the end of its list) become the lowest unusable indices."""
  unusable = ~jnp.isfinite(bias[:k_centroids])
  # Stable: the unusable centroids first, in increasing index.
  order = jnp.argsort(~unusable, stable=True).astype(jnp.int32)
  real = jnp.sum(idx < k_centroids, axis=1, keepdims=True)
  pos = lax.broadcasted_iota(jnp.int32, idx.shape, 1) - real
  fill = order[jnp.clip(pos, 0, k_centroids - 1)]
  return jnp.where(pos >= 0, fill, idx)


@functools.partial(jax.jit, static_argnames=("k", "metric", "precision", "config", "interpret"))
def flash_assign_topk(x: jax.Array, centroids: jax.Array, k: int, *,
                      metric: str = "sqeuclidean", precision: Any = None,
                      config: config_mod.TopKConfig | None = None,
                      interpret: bool = False) -> tuple[jax.Array, jax.Array]:
  """The ``k`` nearest centroids of every point with the fused kernel.

  Args:
    x: ``[N, D]`` float16, bfloat16 or float32 points (any N and D).
    centroids: ``[K, D]``, any float dtype, ``K >= k``.
    k: list length, ``1 <= k <= 32``.
    metric: ``"sqeuclidean"``, ``"cosine"`` or ``"dot"``.
    precision: float32 dot precision, as for the assignment kernel
      (:func:`flashkmeans_jax.ops.assign.pallas_triton.kernel_precision`).
    config: tiling; ``None`` picks one with :func:`config.topk_config`.
    interpret: run in Pallas interpret mode (any backend).

  Returns:
    ``indices int32[N, k]`` and ``distances float32[N, k]``, ascending,
    equal scores by lower index.
  """
  n, d = x.shape
  kk = centroids.shape[0]
  precision = assign_kernel.kernel_precision(
      x.dtype, precision_mod.resolve_precision(precision), interpret)
  op_dtype = half_dot.operand_dtype(x.dtype, precision)
  exact = precision == lax.DotAlgorithmPreset.TF32_TF32_F32_X3
  cfg = config or config_mod.topk_config(n, kk, d, x.dtype, k, exact_f32=exact,
                                         operand_dtype=op_dtype)
  block_n, block_k, block_d, k_pad, d_pad = tiles.padded_sizes(
      n, kk, d, cfg.block_n, cfg.block_k, cfg.block_d)
  ops = tiles.prepare(x, centroids, metric, precision, op_dtype, cfg.half_prepass, k_pad, d_pad)
  width = config_mod.list_width(k)
  kernel = functools.partial(
      _topk_kernel, n=n, d=d, k=k, width=width, block_n=block_n, block_k=block_k,
      block_d=block_d, n_k_tiles=k_pad // block_k, k_pad=k_pad, metric=metric,
      op_dtype=ops.op_dtype, prescaled=ops.prescaled, precision=ops.precision,
      n_extra=len(ops.arrays) - 3)
  idx, dist = pl.pallas_call(
      kernel,
      out_shape=(jax.ShapeDtypeStruct((n, width), jnp.int32),
                 jax.ShapeDtypeStruct((n, width), jnp.float32)),
      grid=(pl.cdiv(n, block_n),),
      compiler_params=cfg.compiler_params(),
      interpret=interpret,
      name="flash_assign_topk",
  )(*ops.arrays)
  idx, dist = idx[:, :k], dist[:, :k]
  return _fill_unusable(idx, ops.arrays[2], kk), dist
