"""Choice of implementation and matmul precision."""

from __future__ import annotations

from typing import Any

import jax
from jax import lax

from flashkmeans_jax import _checks


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
  impl = _checks.check_impl(impl)
  if impl != "auto":
    return impl
  if not _on_cuda():
    return "xla"
  if (n is not None and k is not None and n * k < SMALL_PROBLEM_PAIRS
      and batch * n * k < SMALL_BATCH_PAIRS):
    return "xla"
  return "pallas"


def _on_cuda() -> bool:
  try:
    dev = jax.devices()[0]
  except RuntimeError:
    return False
  return dev.platform == "gpu" and "cuda" in getattr(dev.client, "platform_version", "cuda").lower()


_PRECISION_NAMES = {
    "default": lax.Precision.DEFAULT,
    "fastest": lax.Precision.DEFAULT,
    "bfloat16": lax.Precision.DEFAULT,
    "high": lax.Precision.HIGH,
    "tensorfloat32": lax.Precision.HIGH,
    "bfloat16_3x": lax.Precision.HIGH,
    "highest": lax.Precision.HIGHEST,
    "float32": lax.Precision.HIGHEST,
}


def resolve_precision(precision: Any) -> Any:
  """Returns a ``lax.Precision`` or ``lax.DotAlgorithmPreset`` for a float32 dot.

  ``None`` follows ``jax.default_matmul_precision`` (JAX's own convention);
  strings are those JAX accepts there; ``lax.Precision`` and
  ``lax.DotAlgorithmPreset`` values pass through unchanged.
  """
  if precision is None:
    precision = jax.config.jax_default_matmul_precision
    if precision is None:
      return lax.Precision.DEFAULT
  if isinstance(precision, (lax.Precision, lax.DotAlgorithmPreset)):
    return precision
  if isinstance(precision, str):
    key = precision.lower()
    if key in _PRECISION_NAMES:
      return _PRECISION_NAMES[key]
    try:
      return lax.DotAlgorithmPreset[precision.upper()]
    except KeyError:
      pass
  raise ValueError(
      "precision must be None, a lax.Precision, a lax.DotAlgorithmPreset or one "
      f"of {sorted(_PRECISION_NAMES)}, got {precision!r}")


def is_exact(precision: Any) -> bool:
  """Whether a float32 dot at this precision is float32-accurate."""
  return precision in (
      lax.Precision.HIGHEST,
      lax.DotAlgorithmPreset.F32_F32_F32,
      lax.DotAlgorithmPreset.TF32_TF32_F32_X3,
      lax.DotAlgorithmPreset.BF16_BF16_F32_X6,
      lax.DotAlgorithmPreset.BF16_BF16_F32_X9,
  )
