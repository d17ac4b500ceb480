"""The top-k assignment op: one entry point over its implementations.

:func:`assign_topk` takes validated, resolved options (``impl`` one of
``"xla"``, ``"pallas"``, ``"pallas_interpret"``; ``precision`` resolved by
:mod:`flashkmeans_jax.core.precision`) and picks the tiled XLA path or the
Pallas kernel. The checked public function is
:func:`flashkmeans_jax.assign_topk`.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from flashkmeans_jax.core import metric as metric_mod
from flashkmeans_jax.core import precision as precision_mod
from flashkmeans_jax.ops.assign_topk import xla

__all__ = ["assign_topk", "MAX_TOPK"]

# The largest k: the kernel keeps each point's list in registers.
MAX_TOPK = 32


def _nonfinite_rows(x, idx, dist):
  # A point holding NaN or Inf has NaN scores, whose order means nothing:
  # it gets centroids 0..k-1 and NaN distances (assign's label 0 and NaN).
  bad = ~jnp.isfinite(metric_mod.row_sqnorm(x))[:, None]
  k = idx.shape[1]
  idx = jnp.where(bad, jnp.arange(k, dtype=jnp.int32)[None, :], idx)
  return idx, jnp.where(bad, jnp.nan, dist)


def assign_topk(x: jax.Array, centroids: jax.Array, k: int, metric: str, impl: str,
                precision: Any, config: Any = None) -> tuple[jax.Array, jax.Array]:
  """``(indices int32[N, k], distances float32[N, k])`` of ``x [N, D]`` to
  ``centroids [K, D]`` (``1 <= k <= min(K, MAX_TOPK)``; no argument checks).

  Ascending by distance; equal scores by lower centroid index. No gradient:
  the inputs pass through ``lax.stop_gradient``. A
  :class:`~flashkmeans_jax.core.precision.Certified` precision runs its base
  dot (the top-k is not certified).
  """
  x = lax.stop_gradient(x)
  centroids = lax.stop_gradient(centroids)
  precision = precision_mod.dot_precision(precision)
  if impl == "xla":
    idx, dist = xla.assign_topk_xla(x, centroids, k, metric=metric, precision=precision)
  else:
    # Imported here so that the CPU path never imports the Triton lowering.
    from flashkmeans_jax.ops.assign_topk import pallas_triton
    idx, dist = pallas_triton.flash_assign_topk(
        x, centroids, k, metric=metric, precision=precision, config=config,
        interpret=(impl == "pallas_interpret"))
  return _nonfinite_rows(x, idx, dist)
