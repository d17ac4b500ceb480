"""Seeding: ``"random"`` (distinct points) and greedy ``"k-means++"``."""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from flashkmeans_jax import _checks
from flashkmeans_jax import _dispatch

__all__ = ["init_random", "init_kmeans_plusplus", "init_centroids"]


def init_random(key: jax.Array, x: jax.Array, k: int,
                weights: jax.Array | None = None) -> jax.Array:
  """``k`` distinct points drawn without replacement (weighted when given).

  Returns ``float32[k, D]``. Points of weight 0, and points whose row holds
  NaN or Inf, are drawn only when fewer than ``k`` points are left; a
  non-finite row drawn then is replaced by zeros, so the seeds are always
  finite.
  """
  _checks.check_key(key)
  _checks.check_points(x)
  n = x.shape[0]
  k = _checks.check_k(k, n)
  _checks.check_weights(weights, n)
  finite = jnp.all(jnp.isfinite(x), axis=-1)

  def weighted(w):
    # Gumbel top-k: a weighted draw without replacement; log(0) = -inf would
    # put zero-weight points last, the -1e30 does the same without making the
    # draw fail.
    w = jnp.where(finite, w, 0.0)
    g = jax.random.gumbel(key, (n,), jnp.float32)
    _, idx = lax.top_k(jnp.where(w > 0, jnp.log(jnp.where(w > 0, w, 1.0)) + g,
                                 -1e30 + g), k)
    return idx

  if weights is None:
    # Clean data keeps the plain uniform draw (and its random stream); only
    # data with non-finite rows takes the masked draw.
    idx = lax.cond(jnp.all(finite),
                   lambda: jax.random.choice(key, n, (k,), replace=False),
                   lambda: weighted(jnp.ones((n,), jnp.float32)))
  else:
    idx = weighted(weights.astype(jnp.float32))
  seeds = x[idx].astype(jnp.float32)
  return jnp.where(finite[idx][:, None], seeds, 0.0)


def _dist_to_candidates(x, xsq, cand, metric, precision):
  """float32 ``[N, L]`` distances from every point to L candidate rows."""
  cf = cand.astype(jnp.float32)
  dots = lax.dot_general(x, cand.astype(x.dtype), (((1,), (1,)), ((), ())),
                         precision=precision, preferred_element_type=jnp.float32)
  if metric == "cosine":
    xn = jnp.sqrt(xsq)[:, None]
    cn = jnp.sqrt(jnp.sum(cf * cf, -1))[None, :]
    denom = xn * cn
    return jnp.where(denom > 0, 1.0 - dots / jnp.where(denom > 0, denom, 1.0), 1.0)
  csq = jnp.sum(cf * cf, -1)
  return jnp.maximum(xsq[:, None] - 2.0 * dots + csq[None, :], 0.0)


def _finite_rows(x, w):
  """Weights, float32 squared norms and rows with non-finite rows neutralised:
  such points never become seeds and add nothing to the potential."""
  xf_sq = jnp.sum(jnp.square(x.astype(jnp.float32)), -1)
  finite = jnp.isfinite(xf_sq)
  return (jnp.where(finite, w, 0.0), jnp.where(finite, xf_sq, 0.0),
          jnp.where(finite[:, None], x, jnp.zeros((), x.dtype)))


def init_kmeans_plusplus(key: jax.Array, x: jax.Array, k: int,
                         weights: jax.Array | None = None, *,
                         metric: str = "sqeuclidean", n_local_trials: int | None = None,
                         precision: Any = "highest") -> jax.Array:
  """Greedy k-means++ (Arthur & Vassilvitskii; scikit-learn's variant).

  Each new centroid is the best of ``n_local_trials`` (default
  ``2 + floor(log k)``) candidates drawn with probability proportional to
  ``weight * D(x)^2``, where D is the distance to the nearest centroid chosen
  so far; "best" minimises the resulting potential. The ``"dot"`` metric seeds
  with squared Euclidean distances (a negative score is no sampling weight).

  Cost: ``k * n_local_trials`` passes of ``N x D`` work, fine for the K of
  most uses; for K in the tens of thousands prefer ``init="random"``.

  Returns ``float32[k, D]``.
  """
  _checks.check_key(key)
  _checks.check_points(x)
  n = x.shape[0]
  k = _checks.check_k(k, n)
  _checks.check_weights(weights, n)
  metric = _checks.check_metric(metric)
  n_local_trials = _checks.check_optional_positive_int(n_local_trials, "n_local_trials")
  seed_metric = "cosine" if metric == "cosine" else "sqeuclidean"
  precision = _dispatch.resolve_precision(precision)
  trials = n_local_trials or 2 + int(math.log(k))
  w = jnp.ones((n,), jnp.float32) if weights is None else weights.astype(jnp.float32)
  w, xsq, x_safe = _finite_rows(x, w)

  key0, key_loop = jax.random.split(key)
  first = jax.random.choice(key0, n, p=w / jnp.sum(w))
  centers = jnp.zeros((k, x.shape[1]), jnp.float32).at[0].set(x_safe[first].astype(jnp.float32))
  closest = _dist_to_candidates(x_safe, xsq, x_safe[first][None], seed_metric, precision)[:, 0]

  def body(c, carry):
    centers, closest = carry
    wd = w * closest
    cum = jnp.cumsum(wd)
    pot = cum[-1]
    r = jax.random.uniform(jax.random.fold_in(key_loop, c), (trials,)) * pot
    cand = jnp.clip(jnp.searchsorted(cum, r), 0, n - 1)
    # If every point already sits on a centroid the potential is 0: any draw
    # is as good, the searchsorted gives index 0 and the loop goes on.
    d = jnp.minimum(closest[:, None],
                    _dist_to_candidates(x_safe, xsq, x_safe[cand], seed_metric, precision))
    cand_pot = jnp.sum(w[:, None] * d, axis=0)
    best = jnp.argmin(cand_pot)
    centers = centers.at[c].set(x_safe[cand[best]].astype(jnp.float32))
    return centers, d[:, best]

  centers, _ = lax.fori_loop(1, k, body, (centers, closest))
  return centers


def init_centroids(key: jax.Array, x: jax.Array, k: int, init: str,
                   weights: jax.Array | None = None, *, metric: str = "sqeuclidean") -> jax.Array:
  """Dispatches to a named seeding strategy; returns ``float32[k, D]``."""
  if init == "random":
    return init_random(key, x, k, weights)
  return init_kmeans_plusplus(key, x, k, weights, metric=metric)
