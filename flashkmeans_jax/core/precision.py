"""Matmul precision of float32 dots, as JAX names it."""

from __future__ import annotations

from typing import Any

import jax
from jax import lax

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
