"""The inverse map of a labelling: points grouped by cluster.

Sparse attention permutes tokens by cluster and needs each cluster's offset
and size; IVF builders need inverted lists. :func:`kmeans` returns these with
``return_order=True`` (from its final labels); :func:`cluster_order` gives the
same triple for any labels, e.g. those of :func:`flashkmeans_jax.assign`.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax

from flashkmeans_jax.core import validation
from flashkmeans_jax.ops.cluster_sums import sort

__all__ = ["ClusterOrder", "cluster_order"]


class ClusterOrder(NamedTuple):
  """Points grouped by cluster (every field gains the leading batch axes of
  the labels).

  Attributes:
    order: ``int32[N]`` stable permutation: cluster ``j``'s points are
      ``order[offsets[j]:offsets[j + 1]]`` in ascending index order, so
      ``x[order]`` is x in cluster order.
    offsets: ``int32[K + 1]`` run starts; ``offsets[0] == 0``,
      ``offsets[K] == N``.
    sizes: ``int32[K]`` points per cluster (``bincount(labels, minlength=K)``).
  """

  order: jax.Array
  offsets: jax.Array
  sizes: jax.Array


@functools.partial(jax.jit, static_argnames=("k",))
def _segments(labels, *, k):
  fn = functools.partial(sort.cluster_segments, k=k)
  for _ in range(labels.ndim - 1):
    fn = jax.vmap(fn)
  return ClusterOrder(*fn(labels))


def cluster_order(labels: jax.Array, k: int) -> ClusterOrder:
  """The points of each cluster as one run of a stable permutation.

  Args:
    labels: ``int[..., N]`` cluster of every point, in ``[0, k)`` (leading
      axes are batch axes, e.g. ``batched_kmeans``' ``[B, N]`` labels). Every
      point is placed by its label, whatever its weight: mask padded points
      by giving them their own cluster or by dropping them from ``order``
      afterwards.
    k: number of clusters (a Python int: it fixes the shapes).

  Returns:
    :class:`ClusterOrder` ``(order int32[..., N], offsets int32[..., k + 1],
    sizes int32[..., k])``: one stable sort of the labels and k binary
    searches per row, compiled once per shape (also inside ``jit``/``vmap``).

  Raises:
    ValueError / TypeError: labels not an integer array with a point axis,
    ``k`` not a positive int, or (concrete labels) a label outside ``[0, k)``.
  """
  k = validation.check_k(k)
  if not hasattr(labels, "shape") or getattr(labels, "ndim", 0) < 1:
    raise ValueError(f"labels must be an array [..., N], got "
                     f"{getattr(labels, 'shape', type(labels).__name__)}")
  validation.check_labels(labels, labels.shape[-1], tuple(labels.shape[:-1]), k=k)
  return _segments(labels, k=k)
