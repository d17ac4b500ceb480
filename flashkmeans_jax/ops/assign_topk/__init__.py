"""Fused top-k assignment: the k nearest centroids of every point (see
:mod:`flashkmeans_jax.ops.assign_topk.api`)."""
