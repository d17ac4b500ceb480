"""k-means inside training code: a straight-through vector quantiser and
codebook updates as optax-style ``(init, update)`` pairs.

* :func:`vector_quantize`: quantised outputs with the straight-through
  gradient, codes, and the codebook and commitment losses of VQ-VAE. Its
  losses are built on :func:`flashkmeans_jax.assign`'s distances, whose
  gradient w.r.t. the codebook runs through the sort-inverse cluster sums
  (no contended scatter on the GPU).
* :func:`ema_codebook`: exponential-moving-average codebook updates with
  Laplace-smoothed counts and optional reseeding of dead codes.
* :func:`minibatch_codebook`: mini-batch k-means steps (scikit-learn's
  ``MiniBatchKMeans`` per-centre learning rate).

All work under ``jit`` and ``vmap``; inside ``shard_map`` pass ``axis_name``
and the batch statistics are summed over it with one ``psum``.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from flashkmeans_jax.core import metric as metric_mod
from flashkmeans_jax.core import validation
from flashkmeans_jax.lloyd import codebook as codebook_mod
from flashkmeans_jax.lloyd.codebook import EMAState, MiniBatchState
from flashkmeans_jax.lloyd.combine import LOCAL, across
from flashkmeans_jax.ops.assign import api as assign_op

__all__ = ["CodebookTransform", "EMAState", "MiniBatchState", "VQResult", "ema_codebook",
           "minibatch_codebook", "vector_quantize"]


class CodebookTransform(NamedTuple):
  """A pure codebook update, like an ``optax.GradientTransformation``.

  Attributes:
    init: ``codebook [K, D] -> state``.
    update: ``(state, x [N, D], *, weights=None, mask=None, key=None) ->
      (state, labels int32[N], dist float32[N])``: labels and distances of the
      batch against the codebook that entered the step.
  """

  init: Callable[..., Any]
  update: Callable[..., Any]


class VQResult(NamedTuple):
  """What :func:`vector_quantize` returns.

  Attributes:
    quantized: ``[N, D]`` in x's dtype: the nearest codes in the forward pass,
      the identity in the backward pass (straight-through estimator).
    labels: ``int32[N]`` code indices.
    dist: ``float32[N]`` distance of each point to its code.
    codebook_loss: ``float32[]`` mean distance with x held fixed (moves the
      codes towards the points).
    commitment_loss: ``float32[]`` mean distance with the codes held fixed
      (moves the points towards their codes).
    loss: ``codebook_loss + commitment_cost * commitment_loss``.
  """

  quantized: jax.Array
  labels: jax.Array
  dist: jax.Array
  codebook_loss: jax.Array
  commitment_loss: jax.Array
  loss: jax.Array


def _weights(x, weights, mask):
  n = x.shape[0]
  validation.check_weights(weights, n)
  if mask is not None:
    if tuple(mask.shape) != (n,):
      raise ValueError(f"mask must have shape {(n,)} (one per point), got "
                       f"{tuple(mask.shape)}")
    m = mask.astype(jnp.float32)
    return m if weights is None else m * weights.astype(jnp.float32)
  return weights


def _combine(axis_name):
  if axis_name is None:
    return LOCAL
  return across(validation.check_axes(axis_name), lax.axis_size(axis_name))


def _mean(v, w):
  if w is None:
    return jnp.mean(v)
  w = w.astype(jnp.float32)
  return jnp.sum(w * v) / jnp.maximum(jnp.sum(w), 1e-30)


def vector_quantize(x: jax.Array, codebook: jax.Array, *, commitment_cost: float = 0.25,
                    weights: jax.Array | None = None, mask: jax.Array | None = None,
                    metric: str = "sqeuclidean", impl: str | None = None,
                    precision: Any = None, config: Any = None) -> VQResult:
  """Straight-through vector quantisation of ``x [N, D]`` by ``codebook [K, D]``.

  For a batch of shape ``[..., D]`` reshape to ``[N, D]`` first (or ``vmap``
  for one codebook per group). ``weights``/``mask`` (``[N]``) weigh the two
  losses (masked rows, e.g. padding, contribute nothing). With an EMA
  codebook (:func:`ema_codebook`) use only ``commitment_loss``.

  Example::

    vq = fk.vector_quantize(z, params["codebook"])
    loss = recon_loss(decoder(vq.quantized)) + vq.loss
  """
  validation.check_points(x)
  validation.check_centroids(codebook, x.shape[1], "codebook")
  metric = validation.check_metric(metric)
  impl = validation.resolve_impl(impl, x.shape[0], codebook.shape[0])
  precision = validation.resolve_precision(precision)
  w = _weights(x, weights, mask)
  labels, dist = assign_op.assign(lax.stop_gradient(x), codebook, metric, impl, precision,
                                  config)
  # The commitment term needs no second assignment: with the labels fixed it
  # is each point's direct distance to its (held) code, O(N * D).
  held = lax.stop_gradient(codebook)
  commit = metric_mod.distance_to(x, held[labels], metric)
  codes = lax.stop_gradient(codebook.astype(x.dtype)[labels])
  # codes + (x - x): exactly the codes forward, the identity backward.
  quantized = codes + (x - lax.stop_gradient(x))
  cb_loss = _mean(dist, w)
  commit_loss = _mean(commit, w)
  return VQResult(quantized, labels, lax.stop_gradient(dist), cb_loss, commit_loss,
                  cb_loss + jnp.float32(commitment_cost) * commit_loss)


def _transform(init_state, step, impl, needs_key: bool) -> CodebookTransform:
  """``(init, update)`` around a codebook step of :mod:`flashkmeans_jax.lloyd.codebook`:
  arguments checked at trace time, the implementation resolved per shape."""

  def init(codebook):
    validation.check_points(codebook, "codebook")
    return init_state(codebook)

  def update(state, x, *, weights=None, mask=None, key=None):
    validation.check_points(x)
    validation.check_centroids(state.codebook, x.shape[1], "state.codebook")
    if needs_key:
      validation.check_key(key)
    resolved = validation.resolve_impl(impl, x.shape[0], state.codebook.shape[0])
    return step(state, x, _weights(x, weights, mask), key, resolved)

  return CodebookTransform(init, update)


def ema_codebook(decay: float = 0.99, eps: float = 1e-5, *,
                 dead_threshold: float | None = None, metric: str = "sqeuclidean",
                 impl: str | None = None, precision: Any = None, config: Any = None,
                 axis_name: Any = None) -> CodebookTransform:
  """EMA codebook updates (VQ-VAE v2 / SoundStream) as ``(init, update)``.

  Args:
    decay: EMA decay in ``[0, 1)``.
    eps: Laplace smoothing of the counts (> 0).
    dead_threshold: if given, a code whose bias-corrected EMA count falls
      below it restarts at a random point of the current batch (distinct
      points for distinct codes); ``update`` then needs ``key``.
    metric, impl, precision, config: as in :func:`flashkmeans_jax.assign`;
      ``"cosine"`` keeps the codes at unit norm.
    axis_name: inside ``shard_map``, the mesh axis (or axes) the batch is
      split over; statistics are summed over it (one ``psum``) and every
      device holds the same state.

  Returns:
    :class:`CodebookTransform`; its state is :class:`EMAState`.
  """
  decay = validation.check_fraction(decay, "decay")
  eps = validation.check_positive_float(eps, "eps")
  if dead_threshold is not None:
    dead_threshold = validation.check_positive_float(dead_threshold, "dead_threshold")
  metric = validation.check_metric(metric)
  precision = validation.resolve_precision(precision)
  validation.check_impl(impl)

  def step(state, x, w, key, resolved):
    return codebook_mod.ema_update(
        state, x, w, decay=decay, eps=eps, dead_threshold=dead_threshold, key=key,
        metric=metric, impl=resolved, precision=precision, config=config,
        combine=_combine(axis_name))

  return _transform(codebook_mod.ema_init, step, impl, dead_threshold is not None)


def minibatch_codebook(*, metric: str = "sqeuclidean", impl: str | None = None,
                       precision: Any = None, config: Any = None,
                       axis_name: Any = None) -> CodebookTransform:
  """Mini-batch k-means steps as ``(init, update)``: each code moves to the
  weighted mean of all points it has been assigned so far (scikit-learn's
  ``MiniBatchKMeans`` update without its random reassignment). State:
  :class:`MiniBatchState`. Arguments as in :func:`ema_codebook`; ``update``
  ignores ``key``."""
  metric = validation.check_metric(metric)
  precision = validation.resolve_precision(precision)
  validation.check_impl(impl)

  def step(state, x, w, key, resolved):
    del key
    return codebook_mod.minibatch_update(
        state, x, w, metric=metric, impl=resolved, precision=precision, config=config,
        combine=_combine(axis_name))

  return _transform(codebook_mod.minibatch_init, step, impl, False)
