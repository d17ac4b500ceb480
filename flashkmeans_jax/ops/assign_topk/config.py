"""Block sizes, warps and stages of the fused top-k kernel.

The kernel is the assignment's tile loop (:mod:`flashkmeans_jax.ops.assign.config`
sets its tiles) plus each point's running list, ``[block_n, k_pad]`` float32
scores and int32 indices kept in registers next to the ``[block_n, block_k]``
float32 score tile. Per thread that adds ``2 * block_n * k_pad / (32 *
num_warps)`` registers: 16 at the 128-row, 4-warp tile with k <= 8, where the
assignment's tiling is kept; from ``k_pad = 16`` on the row block is halved so
that the list costs what k = 8 costs. NOT yet swept on the GPU
(benchmarks/bench_topk.py measures the default): the numbers follow the
register arithmetic above, not measurements.
"""

from __future__ import annotations

import dataclasses

from flashkmeans_jax.core import tiling
from flashkmeans_jax.ops.assign import config as assign_config_mod

__all__ = ["TopKConfig", "topk_config", "list_width"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class TopKConfig(tiling.TritonLaunch):
  """Fused top-k tiling.

  Attributes:
    block_n: points per program (power of two).
    block_k: centroids per streamed tile (power of two).
    block_d: feature columns per dot (power of two).
    num_warps, num_stages: Triton launch parameters.
    half_prepass: with ``F16_F16_F32`` on float32 points, scale and cast the
      points in an XLA pass before the kernel (as the assignment does from
      K=4096 on).
  """

  block_n: int = 64
  block_k: int = 64
  block_d: int = 128
  half_prepass: bool = False


def list_width(k: int) -> int:
  """Slots of the running list: ``k`` rounded up to a power of two (>= 2)."""
  return max(2, tiling.next_pow2(k))


def topk_config(n: int, k_centroids: int, d: int, dtype, topk: int, *, exact_f32: bool = False,
                operand_dtype=None, kind: str | None = None) -> TopKConfig:
  """Tiling for the top-``topk`` kernel on ``[n, d]`` points and ``[k_centroids, d]``
  centroids: the assignment's tiles (:func:`flashkmeans_jax.ops.assign.config.assign_config`),
  the row block halved per doubling of the list past 8 slots (at least 16 rows)."""
  a = assign_config_mod.assign_config(n, k_centroids, d, dtype, exact_f32=exact_f32,
                                      operand_dtype=operand_dtype, kind=kind)
  block_n = a.block_n
  width = list_width(topk)
  while width > 8 and block_n > 16:
    block_n //= 2
    width //= 2
  return TopKConfig(block_n=block_n, block_k=a.block_k, block_d=a.block_d,
                    num_warps=a.num_warps, num_stages=a.num_stages,
                    half_prepass=a.half_prepass)
