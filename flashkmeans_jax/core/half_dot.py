"""float32 scores from 16-bit tensor-core dots: the ``F16_F16_F32`` and
``BF16_BF16_F32`` precisions for float32 points.

The default float32 dot on NVIDIA GPUs is TF32: each operand keeps 10
mantissa bits and products add up in float32. float16 keeps the same 10
mantissa bits (rounding to nearest) and runs at twice the TF32 tensor-core
rate, but only over 2^-14 .. 65504. Scaling every point row and the centroid
matrix by a power of two so that its largest magnitude lies in [2^14, 2^15)
removes the range problem: a power-of-two scale changes no mantissa, so each
operand keeps the 11 significant bits TF32 keeps (rounded to nearest even;
the TF32 conversion may break ties differently), except entries below
2^-28 of their row's (or the centroids') largest one, which float16 keeps as
subnormals with an absolute error of at most 2^-25 of that largest entry.
The product of the two scales is undone on the float32 result, exactly.

``BF16_BF16_F32`` (8 mantissa bits, float32's range) needs no scaling and is
less accurate than TF32; it is offered because JAX offers it.

Both the Pallas kernel and the XLA path use these helpers, so they compute
the same scaled operands; only the accumulation order of the dot differs.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

__all__ = ["operand_dtype", "pow2_scale", "scale_rows", "scale_matrix"]

_PRESETS = {
    lax.DotAlgorithmPreset.F16_F16_F32: jnp.float16,
    lax.DotAlgorithmPreset.BF16_BF16_F32: jnp.bfloat16,
}

# Scaled maxima land in [2^(_TOP - 1), 2^_TOP): 2^15 < 65504, so rounding to
# float16 never overflows.
_TOP = 15


def operand_dtype(dtype, precision: Any):
  """The 16-bit dtype float32 operands are cast to, or ``None``.

  Only float32 points with one of the two presets take this path; 16-bit
  points already run natively and float64 stays on XLA's own dot.
  """
  if jnp.dtype(dtype) != jnp.float32:
    return None
  return _PRESETS.get(precision)


def pow2_scale(maxabs: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Powers of two ``(scale, 1 / scale)`` for non-negative float32 ``maxabs``.

  ``scale * maxabs`` lies in ``[2^14, 2^15)`` for ``maxabs >= 2^-111``; below
  that (and for 0) the scale stops at 2^126 so that both it and its inverse
  stay normal floats. Built from the exponent bits, not ``log2``, so it is
  exact and lowers in a Pallas kernel as well as in XLA.
  """
  bits = lax.bitcast_convert_type(maxabs.astype(jnp.float32), jnp.int32)
  exponent = lax.shift_right_logical(bits, jnp.int32(23)) & 0xFF  # biased
  # maxabs = m * 2^(e - 127) with m in [1, 2); scale = 2^(_TOP - 1 - (e - 127)).
  biased = jnp.clip((_TOP - 1 + 254) - exponent, 1, 253)
  scale = lax.bitcast_convert_type(lax.shift_left(biased, jnp.int32(23)), jnp.float32)
  inverse = lax.bitcast_convert_type(lax.shift_left(254 - biased, jnp.int32(23)),
                                     jnp.float32)
  return scale, inverse


def scale_rows(x: jax.Array, dtype) -> tuple[jax.Array, jax.Array]:
  """float32 ``x [N, D]`` as ``dtype`` operands, one power of two per row.

  Returns ``(x_op dtype[N, D], inverse float32[N])`` with ``x = x_op *
  inverse[:, None]`` up to the rounding of the cast. bfloat16 is not scaled
  (its range is float32's), so its inverse is 1.
  """
  if jnp.dtype(dtype) == jnp.bfloat16:
    return x.astype(dtype), jnp.ones(x.shape[:1], jnp.float32)
  scale, inverse = pow2_scale(jnp.max(jnp.abs(x), axis=1))
  return (x * scale[:, None]).astype(dtype), inverse


def scale_matrix(c: jax.Array, dtype) -> tuple[jax.Array, jax.Array]:
  """float32 ``c [K, D]`` as ``dtype`` operands with one power of two for all.

  Returns ``(c_op dtype[K, D], inverse float32[])``. One scale for the whole
  matrix keeps the centroids' relative sizes, which the argmin compares.
  """
  if jnp.dtype(dtype) == jnp.bfloat16:
    return c.astype(dtype), jnp.ones((), jnp.float32)
  scale, inverse = pow2_scale(jnp.max(jnp.abs(c)))
  return (c * scale).astype(dtype), inverse
