"""The compiled step behind ``KMeans.partial_fit``.

One call is :func:`flashkmeans_jax.minibatch_codebook`'s update -- the batch
assigned to the current centres, then each centre moved to the weighted
mean of every point it has absorbed, ``(c * W + S) / (W + w)``, which is
scikit-learn's ``MiniBatchKMeans`` per-centre learning rate ``w / (W + w)``
-- followed by the batch's labels and distances against the *updated*
centres (what ``MiniBatchKMeans.partial_fit`` stores in ``labels_`` and
``inertia_``). Compiled once per batch bucket (:mod:`.rows`), K, D and dtype.
"""

from __future__ import annotations

import functools
from typing import Any

import jax

from flashkmeans_jax.api import ops
from flashkmeans_jax.api.training import MiniBatchState, minibatch_codebook

__all__ = ["minibatch_step"]


@functools.partial(jax.jit, static_argnames=("metric", "impl", "precision"))
def minibatch_step(codebook: jax.Array, weight_sums: jax.Array, step: jax.Array,
                   x: jax.Array, weights: jax.Array, *, metric: str, impl: Any,
                   precision: Any):
  """``(MiniBatchState, labels int32[N], dist float32[N])`` after one step on
  the batch ``x [N, D]`` with ``weights float32[N]`` (0 for padded rows),
  from ``codebook float32[K, D]`` and ``weight_sums float32[K]``."""
  transform = minibatch_codebook(metric=metric, impl=impl, precision=precision)
  state, _, _ = transform.update(MiniBatchState(codebook, weight_sums, step), x,
                                 weights=weights)
  labels, dist = ops.assign(x, state.codebook, metric=metric, impl=impl,
                            precision=precision, check_finite=False)
  return state, labels, dist
