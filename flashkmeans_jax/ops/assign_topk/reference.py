"""Dense plain-JAX reference of the top-k assignment (tests only).

Builds the whole ``[N, K]`` score matrix with the operands every assignment
shares (:func:`flashkmeans_jax.ops.assign.reference.operands`) and sorts each
row stably, so equal scores keep the lower centroid index first. The XLA path
and the Pallas kernel compute the same k entries without the ``[N, K]``
matrix.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from flashkmeans_jax.core import metric as metric_mod
from flashkmeans_jax.core import precision as precision_mod
from flashkmeans_jax.ops.assign import reference as assign_ref

__all__ = ["topk_reference", "finish_topk", "stable_smallest"]


def stable_smallest(s: jax.Array, k: int) -> tuple[jax.Array, jax.Array]:
  """``(values [..., k], indices int32 [..., k])``: the k smallest entries of
  every row of ``s [..., M]`` ascending, equal values by lower index.

  ``lax.sort`` on the pair (value, column) makes the order total, so the tie
  rule does not depend on the sort being stable."""
  cols = lax.broadcasted_iota(jnp.int32, s.shape, s.ndim - 1)
  vals, idx = lax.sort((s, cols), dimension=s.ndim - 1, num_keys=2)
  return vals[..., :k], idx[..., :k]


def finish_topk(scores: jax.Array, xsq: jax.Array, metric: str) -> jax.Array:
  """float32 distances ``[N, k]`` from raw scores ``[N, k]`` and ``||x||^2 [N]``
  (:func:`flashkmeans_jax.core.metric.finish_distance`, row by row). Every
  finish is non-decreasing in the score, so ascending scores give ascending
  distances."""
  return metric_mod.finish_distance(scores, xsq[:, None].astype(scores.dtype),
                                    metric).astype(jnp.float32)


def topk_reference(x: jax.Array, centroids: jax.Array, k: int, *,
                   metric: str = "sqeuclidean",
                   precision: Any = None) -> tuple[jax.Array, jax.Array]:
  """``(indices int32[N, k], distances float32[N, k])`` from the dense
  ``[N, K]`` scores of ``x [N, D]`` against ``centroids [K, D]``."""
  precision = precision_mod.dot_precision(precision_mod.resolve_precision(precision))
  c, bias, c_inverse = assign_ref.operands(x, centroids, metric, precision)
  x_op, row_factor = assign_ref.half_operands(x, c, c_inverse)
  s = assign_ref.scores(x_op, c, bias, precision, row_factor)
  vals, idx = stable_smallest(s, k)
  return idx, finish_topk(vals, metric_mod.row_sqnorm(x), metric)
