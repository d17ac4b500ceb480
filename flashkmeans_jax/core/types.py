"""Result type and the names of metrics, implementations and policies."""

from __future__ import annotations

import dataclasses
from typing import Literal, get_args

import jax

# The annotations of the options, and (derived from them, so the two cannot
# drift apart) the tuples the validation checks against.
Metric = Literal["sqeuclidean", "cosine", "dot"]
Impl = Literal["auto", "xla", "pallas", "pallas_interpret"]
EmptyPolicy = Literal["keep", "farthest"]
InitName = Literal["k-means++", "random"]

METRICS: tuple[str, ...] = get_args(Metric)
IMPLS: tuple[str, ...] = get_args(Impl)
EMPTY_POLICIES: tuple[str, ...] = get_args(EmptyPolicy)
INITS: tuple[str, ...] = get_args(InitName)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class KMeansResult:
  """What :func:`flashkmeans_jax.kmeans` returns (a pytree, so it passes
  through ``jit`` and ``vmap``; under ``vmap`` every field gains the batch
  axis).

  Attributes:
    centroids: ``[K, D]`` in the dtype of ``x``: the centroids after the last
      update.
    labels: ``int32[N]``: nearest centroid of every point, computed *from the
      returned centroids* by one final assignment after the loop.
    inertia: ``float32[]``: weighted sum of the final distances (same final
      assignment), so ``inertia == sum(weights * dist)`` for ``labels``.
    n_iter: ``int32[]``: Lloyd iterations run (assign + update pairs).
    converged: ``bool[]``: the loop stopped because the centroid shift fell to
      the tolerance, not because it reached ``max_iter``.
    inertia_history: ``float32[max_iter]``: inertia of the assignment made at
      the start of each iteration (entry ``i`` belongs to the centroids that
      entered iteration ``i``); NaN past ``n_iter``.
  """

  centroids: jax.Array
  labels: jax.Array
  inertia: jax.Array
  n_iter: jax.Array
  converged: jax.Array
  inertia_history: jax.Array
