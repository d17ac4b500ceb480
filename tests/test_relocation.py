"""Issue 16: ``empty="farthest"`` ends on any data (duplicated points, more
clusters than distinct points), and extreme finite weights cluster as their
normalised values do."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import flashkmeans_jax as fk

run = jax.jit(functools.partial(fk.kmeans, empty="farthest", impl="xla", max_iter=100),
              static_argnames=("k", "tol", "init"))


def _duplicated(d, scale, distinct=100, repeat=20, seed=0):
  base = np.random.default_rng(seed).normal(size=(distinct, d)) * scale
  return np.repeat(base, repeat, axis=0).astype(np.float32)


@pytest.mark.parametrize("d,scale,k,tol", [
    (16, 100.0, 120, 1e-4),   # more clusters than distinct points (and > half of them)
    pytest.param(2, 10.0, 120, 0.0, marks=pytest.mark.slow),  # only a fixed point stops
])
def test_farthest_terminates_on_duplicated_points(d, scale, k, tol):
  # Before the fix these ran to max_iter moving a centre by ~|x|^2 every
  # iteration (points at distance 0 relocated onto, copies handed to two
  # clusters at once).
  x = _duplicated(d, scale)
  r = run(jax.random.key(0), jnp.asarray(x), k=k, tol=tol, init="random")
  assert bool(r.converged) and int(r.n_iter) < 50, int(r.n_iter)
  c = np.asarray(r.centroids, np.float64)
  lab = np.asarray(r.labels)
  true = ((x.astype(np.float64) - c[lab]) ** 2).sum(-1)
  if k >= 100:
    # Every distinct point ends with a centre on it.
    assert true.max() <= 1e-9 * (x.astype(np.float64) ** 2).sum(-1).max(), true.max()


@pytest.mark.parametrize("copies,want", [
    (5, {(10.0, 10.0), (60.0, 60.0)}),  # the 3 candidates are copies: one usable
    (2, {(10.0, 10.0), (6.0, 0.0)}),    # the repeat is skipped for the next point
])
def test_relocation_never_hands_one_location_to_two_clusters(copies, want):
  # One update, clusters 1 and 2 empty; the farthest points are copies of
  # (10, 10), then (6, 0), then points on centroid 0 (never usable). Before
  # the fix both empties took a copy of (10, 10).
  x = np.r_[np.zeros((9 - copies, 2)), np.full((copies, 2), 10.0),
            [[6.0, 0.0]]].astype(np.float32)
  c = jnp.asarray(np.array([[0.0, 0.0], [50.0, 50.0], [60.0, 60.0]], np.float32))
  labels, dist = fk.assign(jnp.asarray(x), c, impl="xla")
  new_c, _ = fk.update(jnp.asarray(x), labels, c, empty="farthest", dist=dist)
  got = {tuple(r) for r in np.asarray(new_c)[1:].tolist()}
  assert got == want, got


def test_extreme_weights_cluster_as_normalised():
  rng = np.random.default_rng(1)
  # Potentials w * D^2 reach 1e30 * 1e7 per point: their sum overflowed
  # float32 before the weights were normalised (NaN seeds and centroids).
  x = np.concatenate([rng.normal(size=(100, 3)) * 100 + 1000 * i
                      for i in range(4)]).astype(np.float32)
  w = np.where(rng.random(400) < 0.5, 1e30, 1e-30).astype(np.float32)
  w[::7] = 3e29
  xj = jnp.asarray(x)
  kw = dict(impl="xla", precision="highest", max_iter=50)
  big = fk.kmeans(jax.random.key(3), xj, 4, weights=jnp.asarray(w), **kw)
  small = fk.kmeans(jax.random.key(3), xj, 4, weights=jnp.asarray(w / np.float32(2.0**100)),
                    **kw)
  assert np.isfinite(np.asarray(big.centroids)).all()
  np.testing.assert_array_equal(np.asarray(big.labels), np.asarray(small.labels))
  np.testing.assert_array_equal(np.asarray(big.centroids), np.asarray(small.centroids))
  # The inertia keeps the weights' scale (finite: < 3.4e38).
  np.testing.assert_allclose(float(big.inertia), float(small.inertia) * 2.0**100, rtol=1e-6)
  lab = np.asarray(big.labels)
  wd = w.astype(np.float64)
  means = np.stack([(wd[lab == j, None] * x[lab == j]).sum(0) / wd[lab == j].sum()
                    for j in range(4)])
  np.testing.assert_allclose(np.asarray(big.centroids), means, rtol=1e-4, atol=1e-2)
