"""The built-in demo: k-means on scikit-learn's digits and on synthetic blobs.

Prints, for each data set, N, D, K, the backend and implementation, time,
iterations, inertia, and agreement with scikit-learn started from the same
centroids (adjusted Rand index of the labels, relative inertia difference).
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np

from flashkmeans_jax.api.kmeans import kmeans
from flashkmeans_jax.api.ops import init_kmeans_plusplus
from flashkmeans_jax.core import validation


def _datasets():
  from sklearn.datasets import load_digits, make_blobs
  digits = load_digits().data.astype(np.float32)
  blobs, _ = make_blobs(n_samples=100_000, centers=64, n_features=32, cluster_std=1.0,
                        random_state=0)
  return [("digits (sklearn, bundled)", digits, 10), ("blobs (synthetic)", blobs.astype(np.float32), 64)]


def run_demo(seed: int = 0, max_iter: int = 100) -> list[dict]:
  """Runs the demo and returns one summary dict per data set."""
  from sklearn.cluster import KMeans as SkKMeans
  from sklearn.metrics import adjusted_rand_score

  impl = validation.resolve_impl(None)
  dev = jax.devices()[0]
  print(f"flashkmeans-jax demo on {dev.platform}:{dev.device_kind} (impl={impl})")
  rows = []
  for name, x, k in _datasets():
    xj = jnp.asarray(x)
    key = jax.random.key(seed)
    # The first call compiles; the second is the steady-state time.
    t0 = time.perf_counter()
    res = kmeans(key, xj, k, max_iter=max_iter, tol=1e-4)
    jax.block_until_ready(res)
    t_first = time.perf_counter() - t0
    t0 = time.perf_counter()
    res = kmeans(key, xj, k, max_iter=max_iter, tol=1e-4)
    jax.block_until_ready(res)
    t_run = time.perf_counter() - t0

    # scikit-learn from this run's own k-means++ seeds: both then follow the
    # same Lloyd trajectory.
    c0 = np.asarray(init_kmeans_plusplus(key, xj, k))
    sk = SkKMeans(k, init=c0, n_init=1, max_iter=max_iter, tol=1e-4, algorithm="lloyd").fit(x)
    res_same = kmeans(key, xj, k, init=jnp.asarray(c0), max_iter=max_iter, tol=1e-4)
    ari = adjusted_rand_score(sk.labels_, np.asarray(res_same.labels))
    rel = abs(float(res_same.inertia) - sk.inertia_) / sk.inertia_
    row = dict(dataset=name, n=x.shape[0], d=x.shape[1], k=k, seconds_first_call=t_first,
               seconds=t_run, n_iter=int(res.n_iter), inertia=float(res.inertia),
               sklearn_ari=ari, sklearn_inertia_rel_diff=rel)
    rows.append(row)
    print(f"- {name}: N={row['n']} D={row['d']} K={k}: {int(res.n_iter)} iterations, "
          f"inertia {row['inertia']:.6g}, {t_run * 1e3:.1f} ms "
          f"(first call with compile {t_first:.2f} s)")
    print(f"  vs scikit-learn from the same seeds: adjusted Rand index {ari:.4f}, "
          f"inertia difference {rel:.2e} (relative)")
  return rows
