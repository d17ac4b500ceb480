"""The cluster-sums op: one entry point over its implementations (the checked
public functions are :func:`flashkmeans_jax.cluster_sums` and
:func:`flashkmeans_jax.update`)."""

from __future__ import annotations

from flashkmeans_jax.ops.cluster_sums import xla

__all__ = ["cluster_sums"]


def cluster_sums(x, labels, k, weights=None, impl="xla", config=None):
  """Per-cluster float32 sums ``[K, D]`` and weight sums ``[K]`` of ``x [N, D]``
  by the resolved ``impl`` (``"xla"``, ``"pallas"``, ``"pallas_interpret"``).

  No argument checks: callers validated once at the public boundary (on
  concrete arrays the label range check is a device reduction and a host
  sync, which has no place in a per-chunk or per-iteration hot path)."""
  if impl == "xla":
    return xla.cluster_sums_xla(x, labels, k, weights)
  # Imported here so that the CPU path never imports the Triton lowering.
  from flashkmeans_jax.ops.cluster_sums import config as config_mod
  interpret = impl == "pallas_interpret"
  cfg = config or config_mod.update_config(x.shape[0], k, x.shape[1], x.dtype)
  if cfg.dense:
    from flashkmeans_jax.ops.cluster_sums import pallas_dense
    return pallas_dense.dense_cluster_sums(x, labels, k, weights=weights, config=cfg,
                                           interpret=interpret)
  from flashkmeans_jax.ops.cluster_sums import pallas_triton
  return pallas_triton.sorted_cluster_sums(x, labels, k, weights=weights, config=cfg,
                                           interpret=interpret)
