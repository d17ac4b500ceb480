"""Result type, the seeding options and the names of metrics, implementations
and policies."""

from __future__ import annotations

import dataclasses
from typing import Literal, NamedTuple, get_args

import jax

# The annotations of the options, and (derived from them, so the two cannot
# drift apart) the tuples the validation checks against.
Metric = Literal["sqeuclidean", "cosine", "dot"]
Impl = Literal["auto", "xla", "pallas", "pallas_interpret"]
EmptyPolicy = Literal["keep", "farthest"]
InitName = Literal["k-means++", "random", "k-means||"]

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
      entered iteration ``i``); NaN past ``n_iter``. In a batch every member
      has its own: NaN from that member's own ``n_iter`` on (a member that
      converged stops changing while the others go on).
    order: ``int32[N]`` or ``None`` (only with ``return_order=True``): a stable
      permutation of the points grouping them by ``labels``: cluster ``j``'s
      points are ``order[offsets[j]:offsets[j + 1]]``, in ascending index
      order. Every point is placed by its label, zero-weight (padding) points
      included.
    offsets: ``int32[K + 1]`` or ``None``: where each cluster's run of
      ``order`` starts; ``offsets[0] == 0`` and ``offsets[K] == N``.
    sizes: ``int32[K]`` or ``None``: points per cluster (``offsets``'
      differences, i.e. ``bincount(labels, minlength=K)``, weights ignored).
  """

  centroids: jax.Array
  labels: jax.Array
  inertia: jax.Array
  n_iter: jax.Array
  converged: jax.Array
  inertia_history: jax.Array
  # Optional fields (None is an empty pytree, so results without them keep
  # their structure under jit, vmap and shard_map).
  order: jax.Array | None = None
  offsets: jax.Array | None = None
  sizes: jax.Array | None = None


class SeedingOptions(NamedTuple):
  """Static options of the seeding and of the training sample (validated by
  :func:`flashkmeans_jax.core.option_checks.seeding_options`; hashable).

  Attributes:
    n_local_trials: candidates per step of greedy k-means++ (also the
      reclustering step of k-means||); ``None``: ``2 + floor(log k)``.
    oversampling_factor: k-means|| draws ``oversampling_factor * k`` points per
      round in expectation (Bahmani et al.'s ``l``); ``None``: 0.25.
    init_rounds: k-means|| rounds; ``None``: 8.
    max_points_per_centroid: when ``N > k * max_points_per_centroid`` seed and
      iterate on a uniform sample of ``k * max_points_per_centroid`` usable
      points, then label all points; ``None``: off.
  """

  n_local_trials: int | None = None
  oversampling_factor: float | None = None
  init_rounds: int | None = None
  max_points_per_centroid: int | None = None
