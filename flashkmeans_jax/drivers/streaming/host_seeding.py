"""Starting centroids for host data too large for the device.

``"random"`` draws k distinct rows on the host (a NumPy generator seeded from
the JAX key); weighted draws take one streamed pass over the weights only.
``"k-means++"`` and ``"k-means||"`` run the in-memory seeding
(:func:`flashkmeans_jax.lloyd.seeding.init_centroids`: greedy k-means++, or
k-means||' rounds and k-means++ on their weighted candidates) on a uniform
random subsample placed on the device; when N is at most the subsample size
it sees every row and gives the in-memory ``kmeans``'s seeds. On a
subsample k-means|| saves less than on the full data (its candidates,
about ``10 k`` with the default options, against the subsample's ``32 k``
rows), but it is what was asked for, never silently k-means++.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from flashkmeans_jax.core import dispatch
from flashkmeans_jax.core.precision import resolve_precision
from flashkmeans_jax.core.types import SeedingOptions
from flashkmeans_jax.drivers.streaming.host_io import HostSource
from flashkmeans_jax.drivers.streaming.plan import Plan
from flashkmeans_jax.lloyd import seeding

__all__ = ["initial_centroids", "default_sample_size", "host_rng", "weighted_pick"]

# k-means++ subsample: 32 rows per cluster, at least 2^16 (as in the docs).
KPP_SAMPLE_PER_CLUSTER = 32
KPP_SAMPLE_MIN = 2**16


def default_sample_size(k: int) -> int:
  """Rows of the k-means++ subsample when ``init_sample_size`` is not given."""
  return max(KPP_SAMPLE_PER_CLUSTER * k, KPP_SAMPLE_MIN)


def host_rng(key: jax.Array) -> np.random.Generator:
  """A NumPy generator determined by the JAX ``key`` (same key, same draws)."""
  data = np.asarray(jax.random.key_data(key)).ravel()
  return np.random.default_rng([int(v) for v in data])


def weighted_pick(wsrc: HostSource, plan: Plan, k: int, rng: np.random.Generator) -> np.ndarray:
  """``k`` sorted row indices (``int64[k]``) drawn without replacement with
  probability ~ weight (Gumbel top-k, one streaming pass over the weights on
  the host; rows of weight 0 only when fewer than k have a positive one)."""
  best_key = np.full((0,), -np.inf)
  best_idx = np.zeros((0,), np.int64)
  for j in range((plan.n + plan.chunk - 1) // plan.chunk):
    start, stop = plan.rows(j)
    w = wsrc.read(start, stop, j).astype(np.float64)
    with np.errstate(divide="ignore"):
      key = np.where(w > 0, np.log(np.where(w > 0, w, 1.0)), -1e30) + rng.gumbel(size=w.shape)
    keys = np.concatenate([best_key, key])
    idx = np.concatenate([best_idx, np.arange(start, stop)])
    top = np.argsort(-keys, kind="stable")[:k]
    best_key, best_idx = keys[top], idx[top]
  return np.sort(best_idx)


@functools.partial(jax.jit, static_argnames=("k", "init", "metric", "seed", "impl"))
def _seed_sample(key, xs, ws, *, k, init, metric, seed, impl):
  # Compiled (once per subsample shape): an eager call would trace and
  # compile its loops again on every restart.
  return seeding.init_centroids(key, xs, k, init, ws, metric=metric,
                                precision=resolve_precision("highest"), seed=seed, impl=impl)


def initial_centroids(key: jax.Array, src: HostSource, wsrc: HostSource | None, plan: Plan,
                      k: int, init: str, metric: str, sample_size: int,
                      device: Any, *, seed: SeedingOptions = SeedingOptions(),
                      impl: str | None = None) -> jax.Array:
  """``float32[k, D]`` starting centroids on ``device``.

  Args:
    key: the run's ``jax.random`` key.
    src: ``[N, D]`` host points; wsrc: ``float32[N]`` host weights or ``None``.
    plan: the run's chunking (the weighted draw reads the weights by chunk).
    k: clusters; init: ``"random"``, ``"k-means++"`` or ``"k-means||"``;
      metric: the run's.
    sample_size: rows of the subsample that k-means++ and k-means|| seed
      from (all rows when N is at most that).
    device: where the centroids go.
    seed: the seeding options (``n_local_trials``, k-means||'
      ``oversampling_factor`` and ``init_rounds``; defaults as in memory).
    impl: the assignment implementation of k-means||' rounds (``None``:
      chosen for the subsample's shape, as ``"auto"``).
  """
  n = plan.n
  if init == "random":
    rng = host_rng(key)
    rows = (np.sort(rng.choice(n, k, replace=False)) if wsrc is None
            else weighted_pick(wsrc, plan, k, rng))
    return jax.device_put(src.take(rows), device).astype(jnp.float32)
  m = min(n, sample_size)
  rows = np.arange(n) if m == n else np.sort(host_rng(key).choice(n, m, replace=False))
  xs = jax.device_put(src.take(rows), device)
  ws = None if wsrc is None else jax.device_put(wsrc.take(rows), device)
  impl = dispatch.resolve_impl(impl, m, k)
  return _seed_sample(key, xs, ws, k=k, init=init, metric=metric, seed=seed, impl=impl)
