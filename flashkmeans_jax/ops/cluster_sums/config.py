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
    dense: use the one-hot block kernel of
      :mod:`~flashkmeans_jax.ops.cluster_sums.pallas_dense` (no sort) instead
      of the sort-inverse one; the remaining ``dense_*`` fields tile it.
    dense_rows: points per program of the dense kernel.
    dense_sub_rows: points per step inside a program (``dense_rows`` is a
      multiple of it).
    dense_block_k: clusters compared per step (the one-hot mask is
      ``[dense_sub_rows, dense_block_k]``).
  """

  rows_per_item: int = 256
  block_rows: int = 32
  block_d: int = 128
  fold_rows: bool = False
  dense: bool = False
  dense_rows: int = 4096
  dense_sub_rows: int = 128
  dense_block_k: int = 32
  num_warps: int = 8


# The dense kernel does about N * K * (D + 2) selects and adds (K padded to
# its chunk) and one strided load per feature; the sorted one a sort, a work
# list and a 16-wide gather per point, whatever K. On the H200 the dense
# kernel won at K * (D + 2) <= 96 (K=16 with D <= 4, K=8 with D=1), tied at
# K=64, D=1 and lost at K=16, D=8 and beyond (benchmarks/NOTES.md, eighth
# session): only the measured wins take it.
DENSE_MAX_D = 4
DENSE_MAX_WORK = 96


# The codebook gradient of `assign` is one weighted cluster sum of labels
# that the forward did not sort. On the H200 (jax 0.11.2, ninth session) at
# N=65536, D=32 (K=512, 1024) sorting 65536 labels alone took 0.10-0.15 ms
# and the sort-inverse sums 0.11-0.14 ms against 0.055 ms for XLA's
# segment sum: value_and_grad / forward 1.33-2.13 with XLA, 2.01-3.16 with
# the kernel. At N=262144, D=64 (2^24 elements) the kernel won (2.10 vs
# 2.21). Eleventh session, both ways on six rows of 2^22-2^23 elements
# (training-bwd-threshold_h200_2026-12-03.json): XLA won every one, e.g.
# 65536x64, K=1024: 1.88 against 2.53 (bfloat16), 1.64 against 2.44
# (float32); 131072x64: 1.92 / 1.84 (bfloat16, a tie), 1.49 / 1.75
# (float32). Up to this many elements the backward takes XLA's sums
# (atomics: not bit-identical from run to run on the GPU).
BACKWARD_XLA_MAX_ELEMENTS = 1 << 23


def backward_sums_impl(n: int, d: int, impl: str) -> str:
  """The cluster-sums ``impl`` of the codebook gradient of ``[n, d]`` points:
  XLA's segment sum on the GPU up to :data:`BACKWARD_XLA_MAX_ELEMENTS`
  elements (no sort to amortise), else ``impl`` (interpret mode keeps the
  kernel, so the CPU tests exercise it)."""
  return "xla" if impl == "pallas" and n * d <= BACKWARD_XLA_MAX_ELEMENTS else impl


def update_config(n: int, k: int, d: int, dtype, *, kind: str | None = None) -> UpdateConfig:
  """Tiling for the sort-inverse update of ``[n, d]`` points into ``k`` sums."""
  del n, dtype
  kind = device.device_kind() if kind is None else kind
  dp = max(16, tiling.next_pow2(d))
  if d <= DENSE_MAX_D and max(16, tiling.next_pow2(k)) * (d + 2) <= DENSE_MAX_WORK:
    # Tiles from the sweep of bench_update_small.py: [128, 32] masks, 4096
    # rows a program; a narrower chunk where D + 2 accumulators crowd the
    # registers.
    return UpdateConfig(dense=True, dense_rows=4096, dense_sub_rows=128,
                        dense_block_k=32 if d <= 2 else 16, num_warps=4, num_stages=2)
  if device.gpu_family(kind) == "fallback":
    return UpdateConfig(rows_per_item=256, block_rows=32, block_d=min(dp, 128), num_warps=4,
                        num_stages=2)
  return UpdateConfig(rows_per_item=256, block_rows=32, block_d=min(dp, 128), num_warps=8,
                      num_stages=2)
