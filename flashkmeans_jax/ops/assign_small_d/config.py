"""Tiles of the small-D FMA kernel, and the D=1 method.

Chosen from the shapes by rule, never by autotuning on a user's first call.
The kernel keeps three ``[block_n, block_k]`` float32/int32 arrays in
registers (the scores of one centroid tile, the running element-wise minimum
and the tile it came from), so ``block_n * block_k`` is held near 4096
elements: 32 per thread of each with 4 warps, which leaves registers for the
point columns. Small K gets a narrow centroid tile and a tall point tile.
"""

from __future__ import annotations

import dataclasses

from flashkmeans_jax.core import tiling

__all__ = ["SmallDConfig", "small_d_config", "PAIRS_PER_PROGRAM"]

# block_n * block_k per program (see the module docstring).
PAIRS_PER_PROGRAM = 4096


@dataclasses.dataclass(frozen=True, kw_only=True)
class SmallDConfig(tiling.TritonLaunch):
  """Small-D assignment tiling.

  Attributes:
    block_n: points per program (their D columns stay in registers for the
      whole centroid sweep); a power of two.
    block_k: centroids per tile of the sweep; a power of two.
    deferred_argmin: keep an element-wise running minimum over the centroid
      tiles and reduce it across the tile once at the end (three operations
      per pair besides the D FMAs), instead of a min and an argmin reduction
      per tile.
    d1_search: for D=1, the exact sorted-centroid search (XLA, O(N log K))
      instead of the FMA kernel.
    num_warps, num_stages: Triton launch parameters.
  """

  block_n: int = 128
  block_k: int = 32
  deferred_argmin: bool = True
  d1_search: bool = True


def small_d_config(n: int, k: int, d: int) -> SmallDConfig:
  """Tiling for ``[n, d]`` points against ``[k, d]`` centroids, ``d < 16``.

  The centroid tile covers K when K is small (up to 64), otherwise 64; the
  point tile fills :data:`PAIRS_PER_PROGRAM` and is never taller than the
  points (rounded up to a power of two, at least 16).
  """
  del d  # the columns are unrolled; D does not change the tile shape
  block_k = min(64, max(16, tiling.next_pow2(k)))
  block_n = max(16, min(PAIRS_PER_PROGRAM // block_k, tiling.next_pow2(n)))
  return SmallDConfig(block_n=block_n, block_k=block_k, num_warps=4, num_stages=2)
