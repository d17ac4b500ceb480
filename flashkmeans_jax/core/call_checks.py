"""Checks of a whole call whose arguments several entry points share (built
from :mod:`flashkmeans_jax.core.validation`'s single-argument checks)."""

from __future__ import annotations

from typing import Any

from flashkmeans_jax.core import validation

__all__ = ["check_update_call", "check_seeding_call"]


def check_update_call(x: Any, labels: Any, centroids_or_k: Any, *, weights: Any,
                      metric: Any, empty: Any, dist: Any, check_finite: bool):
  """The arguments of ``update`` and ``sharded_update``, checked once.

  Returns ``(k, previous, metric, empty)``: ``previous`` is the centroid
  array, or ``None`` when an integer ``k`` was given.
  """
  validation.check_points(x)
  n, d = x.shape
  validation.check_weights(weights, n)
  metric = validation.check_metric(metric)
  empty = validation.check_empty(empty)
  k, previous = validation.check_centroids_or_k(centroids_or_k, d)
  validation.check_labels(labels, n, k=k)
  validation.check_farthest(empty, n, dist)
  validation.check_finite(previous, "centroids_or_k")
  if check_finite:
    validation.check_finite(x)
  return k, previous, metric, empty


def check_seeding_call(key: Any, x: Any, k: Any, *, weights: Any, metric: Any,
                       n_local_trials: Any):
  """The arguments of ``init_kmeans_plusplus`` and
  ``sharded_init_kmeans_plusplus``; returns ``(k, metric, n_local_trials)``."""
  validation.check_key(key)
  validation.check_points(x)
  n = x.shape[0]
  k = validation.check_k(k, n)
  validation.check_weights(weights, n)
  metric = validation.check_metric(metric)
  n_local_trials = validation.check_optional_positive_int(n_local_trials, "n_local_trials")
  return k, metric, n_local_trials
