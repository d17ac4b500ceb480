"""Matmul precision of float32 dots, as JAX names it, and the certified mode.

A resolved precision is a ``lax.Precision``, a ``lax.DotAlgorithmPreset`` or
a :class:`Certified` wrapper around one of them. ``Certified(base)`` asks the
assignment of float32 points to run its dot at ``base`` (the speed), keep the
runner-up score of every point, certify each label with a rigorous error
bound and recompute the uncertified points exactly
(:mod:`flashkmeans_jax.ops.assign.certified`): the labels are then the
float64 argmin up to the stated ties whatever ``base`` is. Only the
assignment reads it; any other dot takes :func:`dot_precision`.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
from jax import lax

__all__ = ["Certified", "resolve_precision", "is_certified", "dot_precision",
           "CERTIFIED_FLOAT32_DEFAULT_ON_GPU", "CERTIFIED_BASES"]

# The one switch: ``None`` (off), or the base of the certified mode that
# ``precision=None`` (with no ``jax.default_matmul_precision`` set) resolves
# to on GPU backends, e.g. ``lax.Precision.DEFAULT`` (TF32) or
# ``lax.DotAlgorithmPreset.F16_F16_F32``: float32 assignments then give
# float64 labels by default. Off until a measured cost
# (benchmarks/bench_certified.py) is <= 1.15x TF32.
CERTIFIED_FLOAT32_DEFAULT_ON_GPU: Any = None

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

_P = lax.DotAlgorithmPreset
# Bases whose operand rounding the certificate's bound models
# (flashkmeans_jax.ops.assign.bound); the FP8 and float64 presets are not.
CERTIFIED_BASES = (
    lax.Precision.DEFAULT, lax.Precision.HIGH, lax.Precision.HIGHEST, _P.DEFAULT,
    _P.F32_F32_F32, _P.TF32_TF32_F32, _P.TF32_TF32_F32_X3, _P.F16_F16_F32,
    _P.BF16_BF16_F32, _P.BF16_BF16_F32_X3, _P.BF16_BF16_F32_X6, _P.BF16_BF16_F32_X9)


class Certified(NamedTuple):
  """Certified float32 labels over a fast ``base`` dot (hashable, static).

  Attributes:
    base: the resolved precision of the fast pass (one of
      :data:`CERTIFIED_BASES`).
    capacity: fraction of the points the smallest compacted exact pass
      holds (static size ``ceil(capacity * N)``, at least 128 rows; the
      larger ones are 2, 4, ... times that, below N/2); more uncertified
      points than the largest run the exact pass on every point instead.
  """

  base: Any = lax.Precision.DEFAULT
  capacity: float = 1.0 / 256


def _error(precision):
  return ValueError(
      "precision must be None, a lax.Precision, a lax.DotAlgorithmPreset, one of "
      f"{sorted(_PRECISION_NAMES)}, 'certified' or 'certified:<one of those>', "
      f"got {precision!r}")


def _resolve_plain(precision: Any) -> Any:
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
  raise _error(precision)


def _on_gpu() -> bool:
  try:
    return jax.default_backend() == "gpu"
  except RuntimeError:  # no backend initialisable: not a GPU
    return False


def resolve_precision(precision: Any) -> Any:
  """Returns a ``lax.Precision``, a ``lax.DotAlgorithmPreset`` or a
  :class:`Certified` for a float32 dot.

  ``None`` follows ``jax.default_matmul_precision`` (JAX's own convention;
  with :data:`CERTIFIED_FLOAT32_DEFAULT_ON_GPU` set, on a GPU and with no JAX
  default set, ``Certified(<that base>)``); strings are those JAX accepts there, plus
  ``"certified"`` (``Certified(DEFAULT)``) and ``"certified:<name>"``
  (``Certified(<name> resolved)``); ``lax.Precision``,
  ``lax.DotAlgorithmPreset`` and :class:`Certified` values pass through (a
  Certified's base is resolved and checked).
  """
  if precision is None:
    precision = jax.config.jax_default_matmul_precision
    if precision is None:
      if CERTIFIED_FLOAT32_DEFAULT_ON_GPU is not None and _on_gpu():
        return resolve_precision(Certified(CERTIFIED_FLOAT32_DEFAULT_ON_GPU))
      return lax.Precision.DEFAULT
  if isinstance(precision, Certified):
    base = precision.base
    cap = precision.capacity
    if base is None or isinstance(base, Certified):
      raise _error(precision)
    if not isinstance(cap, (int, float)) or not 0.0 < float(cap) <= 1.0:
      raise ValueError(f"precision: Certified.capacity must be in (0, 1], got {cap!r}")
    base = _resolve_plain(base)
    if base not in CERTIFIED_BASES:
      raise ValueError(f"precision: Certified cannot bound the error of {base!r}; use "
                       f"one of {[str(b) for b in CERTIFIED_BASES]}")
    return Certified(base, float(cap))
  if isinstance(precision, str) and precision.lower().startswith("certified"):
    head, sep, tail = precision.partition(":")
    if head.lower() != "certified" or (sep and not tail):
      raise _error(precision)
    return resolve_precision(Certified(tail if sep else lax.Precision.DEFAULT))
  return _resolve_plain(precision)


def is_certified(precision: Any) -> bool:
  """Whether a resolved precision asks for certified labels."""
  return isinstance(precision, Certified)


def dot_precision(precision: Any) -> Any:
  """The precision a plain dot takes for a resolved ``precision``: a
  :class:`Certified`'s base, anything else unchanged."""
  return precision.base if isinstance(precision, Certified) else precision
