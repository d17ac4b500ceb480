"""Integer helpers for tile sizes."""

from __future__ import annotations


def cdiv(a: int, b: int) -> int:
  """Ceiling of ``a / b`` for positive ints."""
  return -(-a // b)


def next_pow2(v: int) -> int:
  """Smallest power of two ``>= v`` (1 for ``v <= 1``)."""
  return 1 << max(0, int(v) - 1).bit_length()
