"""Choice of implementation (XLA or the Pallas kernels) by backend and shape."""

from __future__ import annotations

from flashkmeans_jax.core import device


# Below this many point-centroid pairs per problem the whole iteration is a
# few microseconds of work and XLA's fused loop is as fast as the kernel
# launches, unless a batch (members and restarts share the launches) brings
# the total to SMALL_BATCH_PAIRS. Measured on an H200
# (benchmarks/bench_dispatch.py, N=16384, K=100, D=128): B=1 and B=8 are
# within noise either way (0.03-0.16 ms/iter); B=32 runs in 0.25-0.28 ms with
# the kernels against 0.43-0.44 ms with XLA, B=128 in 0.64-0.70 against 1.56.
# Under ``jax.vmap`` the choice sees one member only; pass ``impl="pallas"``
# for large batches of small problems there.
SMALL_PROBLEM_PAIRS = 1 << 22
SMALL_BATCH_PAIRS = 1 << 25


def resolve_impl(impl: str | None, n: int | None = None, k: int | None = None,
                 batch: int = 1) -> str:
  """Maps ``None``/``"auto"`` to the best implementation for the backend and shape.

  On CUDA GPUs: ``"pallas"`` (the Triton-lowered kernels), except for tiny
  problems (``n * k < SMALL_PROBLEM_PAIRS`` per problem and, over ``batch``
  problems run together, ``batch * n * k < SMALL_BATCH_PAIRS``) where XLA is
  as fast. Elsewhere ``"xla"``.
  """
  if impl is not None and impl != "auto":
    return impl
  if not device.on_cuda():
    return "xla"
  if (n is not None and k is not None and n * k < SMALL_PROBLEM_PAIRS
      and batch * n * k < SMALL_BATCH_PAIRS):
    return "xla"
  return "pallas"
