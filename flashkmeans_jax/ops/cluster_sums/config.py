"""Tiling of the sort-inverse cluster-sums kernel, per GPU (table look-up, as
:mod:`flashkmeans_jax.ops.assign.config`; numbers from ``benchmarks/NOTES.md``)."""

from __future__ import annotations

import dataclasses

from flashkmeans_jax.core import device
from flashkmeans_jax.core import tiling


@dataclasses.dataclass(frozen=True, kw_only=True)
class UpdateConfig(tiling.TritonLaunch):
  """Sort-inverse update tiling.

  Attributes:
    rows_per_item: most sorted points one program reduces (a cluster larger
      than this is split over several programs, so one huge cluster cannot
      serialise the update).
    block_rows: points gathered per step inside a program.
    block_d: feature columns per program (a second grid axis).
    num_warps, num_stages: Triton launch parameters (:class:`TritonLaunch`;
      8 warps by default here).
    fold_rows: sum the gathered rows of each step right away into a
      ``[block_d]`` accumulator instead of keeping ``[block_rows, block_d]``
      partials until the end (fewer registers, so larger steps fit).
  """

  rows_per_item: int = 256
  block_rows: int = 32
  block_d: int = 128
  fold_rows: bool = False
  num_warps: int = 8


def update_config(n: int, k: int, d: int, dtype, *, kind: str | None = None) -> UpdateConfig:
  """Tiling for the sort-inverse update of ``[n, d]`` points into ``k`` sums."""
  del n, k, dtype
  kind = device.device_kind() if kind is None else kind
  dp = max(16, tiling.next_pow2(d))
  if device.gpu_family(kind) == "fallback":
    return UpdateConfig(rows_per_item=256, block_rows=32, block_d=min(dp, 128), num_warps=4,
                        num_stages=2)
  return UpdateConfig(rows_per_item=256, block_rows=32, block_d=min(dp, 128), num_warps=8,
                      num_stages=2)
