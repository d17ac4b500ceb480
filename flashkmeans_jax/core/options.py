"""The validated options of a Lloyd run, as the lower layers take them.

:mod:`flashkmeans_jax.core.validation` builds a :class:`LloydOptions` once per
public call; everything below the public functions trusts it. It is a
NamedTuple of hashable values, so it passes as one static argument of ``jit``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from flashkmeans_jax.core.types import EmptyPolicy, Metric

__all__ = ["LloydOptions"]


class LloydOptions(NamedTuple):
  """Static options of one Lloyd run.

  Attributes:
    k: number of clusters.
    max_iter: most iterations.
    tol: relative tolerance (times the mean per-feature variance).
    metric: ``"sqeuclidean"``, ``"cosine"`` or ``"dot"``.
    empty: ``"keep"`` or ``"farthest"``.
    impl: resolved implementation: ``"xla"``, ``"pallas"`` or
      ``"pallas_interpret"``.
    precision: resolved float32 dot precision (``lax.Precision`` or preset).
    config: the assignment kernel's config, or ``None`` (per-GPU table).
    verbose: print progress every iteration.
    init: ``"k-means++"``, ``"random"`` or ``"array"`` (explicit centroids).
    n_init: restarts (1 with an explicit init).
    final_assign: label the points once more after the loop, for the
      returned centroids (``False``: the last iteration's labels stand).
  """

  k: int
  max_iter: int = 300
  tol: float = 1e-4
  metric: Metric = "sqeuclidean"
  empty: EmptyPolicy = "keep"
  impl: str = "xla"
  precision: Any = None
  config: Any = None
  verbose: bool = False
  init: str = "k-means++"
  n_init: int = 1
  final_assign: bool = True
