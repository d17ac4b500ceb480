"""Block sizes, warps and pipeline stages of the FlashAssign kernel, per GPU.

Chosen by table look-up from the shapes, the dtype and the device's name, never
by autotuning on a user's first call. The numbers come from sweeps on the GPU
machine recorded in ``benchmarks/NOTES.md``; unknown cards get the safe
fallback (the Hopper entries are valid on any sm_80+ card, only slower or
faster).
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp

from flashkmeans_jax.core import device
from flashkmeans_jax.core import tiling


@dataclasses.dataclass(frozen=True, kw_only=True)
class AssignConfig(tiling.TritonLaunch):
  """FlashAssign tiling.

  Attributes:
    block_n: points per program (kept on chip for the whole centroid sweep).
    block_k: centroids per streamed tile.
    block_d: feature columns per dot; smaller than the padded D means the
      kernel loops over D inside each centroid tile (large D, bounded shared
      memory) and re-reads the point tile from L2.
    num_warps, num_stages: Triton launch parameters (:class:`TritonLaunch`).
    deferred_argmin: keep an element-wise ``[block_n, block_k]`` running
      minimum over the centroid tiles and reduce it over the centroids once at
      the end, instead of a min and an argmin reduction per tile.
    half_prepass: with ``F16_F16_F32`` on float32 points, scale and cast the
      points to float16 in an XLA pass before the kernel (a temporary
      ``[N, D]`` float16 copy) instead of on chip.
  """

  block_n: int = 128
  block_k: int = 64
  block_d: int = 256
  deferred_argmin: bool = False
  half_prepass: bool = False


def _is_16bit(dtype) -> bool:
  return jnp.dtype(dtype).itemsize == 2


def assign_config(n: int, k: int, d: int, dtype, *, exact_f32: bool = False,
                  operand_dtype=None, kind: str | None = None) -> AssignConfig:
  """Tiling for FlashAssign on ``[n, d] x [k, d]`` points/centroids.

  ``exact_f32`` marks the 3-pass float32 dot, which needs three times the
  operand buffers (a 128-wide centroid tile overflows shared memory).
  ``operand_dtype`` is the 16-bit type float32 points are cast to on chip
  (``F16_F16_F32`` / ``BF16_BF16_F32``): the streamed centroid tiles and the
  dot are those of 16-bit points, so their table applies. Swept at D=128 on
  an H200 (``bench_tuning.py --half``): its 128x128, 4-warp, 2-stage entry was
  the fastest of 8 tilings at K=1024 and K=8192 (405 TFLOP/s at K=8192,
  against 197 for TF32 and 563 for float16 points).

  From K=4096 on, float16 operands are prepared in an XLA pass
  (``half_prepass``). The on-chip cast itself is what costs (a plain bfloat16
  cast runs 414 TFLOP/s where float16 points run 541, and the scaling adds
  only 4 %), and from K=4096 on one extra pass over the points costs less
  (H200, N=2^18..2^20: K=8192 463 against 397 TFLOP/s, K=4096 D=256 419
  against 350); at K=1024 the pass costs more than it saves (292 against
  329).
  """
  cfg = _assign_tiles(n, k, d, dtype, exact_f32, operand_dtype, kind)
  if operand_dtype is not None and jnp.dtype(operand_dtype) == jnp.float16 and k >= 4096:
    cfg = dataclasses.replace(cfg, half_prepass=True)
  return cfg


def _assign_tiles(n, k, d, dtype, exact_f32, operand_dtype, kind) -> AssignConfig:
  kind = device.device_kind() if kind is None else kind
  if operand_dtype is not None:
    dtype = operand_dtype
  dp = max(16, tiling.next_pow2(d))
  if device.gpu_family(kind) == "fallback":
    # Unknown card (Ampere, Ada, consumer parts): small tiles that fit ~100 KB
    # of shared memory with two stages, whatever the dtype.
    return AssignConfig(block_n=64, block_k=32 if exact_f32 else 64, block_d=min(dp, 128),
                        num_warps=4, num_stages=2)
  if not _is_16bit(dtype):
    # float32 operands: twice the bytes per element of the 16-bit tiles.
    # Swept at D=128 on an H200 (bench_tuning.py --float32 --stage1): TF32
    # runs fastest unpipelined (num_stages=1): 1.52 ms at N=2^20, K=1024 and
    # 2.83 ms at N=2^18, K=8192, against 1.65 / 3.01 ms for the best
    # pipelined tiles (256x64, 8 warps, 3 stages). The 3-pass dot keeps three
    # operand copies per tile, so its centroid tile is halved.
    if exact_f32:
      return AssignConfig(block_n=128, block_k=32, block_d=min(dp, 128), num_warps=4,
                          num_stages=2)
    if dp <= 128:
      return AssignConfig(block_n=128, block_k=64, block_d=dp, num_warps=4, num_stages=1)
    return AssignConfig(block_n=64, block_k=64, block_d=128, num_warps=4, num_stages=2)
  # 16-bit operands, from the sweeps on an H200 (benchmarks/NOTES.md): the
  # point tile stays in registers up to D=256; beyond that D is tiled by 128
  # inside the kernel (a 512-wide tile overflows shared memory).
  if dp <= 128:
    return AssignConfig(block_n=128, block_k=128, block_d=dp, num_warps=4, num_stages=2)
  if dp <= 256:
    return AssignConfig(block_n=256, block_k=64, block_d=dp, num_warps=8, num_stages=3)
  return AssignConfig(block_n=128, block_k=128, block_d=128, num_warps=8, num_stages=3)
