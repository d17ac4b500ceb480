"""Streaming seeding with ``init="k-means||"``: the library's k-means|| on the
host subsample, never a silent k-means++ (issue 21)."""

import jax
import jax.numpy as jnp
import numpy as np

from flashkmeans_jax import kmeans, kmeans_streaming

N, D, K = 1000, 8, 5
# Unclustered data: every seeding leads to its own centroids, so equal
# centroids mean equal seeds.
X = np.random.default_rng(0).normal(size=(N, D)).astype(np.float32)
KW = dict(init="k-means||", max_iter=1, tol=0.0, impl="xla")


def test_kmeans_parallel_streamed_equals_in_memory():
  """N below the subsample size: the subsample is every row, so the seeds
  (seen through one Lloyd step) are the in-memory kmeans' k-means|| seeds
  (k-means++ seeds give other centroids); a smaller subsample runs
  k-means|| on its rows."""
  key = jax.random.key(3)
  got = kmeans_streaming(key, X, K, chunk_size=300, **KW)
  ref = kmeans(key, jnp.asarray(X), K, **KW)
  np.testing.assert_array_equal(np.asarray(got.centroids), np.asarray(ref.centroids))
  np.testing.assert_array_equal(got.labels, np.asarray(ref.labels))
  sub = kmeans_streaming(key, X, K, chunk_size=300, init_sample_size=200, **KW)
  assert np.isfinite(np.asarray(sub.centroids)).all()
  assert float(sub.inertia) < 1.5 * float(ref.inertia)


def test_seeding_options_reach_the_streamed_seeding():
  """oversampling_factor / init_rounds / n_local_trials: the same seeds as
  in memory with the same options (so they are passed through), other
  seeds than the defaults', and the same checks as kmeans."""
  import pytest

  key = jax.random.key(3)
  opt = dict(oversampling_factor=0.5, init_rounds=1, n_local_trials=1)
  got = kmeans_streaming(key, X, K, chunk_size=300, **KW, **opt)
  ref = kmeans(key, jnp.asarray(X), K, **KW, **opt)
  np.testing.assert_array_equal(np.asarray(got.centroids), np.asarray(ref.centroids))
  default = kmeans(key, jnp.asarray(X), K, **KW)
  assert not np.array_equal(np.asarray(got.centroids), np.asarray(default.centroids))
  with pytest.raises(ValueError, match="init_rounds must be >= 1"):
    kmeans_streaming(key, X, K, chunk_size=300, init_rounds=0, **KW)
