"""Block sizes, warps and pipeline stages for the Pallas kernels, per GPU.

Chosen by table look-up from the shapes, the dtype and the device's name, never
by autotuning on a user's first call. The numbers come from sweeps on the GPU
machine recorded in ``benchmarks/NOTES.md``; unknown cards get the safe
fallback (the Hopper entries are valid on any sm_80+ card, only slower or
faster).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class AssignConfig:
  """FlashAssign tiling.

  Attributes:
    block_n: points per program (kept on chip for the whole centroid sweep).
    block_k: centroids per streamed tile.
    block_d: feature columns per dot; smaller than the padded D means the
      kernel loops over D inside each centroid tile (large D, bounded shared
      memory) and re-reads the point tile from L2.
    num_warps, num_stages: Triton launch parameters.
  """

  block_n: int = 128
  block_k: int = 64
  block_d: int = 256
  num_warps: int = 4
  num_stages: int = 2


@dataclasses.dataclass(frozen=True)
class UpdateConfig:
  """Sort-inverse update tiling.

  Attributes:
    rows_per_item: most sorted points one program reduces (a cluster larger
      than this is split over several programs, so one huge cluster cannot
      serialise the update).
    block_rows: points gathered per step inside a program.
    block_d: feature columns per program (a second grid axis).
    num_warps, num_stages: Triton launch parameters.
  """

  rows_per_item: int = 256
  block_rows: int = 32
  block_d: int = 128
  num_warps: int = 4
  num_stages: int = 2


def next_pow2(v: int) -> int:
  return 1 << max(0, int(v) - 1).bit_length()


def device_kind() -> str:
  try:
    return jax.devices()[0].device_kind
  except RuntimeError:  # no backend
    return ""


def _is_16bit(dtype) -> bool:
  return jnp.dtype(dtype).itemsize == 2


def assign_config(n: int, k: int, d: int, dtype, *, exact_f32: bool = False,
                  kind: str | None = None) -> AssignConfig:
  """Tiling for FlashAssign on ``[n, d] x [k, d]`` points/centroids.

  ``exact_f32`` marks the 3-pass float32 dot, which needs three times the
  operand buffers (a 128-wide centroid tile overflows shared memory).
  """
  kind = device_kind() if kind is None else kind
  del kind  # one table for Hopper and for unknown cards so far
  dp = max(16, next_pow2(d))
  if not _is_16bit(dtype):
    # float32 operands: twice the bytes per element of the 16-bit tiles.
    block_k = 32 if exact_f32 else 64
    return AssignConfig(block_n=64 if dp > 128 else 128, block_k=block_k,
                        block_d=min(dp, 128), num_warps=4, num_stages=2)
  if dp <= 128:
    return AssignConfig(block_n=128, block_k=128 if k >= 128 else 64, block_d=dp,
                        num_warps=8, num_stages=3)
  if dp <= 256:
    return AssignConfig(block_n=128, block_k=64, block_d=dp, num_warps=8, num_stages=2)
  # Large D: tile D inside the kernel so shared memory stays bounded.
  return AssignConfig(block_n=128, block_k=64, block_d=128, num_warps=8, num_stages=2)


def update_config(n: int, k: int, d: int, dtype, *, kind: str | None = None) -> UpdateConfig:
  """Tiling for the sort-inverse update of ``[n, d]`` points into ``k`` sums."""
  del n, k, dtype, kind
  dp = max(16, next_pow2(d))
  return UpdateConfig(rows_per_item=256, block_rows=32, block_d=min(dp, 128), num_warps=4,
                      num_stages=2)
