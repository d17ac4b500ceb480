"""Codebook updates for training code: EMA (VQ-VAE / SoundStream) and
mini-batch k-means (scikit-learn's ``MiniBatchKMeans`` rule).

Both are pure ``(init, update)`` pairs in the manner of an optax
transformation, built on the statistics core: a batch is assigned, its
:class:`~flashkmeans_jax.lloyd.stats.ClusterStats` are reduced over row blocks
with a :class:`~flashkmeans_jax.lloyd.combine.Combine` (one ``psum`` under
``shard_map``), and the state moves towards them. They compose with ``jit``,
``vmap`` (one codebook per head or layer) and ``shard_map``.

No argument checks here (see :mod:`flashkmeans_jax.api.training`).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from flashkmeans_jax.lloyd import seeding
from flashkmeans_jax.lloyd import stats
from flashkmeans_jax.lloyd.combine import Combine, LOCAL
from flashkmeans_jax.ops.assign import api as assign_op

__all__ = ["EMAState", "MiniBatchState", "ema_init", "ema_update", "minibatch_init",
           "minibatch_update", "batch_stats"]


class EMAState(NamedTuple):
  """State of an EMA codebook.

  Attributes:
    codebook: ``float32[K, D]`` the current codes.
    sums: ``float32[K, D]`` exponential moving average of each code's
      (weighted) sum of assigned points, not yet bias-corrected.
    counts: ``float32[K]`` the same for the weight assigned to each code.
    step: ``int32[]`` updates made (for the bias correction ``1 - decay^t``).
  """

  codebook: jax.Array
  sums: jax.Array
  counts: jax.Array
  step: jax.Array


class MiniBatchState(NamedTuple):
  """State of mini-batch k-means.

  Attributes:
    codebook: ``float32[K, D]``.
    weight_sums: ``float32[K]`` total weight each code has absorbed (the
      inverse of its learning rate).
    step: ``int32[]`` batches seen.
  """

  codebook: jax.Array
  weight_sums: jax.Array
  step: jax.Array


def batch_stats(x: jax.Array, codebook: jax.Array, weights: jax.Array | None, *,
                metric: str, impl: str, precision: Any, config: Any,
                combine: Combine = LOCAL):
  """Assignment of a batch and its statistics summed over all blocks.

  Returns ``(labels int32[N], dist float32[N], ClusterStats)``.
  """
  labels, dist = assign_op.assign(x, codebook, metric, impl, precision, config)
  total = stats.combine_stats(
      stats.accumulate(x, labels, dist, weights, codebook.shape[0], impl), combine)
  return labels, dist, total


def ema_init(codebook: jax.Array) -> EMAState:
  """EMA state starting at ``codebook [K, D]`` with empty averages."""
  c = codebook.astype(jnp.float32)
  return EMAState(c, jnp.zeros_like(c), jnp.zeros(c.shape[:1], jnp.float32),
                  jnp.zeros((), jnp.int32))


def _reseed(state: EMAState, x, weights, key, dead_threshold, bias, combine):
  """Dead codes (bias-corrected count below ``dead_threshold``) restart at
  distinct random points of this batch, with the threshold as their count."""
  k = state.codebook.shape[0]
  dead = state.counts / bias < dead_threshold

  def reseed(state):
    fresh = seeding.init_random(key, x, k, weights, combine=combine)  # distinct rows
    # The j-th dead code takes fresh row j; fresh rows are distinct points.
    rows = fresh[jnp.clip(jnp.cumsum(dead) - 1, 0, k - 1)]
    mass = jnp.float32(dead_threshold) * bias
    return state._replace(
        codebook=jnp.where(dead[:, None], rows, state.codebook),
        sums=jnp.where(dead[:, None], rows * mass, state.sums),
        counts=jnp.where(dead, mass, state.counts))

  # The draw (a top-k over the batch) only when some code is dead; the counts
  # are totals over all blocks, so every block takes the same branch.
  return lax.cond(jnp.any(dead), reseed, lambda s: s, state)


def ema_update(state: EMAState, x: jax.Array, weights: jax.Array | None, *, decay: float,
               eps: float, dead_threshold: float | None, key: jax.Array | None,
               metric: str, impl: str, precision: Any, config: Any,
               combine: Combine = LOCAL):
  """One EMA step on the batch ``x [N, D]``; returns ``(state, labels, dist)``
  where labels and distances are those of the batch against the codebook
  that entered the step.

  ``sums`` and ``counts`` move by ``decay`` towards the batch's; the codebook
  is the bias-corrected average sum over the Laplace-smoothed count
  ``(c + eps) / (n + K * eps) * n`` (``n`` the total count), so no code
  divides by zero; a code that was never assigned keeps its row.
  """
  k = state.codebook.shape[0]
  labels, dist, total = batch_stats(x, state.codebook, weights, metric=metric, impl=impl,
                                    precision=precision, config=config, combine=combine)
  d = jnp.float32(decay)
  sums = d * state.sums + (1 - d) * total.sums
  counts = d * state.counts + (1 - d) * total.counts
  step = state.step + 1
  bias = 1 - d ** step.astype(jnp.float32)
  n = jnp.sum(counts)
  smoothed = (counts + eps * bias) / (n + k * eps * bias) * n
  codebook = jnp.where((counts > 0)[:, None],
                       sums / jnp.where(smoothed > 0, smoothed, 1.0)[:, None],
                       state.codebook)
  if metric == "cosine":
    norm = jnp.sqrt(jnp.sum(codebook * codebook, -1, keepdims=True))
    codebook = jnp.where(norm > 0, codebook / jnp.where(norm > 0, norm, 1.0), codebook)
  new = EMAState(codebook, sums, counts, step)
  if dead_threshold is not None:
    new = _reseed(new, x, weights, key, dead_threshold, bias, combine)
  return new, labels, dist


def minibatch_init(codebook: jax.Array) -> MiniBatchState:
  """Mini-batch state starting at ``codebook [K, D]`` (no weight absorbed)."""
  c = codebook.astype(jnp.float32)
  return MiniBatchState(c, jnp.zeros(c.shape[:1], jnp.float32), jnp.zeros((), jnp.int32))


def minibatch_update(state: MiniBatchState, x: jax.Array, weights: jax.Array | None, *,
                     metric: str, impl: str, precision: Any, config: Any,
                     combine: Combine = LOCAL):
  """One mini-batch k-means step (scikit-learn's per-centre learning rate):
  each code moves to the weighted mean of everything it has absorbed,
  ``(c * W + S) / (W + w)`` with ``S``, ``w`` the batch's sum and weight for the
  code and ``W`` its weight so far. Returns ``(state, labels, dist)``."""
  labels, dist, total = batch_stats(x, state.codebook, weights, metric=metric, impl=impl,
                                    precision=precision, config=config, combine=combine)
  new_w = state.weight_sums + total.counts
  got = total.counts > 0
  moved = (state.codebook * state.weight_sums[:, None] + total.sums) / jnp.where(
      got, new_w, 1.0)[:, None]
  codebook = jnp.where(got[:, None], moved, state.codebook)
  if metric == "cosine":
    norm = jnp.sqrt(jnp.sum(codebook * codebook, -1, keepdims=True))
    codebook = jnp.where(norm > 0, codebook / jnp.where(norm > 0, norm, 1.0), codebook)
  return MiniBatchState(codebook, new_w, state.step + 1), labels, dist
