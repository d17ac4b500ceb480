"""Nearest centroid of every point: reference, XLA path, Pallas (Triton)
kernel, per-GPU config and the op entry point :mod:`.api`."""
