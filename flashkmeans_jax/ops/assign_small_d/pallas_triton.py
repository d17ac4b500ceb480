"""Small-D assignment as a register-tiled FMA kernel (Pallas, Triton lowering).

For D < 16 a tensor-core tile (K-dimension 16 or more) is mostly padding,
and the work per pair is a handful of multiply-adds: the CUDA cores do them
at full rate without any padding. One program owns ``block_n`` points of one
problem of the batch; their D columns are loaded once (each a strided
``[block_n]`` vector, so D needs no padding to a power of two) and stay in
registers while the centroids stream past in tiles of ``block_k``. A tile's
scores are the outer products ``x[:, d] * (-c[d, :])`` added to the bias in
float32, column by column (one FMA per pair and column), and each tile is
folded into a running (min, argmin): element-wise across tiles by default
(``deferred_argmin``), reduced over the tile once at the end.

The grid is ``(row blocks, B)``: row blocks vary fastest, so consecutive
programs read the same problem's centroids (L2-resident). Under ``jax.vmap``
Pallas adds one more grid axis; the kernel's ``program_id`` axes keep their
meaning.

Scores, distances, ties (lowest index) and the non-finite conventions are
those of :mod:`flashkmeans_jax.ops.assign_small_d.reference`: the centroids
(small) are padded to whole tiles with bias ``+inf`` so padding never wins;
rows past N are masked loads and stores (the points are never copied).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as plgpu

from flashkmeans_jax.core import metric as metric_mod
from flashkmeans_jax.core import tiling
from flashkmeans_jax.ops.assign_small_d import config as config_mod
from flashkmeans_jax.ops.assign_small_d import reference

__all__ = ["assign_fma_pallas"]


def _kernel(x_ref, neg_ct_ref, bias_ref, labels_ref, dist_ref, *, n, d, block_n, block_k,
            n_k_tiles, metric, deferred_argmin):
  row0 = pl.program_id(0) * block_n
  b = pl.program_id(1)
  row_mask = row0 + jnp.arange(block_n) < n
  # Column indices as int32 arrays: interpret mode's state discharge takes
  # no Python int among the indexers.
  cols = [plgpu.load(x_ref.at[b, pl.ds(row0, block_n), jnp.int32(j)], mask=row_mask,
                     other=0.0).astype(jnp.float32) for j in range(d)]
  xsq = cols[0] * cols[0]
  for col in cols[1:]:
    xsq = xsq + col * col

  def score(t):
    ks = pl.ds(t * block_k, block_k)
    s = bias_ref[b, ks][None, :]
    for j in range(d):  # unrolled: D FMAs per pair
      s = s + cols[j][:, None] * neg_ct_ref[b, jnp.int32(j), ks][None, :]
    return s

  if deferred_argmin:
    def sweep(t, carry):
      best, tile = carry
      s = score(t)
      better = s < best  # strict: in each column the earlier tile keeps a tie
      return jnp.where(better, s, best), jnp.where(better, t, tile)

    best_all, tile = lax.fori_loop(
        0, n_k_tiles, sweep,
        (jnp.full((block_n, block_k), jnp.inf, jnp.float32),
         jnp.zeros((block_n, block_k), jnp.int32)))
    best = jnp.min(best_all, axis=1)
    index = tile * block_k + jnp.arange(block_k, dtype=jnp.int32)[None, :]
    # Ties across columns go to the lowest centroid index.
    arg = jnp.min(jnp.where(best_all == best[:, None], index, jnp.iinfo(jnp.int32).max),
                  axis=1)
  else:
    def sweep(t, carry):
      best, arg = carry
      s = score(t)
      tile_best = jnp.min(s, axis=1)
      tile_arg = jnp.argmin(s, axis=1).astype(jnp.int32) + t * block_k
      better = tile_best < best  # strict: the earlier tile (lower index) keeps a tie
      return jnp.where(better, tile_best, best), jnp.where(better, tile_arg, arg)

    best, arg = lax.fori_loop(
        0, n_k_tiles, sweep,
        (jnp.full((block_n,), jnp.inf, jnp.float32), jnp.zeros((block_n,), jnp.int32)))
  # No usable centroid: every score is +inf and `arg` the lowest index (0).
  dist = jnp.where(best == jnp.inf, jnp.inf, metric_mod.finish_distance(best, xsq, metric))
  bad = ~(jnp.abs(xsq) < jnp.inf)  # NaN or Inf in the row (isfinite, spelt for Triton)
  plgpu.store(labels_ref.at[b, pl.ds(row0, block_n)], jnp.where(bad, 0, arg), mask=row_mask)
  plgpu.store(dist_ref.at[b, pl.ds(row0, block_n)], jnp.where(bad, jnp.nan, dist),
              mask=row_mask)


@functools.partial(jax.jit, static_argnames=("metric", "config", "interpret"))
def assign_fma_pallas(x: jax.Array, centroids: jax.Array, *, metric: str,
                      config: config_mod.SmallDConfig | None = None,
                      interpret: bool = False) -> tuple[jax.Array, jax.Array]:
  """Small-D assignment of a batch with the FMA kernel.

  Args:
    x: ``[B, N, D]`` float16, bfloat16 or float32 points, ``D < 16``.
    centroids: ``[B, K, D]``, any float dtype; cast to ``x.dtype``.
    metric: ``"sqeuclidean"``, ``"cosine"`` or ``"dot"``.
    config: tiling; ``None`` picks one with :func:`config.small_d_config`.
    interpret: run in Pallas interpret mode (any backend).

  Returns:
    ``labels int32[B, N]`` (ties to the lowest index) and ``dist float32[B, N]``.
  """
  bsz, n, d = x.shape
  k = centroids.shape[1]
  cfg = config or config_mod.small_d_config(n, k, d)
  block_k = min(cfg.block_k, max(16, tiling.next_pow2(k)))
  block_n = min(cfg.block_n, max(16, tiling.next_pow2(n)))
  k_pad = tiling.cdiv(k, block_k) * block_k
  neg_c, bias, _ = reference.operands(x, centroids, metric)
  neg_ct = jnp.pad(jnp.swapaxes(neg_c, 1, 2), ((0, 0), (0, 0), (0, k_pad - k)))
  bias = jnp.pad(bias, ((0, 0), (0, k_pad - k)), constant_values=jnp.inf)
  kernel = functools.partial(
      _kernel, n=n, d=d, block_n=block_n, block_k=block_k, n_k_tiles=k_pad // block_k,
      metric=metric, deferred_argmin=cfg.deferred_argmin)
  return pl.pallas_call(
      kernel,
      out_shape=(jax.ShapeDtypeStruct((bsz, n), jnp.int32),
                 jax.ShapeDtypeStruct((bsz, n), jnp.float32)),
      grid=(tiling.cdiv(n, block_n), bsz),
      compiler_params=cfg.compiler_params(),
      interpret=interpret,
      name="assign_small_d",
  )(x, neg_ct, bias)
