"""What the current device is: CUDA or not, and which GPU family."""

from __future__ import annotations

import jax


def device_kind() -> str:
  """``jax.devices()[0].device_kind`` (``""`` when no backend is up)."""
  try:
    return jax.devices()[0].device_kind
  except RuntimeError:  # no backend
    return ""


def gpu_family(kind: str) -> str:
  """``"hopper"`` for H100/H200/GH200 (measured tables), else ``"fallback"``."""
  k = kind.upper()
  return "hopper" if any(t in k for t in ("H100", "H200", "GH200", "H800", "H20")) else "fallback"


def on_cuda() -> bool:
  """Whether the default device is a CUDA GPU (where the Pallas kernels run)."""
  try:
    dev = jax.devices()[0]
  except RuntimeError:
    return False
  return dev.platform == "gpu" and "cuda" in getattr(dev.client, "platform_version", "cuda").lower()
