"""Data-parallel k-means on JAX sharding (see :mod:`.lloyd`)."""
