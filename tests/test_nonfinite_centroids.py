"""Inside ``jit`` (where no error can be raised) a centroid holding NaN or Inf,
or overflowing the points' dtype, wins no point: every implementation treats
it as empty. Eager calls raise instead (tests/test_reliability.py)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import flashkmeans_jax as fk
from tests import helpers

IMPLS = ["xla", "pallas_interpret"]


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("metric", ["sqeuclidean", "cosine", "dot"])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nonfinite_centroid_wins_no_point(impl, metric, bad):
  rng = np.random.default_rng(0)
  x = rng.normal(size=(200, 4)).astype(np.float32)
  c = rng.normal(size=(5, 4)).astype(np.float32)
  c_bad = c.copy()
  c_bad[1, 0] = bad
  f = jax.jit(lambda x, c: fk.assign(x, c, metric=metric, impl=impl))
  labels, dist = f(jnp.asarray(x), jnp.asarray(c_bad))
  # Exactly the float64 argmin over the other (finite) centroids.
  keep = np.array([0, 2, 3, 4])
  want_lab, want_d, _ = helpers.np_assign(x, c[keep], metric)
  np.testing.assert_array_equal(np.asarray(labels), keep[want_lab])
  np.testing.assert_allclose(np.asarray(dist), want_d, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("impl", IMPLS)
def test_all_centroids_nonfinite_gives_label_0_and_infinite_distance(impl):
  x = jnp.ones((10, 3), jnp.float32)
  c = jnp.full((4, 3), jnp.nan)
  labels, dist = jax.jit(lambda x, c: fk.assign(x, c, impl=impl))(x, c)
  assert np.all(np.asarray(labels) == 0) and np.all(np.isinf(np.asarray(dist)))


def test_centroid_overflowing_float16_wins_no_point():
  x = jnp.asarray(np.random.default_rng(1).normal(size=(50, 3)), jnp.float16)
  c = jnp.asarray([[0.0, 0.0, 0.0], [1e6, 0.0, 0.0], [1.0, 1.0, 1.0]], jnp.float32)
  labels, dist = jax.jit(fk.assign)(x, c)
  assert 1 not in np.asarray(labels) and np.all(np.isfinite(np.asarray(dist)))


def test_kmeans_under_jit_with_a_nan_init_row_treats_it_as_empty():
  rng = np.random.default_rng(2)
  x = jnp.asarray(rng.normal(size=(300, 2)), jnp.float32)
  init = x[:4].at[2, 0].set(jnp.nan)
  res = jax.jit(lambda x, init: fk.kmeans(jax.random.key(0), x, 4, init=init, max_iter=5))(
      x, init)
  assert 2 not in np.asarray(res.labels)
  assert np.isfinite(float(res.inertia))
