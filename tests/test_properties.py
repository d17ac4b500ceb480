"""Property-based tests (hypothesis) of kmeans/assign invariants.

Shapes come from a small fixed set (and ``k`` from a fixed set per shape) so
that every example reuses a compiled program; hypothesis varies the data and
the keys. Example counts are bounded to keep the file well under 90 s on two
CPU cores.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import flashkmeans_jax as fk
from tests import cases

IMPL = "xla"
SHAPES = [(24, 3), (40, 2)]  # (N, D)
KS = [1, 3, 5]
MAX_ITER = 15
# The loop's properties are drawn over data, not shapes: one (N, D) and two
# k keep the compiled programs to a few per test (a compile of the loop is
# ~2 s on the CPU, the run itself milliseconds).
LOOP_SHAPE = (32, 3)
LOOP_KS = [1, 4]

SETTINGS = settings(max_examples=12, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow])


@st.composite
def problems(draw, metric="sqeuclidean"):
  """(x float32[N, D], k, seed): clustered or plain Gaussian data with some
  exact duplicates, from one of the fixed shapes."""
  n, d = LOOP_SHAPE
  k = draw(st.sampled_from(LOOP_KS))
  seed = draw(st.integers(0, 2**31 - 1))
  rng = np.random.default_rng(seed)
  scale = draw(st.sampled_from([1e-2, 1.0, 1e3]))
  n_centers = draw(st.integers(1, 6))
  centers = rng.normal(size=(n_centers, d)) * 5
  x = centers[rng.integers(0, n_centers, n)] + rng.normal(size=(n, d))
  if draw(st.booleans()):  # exact duplicates
    x[n // 2:] = x[: n - n // 2]
  x = (x * scale).astype(np.float32)
  return x, k, seed


def _kmeans(x, k, seed, **kw):
  kw = {"max_iter": MAX_ITER, "impl": IMPL, **kw}
  return fk.kmeans(jax.random.key(seed), jnp.asarray(x), k, **kw)


@SETTINGS
@given(problems(), st.sampled_from(["sqeuclidean", "cosine", "dot"]),
       st.sampled_from(["keep", "farthest"]))
def test_labels_and_inertia_belong_to_the_centroids(prob, metric, empty):
  x, k, seed = prob
  res = _kmeans(x, k, seed, metric=metric, empty=empty)
  lab2, _ = fk.assign(jnp.asarray(x), res.centroids, metric=metric, impl=IMPL)
  np.testing.assert_array_equal(np.asarray(res.labels), np.asarray(lab2))
  # Labels nearest to the returned centroids (up to float32 near-ties) and
  # the inertia their float64 sum of distances, within the derived bounds.
  cases.check_kmeans_result(x, res, metric=metric)


@SETTINGS
@given(problems(), st.sampled_from(["keep", "farthest"]))
def test_inertia_history_never_increases(prob, empty):
  """Each Lloyd iteration (assign then mean update) cannot increase the
  sqeuclidean inertia, up to float32 rounding; the final inertia is no larger
  than the last recorded one."""
  x, k, seed = prob
  res = _kmeans(x, k, seed, empty=empty, tol=0.0)
  n_iter = int(res.n_iter)
  hist = np.asarray(res.inertia_history)[:n_iter].astype(np.float64)
  assert np.isfinite(hist).all() and np.isnan(np.asarray(res.inertia_history)[n_iter:]).all()
  slack = 1e-5 * max(hist.max(), 1e-30) + 1e-30
  assert (np.diff(hist) <= slack).all(), hist
  assert float(res.inertia) <= hist[-1] + slack


@SETTINGS
@given(problems(), st.sampled_from(["sqeuclidean", "cosine"]))
def test_permuting_points_permutes_labels(prob, metric):
  """With an explicit init, permuting the points permutes the labels and leaves
  the centroids unchanged (up to float32 summation order)."""
  x, k, seed = prob
  rng = np.random.default_rng(seed)
  perm = rng.permutation(x.shape[0])
  init = jnp.asarray(x[rng.choice(x.shape[0], k, replace=False)])
  a = _kmeans(x, k, seed, init=init, metric=metric)
  b = _kmeans(x[perm], k, seed, init=init, metric=metric)
  # The centroids differ by the order of float32 additions in the sums, which
  # Lloyd's later iterations may amplify a little: a loose 1e-4 of the data's
  # scale (a wrong centroid is off by the scale itself).
  c_a, c_b = np.asarray(a.centroids), np.asarray(b.centroids)
  np.testing.assert_allclose(c_a, c_b, rtol=1e-4, atol=1e-4 * (np.abs(x).max() + 1e-30))
  # a's labels, permuted, must be right for b's centroids too: equal to b's
  # float64 nearest except at float32 near-ties (counted, none beyond).
  la = np.asarray(a.labels)[perm]
  cases.check_assign_result(x[perm], b.centroids, la, None, metric)
  cases.check_kmeans_result(x[perm], b, metric=metric)


@SETTINGS
@given(problems(), st.floats(-100.0, 100.0))
def test_translation_invariance_sqeuclidean(prob, shift):
  """Translating x and the init by the same vector translates the centroids and
  keeps the labels (sqeuclidean only depends on differences)."""
  x, k, seed = prob
  x = x.astype(np.float64)
  rng = np.random.default_rng(seed + 1)
  # A shift of up to 100 data standard deviations.
  t = rng.normal(size=x.shape[1]) * shift * np.std(x)
  idx = rng.choice(x.shape[0], k, replace=False)
  # Translated data rounded to float32 first; the untranslated copy is derived
  # from it so both hold the same points up to one rounding.
  xt = (x + t).astype(np.float32)
  x0 = xt.astype(np.float64) - t
  a = _kmeans(x0.astype(np.float32), k, seed, init=jnp.asarray(x0[idx].astype(np.float32)))
  b = _kmeans(xt, k, seed, init=jnp.asarray(xt[idx]))
  # a's labels must be right for the translated problem: b's float64 nearest
  # (under the translated problem's own float32 bound, whose terms grow with
  # ||x + t||^2) except at near-ties, counted exactly.
  cases.check_assign_result(xt, b.centroids, np.asarray(a.labels), None, "sqeuclidean")
  cases.check_kmeans_result(xt, b)
  # Centroids: means of the same points, each rounded to float32 in its own
  # frame (up to 1e-4 of the translated data's scale, for iterations that
  # amplify the rounding).
  tol = 1e-4 * (np.abs(xt).max() + 1.0)
  np.testing.assert_allclose(np.asarray(b.centroids) - t, np.asarray(a.centroids), atol=tol)


@SETTINGS
@given(problems(), st.sampled_from([2.0**-10, 0.5, 8.0, 2.0**13]))
def test_positive_scaling_invariance_cosine(prob, scale):
  """Cosine k-means only sees directions: scaling x by a positive constant
  changes neither labels nor (unit-norm) centroids. Powers of two scale
  float32 exactly, so the runs must agree exactly (other factors round x
  once, and on diffuse data Lloyd can amplify that into another local
  optimum). tol=0: the default tolerance, ``tol * var(x)``, scales with x
  while the cosine centroid shift does not, so it would stop the runs at
  different iterations."""
  x, k, seed = prob
  rng = np.random.default_rng(seed + 2)
  idx = rng.choice(x.shape[0], k, replace=False)
  a = _kmeans(x, k, seed, metric="cosine", init=jnp.asarray(x[idx]), tol=0.0)
  xs = x * np.float32(scale)
  assert np.array_equal(xs / np.float32(scale), x)  # exact scaling
  b = _kmeans(xs, k, seed, metric="cosine", init=jnp.asarray(xs[idx]), tol=0.0)
  np.testing.assert_array_equal(np.asarray(a.labels), np.asarray(b.labels))
  np.testing.assert_allclose(np.asarray(a.centroids), np.asarray(b.centroids), atol=1e-6)
  np.testing.assert_allclose(float(a.inertia), float(b.inertia), rtol=1e-5, atol=1e-6)
  # With k-means++ seeding too (the seeding is scale-free under cosine).
  a2 = _kmeans(x, k, seed, metric="cosine", tol=0.0)
  b2 = _kmeans(xs, k, seed, metric="cosine", tol=0.0)
  np.testing.assert_array_equal(np.asarray(a2.labels), np.asarray(b2.labels))


@settings(max_examples=15, deadline=None, derandomize=True)
@given(st.sampled_from(SHAPES), st.sampled_from(KS), st.integers(0, 2**31 - 1),
       st.sampled_from(["sqeuclidean", "cosine", "dot"]))
def test_assign_is_nearest(shape, k, seed, metric):
  """assign returns a (near-)nearest centroid and its distance."""
  rng = np.random.default_rng(seed)
  x = rng.normal(size=shape).astype(np.float32)
  c = rng.normal(size=(k, shape[1])).astype(np.float32)
  labels, dist = fk.assign(jnp.asarray(x), jnp.asarray(c), metric=metric, impl=IMPL,
                           precision="highest")
  cases.check_assign_result(x, c, labels, dist, metric, precision="highest")
