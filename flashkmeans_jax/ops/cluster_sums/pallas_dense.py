"""Cluster sums for few clusters of few features, as a Pallas (Triton) kernel.

When ``K * D`` is small (quantisation codebooks: D of 1 to 4, K of 8 to
32) the sort-inverse update spends nearly all its time on the sort, the
work list and two launches over ``N / rows_per_item + K`` items, each padding
D to a 16-wide tile, while the arithmetic is a few operations per point.
Here every program instead reads one contiguous block of points, labels and
weights once and compares each label with every cluster index of a chunk of
clusters: a one-hot mask ``[rows, block_k]`` selects the weighted rows into
elementwise accumulators, reduced over the rows once per chunk. Blocks
write disjoint partials (``[blocks * D, K]`` sums, ``[blocks, K]`` counts);
an ordinary reduction over the blocks adds them. No sort, no gather, no
atomics (so the sums are the same on every run).

The work is about ``N * K * (D + 2)`` selects and adds, against ``N * D``
values read, so the path only pays where ``K * (D + 2)`` is small;
:func:`flashkmeans_jax.ops.cluster_sums.config.update_config` chooses it.
Rows holding NaN or Inf count as weight 0, as in every other implementation.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as plgpu

from flashkmeans_jax.core import tiling
from flashkmeans_jax.ops.cluster_sums import config as config_mod

__all__ = ["dense_cluster_sums", "dense_partial_sums"]


def dense_kernel(*refs, n, d, kp, rows, sub_rows, block_k, weighted):
  if weighted:
    x_ref, lab_ref, w_ref, sums_ref, counts_ref = refs
  else:
    x_ref, lab_ref, sums_ref, counts_ref = refs
    w_ref = None
  blk = pl.program_id(0)
  n_sub = rows // sub_rows

  def load_rows(r0):
    r = r0 + jnp.arange(sub_rows)
    rmask = r < n
    lab = plgpu.load(lab_ref.at[r], mask=rmask, other=-1)
    # x is flat [N * D]: each feature column is one strided [sub_rows] load
    # (register tensors cannot be sliced, so no [rows, D] tile is loaded).
    cols = [plgpu.load(x_ref.at[r * d + j], mask=rmask, other=0.0).astype(jnp.float32)
            for j in range(d)]
    if weighted:
      wv = plgpu.load(w_ref.at[r], mask=rmask, other=0.0)
    else:
      wv = jnp.where(rmask, 1.0, 0.0).astype(jnp.float32)
    # x * 0 is NaN exactly for non-finite entries: such rows get weight 0.
    bad = cols[0] * 0.0
    for c in cols[1:]:
      bad = bad + c * 0.0
    finite = bad == 0.0
    wv = jnp.where(finite, wv, 0.0)
    wx = [jnp.where(finite, c, 0.0) * wv for c in cols]
    return lab, wv, wx

  def k_chunk(kc, carry):
    k0 = kc * block_k
    kk = k0 + jnp.arange(block_k)

    # The accumulators stay [sub_rows, block_k] and every step only selects
    # and adds elementwise; the one cross-thread reduction per chunk is at
    # the end (a row reduction per step cost 3-10x more, eighth session).
    def row_step(s, acc):
      cnt, sums = acc
      lab, wv, wx = load_rows(blk * rows + s * sub_rows)
      hit = lab[:, None] == kk[None, :]
      cnt = cnt + jnp.where(hit, wv[:, None], 0.0)
      sums = tuple(sj + jnp.where(hit, wxj[:, None], 0.0) for sj, wxj in zip(sums, wx))
      return cnt, sums

    zero = jnp.zeros((sub_rows, block_k), jnp.float32)
    cnt, sums = lax.fori_loop(0, n_sub, row_step, (zero, tuple(zero for _ in range(d))))
    plgpu.store(counts_ref.at[blk, pl.ds(k0, block_k)], jnp.sum(cnt, axis=0))
    for j in range(d):
      plgpu.store(sums_ref.at[blk * d + j, pl.ds(k0, block_k)], jnp.sum(sums[j], axis=0))
    return carry

  lax.fori_loop(0, kp // block_k, k_chunk, 0)


def dense_partial_sums(x: jax.Array, labels: jax.Array, weights: jax.Array | None, k: int, *,
                       config: config_mod.UpdateConfig,
                       interpret: bool = False) -> tuple[jax.Array, jax.Array]:
  """The kernel: per-block partial sums ``float32[blocks * D, Kp]`` (row
  ``b * D + j`` holds feature ``j`` of block ``b``) and weight sums
  ``float32[blocks, Kp]``, with ``Kp`` a multiple of the cluster chunk."""
  n, d = x.shape
  sub_rows = min(config.dense_sub_rows, max(16, tiling.next_pow2(n)))
  rows = max(sub_rows, min(config.dense_rows, tiling.next_pow2(n)))
  rows -= rows % sub_rows
  block_k = min(config.dense_block_k, max(16, tiling.next_pow2(k)))
  kp = tiling.cdiv(k, block_k) * block_k
  blocks = tiling.cdiv(n, rows)
  weighted = weights is not None
  kernel = functools.partial(dense_kernel, n=n, d=d, kp=kp, rows=rows,
                             sub_rows=sub_rows, block_k=block_k, weighted=weighted)
  args = (x.reshape(-1), labels) + ((weights.astype(jnp.float32),) if weighted else ())
  return pl.pallas_call(
      kernel,
      out_shape=(jax.ShapeDtypeStruct((blocks * d, kp), jnp.float32),
                 jax.ShapeDtypeStruct((blocks, kp), jnp.float32)),
      grid=(blocks,),
      compiler_params=config.compiler_params(),
      interpret=interpret,
      name="dense_cluster_sums",
  )(*args)


@functools.partial(jax.jit, static_argnames=("k", "config", "interpret"))
def dense_cluster_sums(x: jax.Array, labels: jax.Array, k: int, *,
                       weights: jax.Array | None = None,
                       config: config_mod.UpdateConfig | None = None,
                       interpret: bool = False) -> tuple[jax.Array, jax.Array]:
  """Per-cluster float32 sums and weight counts by one-hot block sums.

  Args:
    x: ``[N, D]`` points, any float dtype (meant for small ``K * D``).
    labels: ``int[N]`` in ``[0, k)``.
    k: number of clusters.
    weights: optional ``float[N]`` (>= 0).
    config: tiling (the ``dense_*`` fields); ``None`` picks one with
      :func:`config.update_config`.
    interpret: run in Pallas interpret mode.

  Returns:
    ``sums float32[K, D]`` and ``counts float32[K]``.
  """
  n, d = x.shape
  cfg = config or config_mod.update_config(n, k, d, x.dtype)
  part, part_counts = dense_partial_sums(x, labels.astype(jnp.int32), weights, k, config=cfg,
                                         interpret=interpret)
  blocks = part_counts.shape[0]
  sums = jnp.sum(part.reshape(blocks, d, -1), axis=0)[:, :k].T
  return sums, jnp.sum(part_counts, axis=0)[:k]
