"""Per-cluster sums and counts: reference, XLA path, sort, Pallas (Triton)
sort-inverse kernel, per-GPU config and the op entry point :mod:`.api`."""
