"""Integer helpers for tile sizes."""

from __future__ import annotations

import dataclasses


def cdiv(a: int, b: int) -> int:
  """Ceiling of ``a / b`` for positive ints."""
  return -(-a // b)


def next_pow2(v: int) -> int:
  """Smallest power of two ``>= v`` (1 for ``v <= 1``)."""
  return 1 << max(0, int(v) - 1).bit_length()


@dataclasses.dataclass(frozen=True, kw_only=True)
class TritonLaunch:
  """Launch parameters every Triton-lowered kernel's config carries.

  Attributes:
    num_warps: warps per program.
    num_stages: software-pipelining depth of the kernel's loops.
  """

  num_warps: int = 4
  num_stages: int = 2

  def compiler_params(self):
    """The ``pallas_call`` compiler parameters that select the Triton lowering."""
    # Imported here: core must import without the Pallas GPU backend loaded.
    from jax.experimental.pallas import triton as plgpu
    return plgpu.CompilerParams(num_warps=self.num_warps, num_stages=self.num_stages)
