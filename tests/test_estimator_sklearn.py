"""``fk.KMeans`` against ``sklearn.cluster.KMeans`` where it claims parity:
empty clusters, the two warnings, ``n_init="auto"``, exact self-distances in
``transform``, the feature-name/output API, scikit-learn's extra parameters
and float64 input. Remaining differences are listed in docs/usage.md."""

import importlib
import inspect
import os
import warnings

import jax
import numpy as np
import pytest

import flashkmeans_jax as fk
from flashkmeans_jax.estimator import ConvergenceWarning, KMeans, NotFittedError

os.environ.setdefault("FLASHKMEANS_JAX_NO_COMPILE_CACHE", "1")  # see test_estimator.py

sklearn = pytest.importorskip("sklearn")
from sklearn.cluster import KMeans as SkKMeans  # noqa: E402
from sklearn.datasets import make_blobs  # noqa: E402
from sklearn.metrics import adjusted_rand_score  # noqa: E402

EPS32 = float(np.finfo(np.float32).eps)


@pytest.fixture(scope="module")
def far():
  """48 x 4 float32 points far from the origin (where the expanded distance
  cancels), shared so that the fits below share their compiled programs."""
  return (np.random.default_rng(2).normal(size=(48, 4)) * 3 + 1000.0).astype(np.float32)


def test_empty_cluster_relocated_as_sklearn():
  # Issue 16's case: the far start [10] wins no point. scikit-learn moves it
  # onto the point farthest from its centroid; so does the default empty=.
  x, init, w = np.array([[-1.0], [1.0]]), np.array([[-1.0], [10.0]]), [1.9, 0.1]
  sk = SkKMeans(2, init=init, n_init=1).fit(x, sample_weight=w)
  est = KMeans(2, init=init, n_init=1).fit(x, sample_weight=w)
  np.testing.assert_array_equal(est.labels_, sk.labels_)
  np.testing.assert_array_equal(est.labels_, [0, 1])
  np.testing.assert_allclose(est.cluster_centers_, sk.cluster_centers_, atol=0)
  # empty="keep" is the other policy: the far centroid stays where it is.
  keep = KMeans(2, init=init, n_init=1, empty="keep")
  with pytest.warns(ConvergenceWarning):
    keep.fit(x, sample_weight=w)
  np.testing.assert_array_equal(keep.labels_, [0, 0])
  np.testing.assert_allclose(keep.cluster_centers_.ravel(), [-0.9, 10.0], rtol=1e-6)


def test_blobs_with_a_lost_centroid_match_sklearn():
  # 3000 x 16 blobs, k=20, one start far outside the data (it wins nothing
  # in the first iteration): relocation gives scikit-learn's clustering.
  x, y, centers = make_blobs(3000, n_features=16, centers=20, random_state=0,
                             return_centers=True)
  x = x.astype(np.float32)
  init = np.concatenate([x[[np.flatnonzero(y == j)[0] for j in range(19)]],
                         np.full((1, 16), 1e3, np.float32)])
  sk = SkKMeans(20, init=init.astype(np.float64), n_init=1, max_iter=100).fit(
      x.astype(np.float64))
  est = KMeans(20, init=init, max_iter=100).fit(x)
  assert len(np.unique(est.labels_)) == 20
  assert adjusted_rand_score(sk.labels_, est.labels_) == 1.0
  assert est.inertia_ == pytest.approx(sk.inertia_, rel=1e-5)
  with pytest.warns(ConvergenceWarning, match=r"Number of distinct clusters \(19\) found "
                                              r"smaller than n_clusters \(20\)"):
    kept = KMeans(20, init=init, max_iter=100, empty="keep").fit(x)
  assert kept.inertia_ > 1.1 * sk.inertia_


def test_warnings_as_sklearn(far):
  dup = np.array([[0.0, 0.0], [0.0, 0.0], [1.0, 1.0], [1.0, 1.0], [0.0, 0.0]])
  # The same wording as scikit-learn's (its own tests match it).
  for cls in (SkKMeans, KMeans):
    with pytest.warns(ConvergenceWarning, match=r"^Number of distinct clusters \(2\) found "
                      r"smaller than n_clusters \(3\)\. Possibly due to duplicate points"):
      cls(3, n_init=1, random_state=0).fit(dup)
  if sklearn is not None:
    from sklearn.exceptions import ConvergenceWarning as SkConvergenceWarning
    assert ConvergenceWarning is SkConvergenceWarning
  x = far
  once = KMeans(3, init=x[:3], n_init=1).fit(x)
  for cls in (SkKMeans, KMeans):
    with pytest.warns(RuntimeWarning, match=r"^Explicit initial center position passed: "
                      r"performing only one init in KMeans instead of n_init=4\.$"):
      cls(3, init=x[:3], n_init=4).fit(x)
  with pytest.warns(RuntimeWarning):
    again = KMeans(3, init=x[:3], n_init=4).fit(x)
  np.testing.assert_array_equal(again.cluster_centers_, once.cluster_centers_)
  with warnings.catch_warnings():
    warnings.simplefilter("error")  # n_init="auto" with an array: no warning
    KMeans(3, init=x[:3]).fit(x)


@pytest.mark.parametrize("init, calls, n_init", [
    ("k-means++", 1, 1), ("random", 1, 10), ("array", 1, 1), ("callable", 10, 1)])
def test_n_init_auto(far, monkeypatch, init, calls, n_init):
  """scikit-learn's n_init="auto" (its default, and ours): runs per init kind.
  A callable runs 10 times, called again for every run."""
  assert inspect.signature(SkKMeans).parameters["n_init"].default == "auto"
  assert KMeans().n_init == "auto"
  mod = importlib.import_module("flashkmeans_jax.estimator.kmeans")
  seen, made = [], []
  real = mod.kmeans

  def spy(key, x, k, **kw):
    seen.append(kw["n_init"])
    return real(key, x, k, **kw)

  monkeypatch.setattr(mod, "kmeans", spy)
  x = far

  def my_init(xx, k, rs):
    made.append(rs.randint(1000))
    return xx[rs.choice(len(xx), k, replace=False)]

  arg = {"array": x[:3], "callable": my_init}.get(init, init)
  est = KMeans(3, init=arg, max_iter=5, random_state=0).fit(x)
  assert seen == [n_init] * calls
  if init == "callable":
    assert len(made) == 10 and len(set(made)) > 1  # one RandomState, advanced
    scores = [-KMeans(3, init=my_init, n_init=1, max_iter=5, random_state=0).fit(x).inertia_]
    assert est.inertia_ <= -scores[0] * (1 + 1e-6)  # the best of 10 beats the first


@pytest.mark.parametrize("metric", ["sqeuclidean", "cosine"])
def test_transform_self_distance_is_zero(far, metric):
  # Far from the origin the expanded |x|^2 - 2x.c + |c|^2 cancels: 1e-3-size
  # errors on the diagonal. Direct differences give 0 and relative accuracy.
  x = far
  est = KMeans(3, random_state=0, max_iter=5, metric=metric).fit(x)
  c = est.cluster_centers_
  got = est.transform(c)
  np.testing.assert_array_equal(np.diag(got), np.zeros(3, np.float32))
  d = x.shape[1]
  x64, c64 = x.astype(np.float64), c.astype(np.float64)
  if metric == "sqeuclidean":
    ref = np.sqrt(((x64[:, None] - c64[None]) ** 2).sum(-1))
  else:
    u = x64 / np.linalg.norm(x64, axis=1, keepdims=True)
    v = c64 / np.linalg.norm(c64, axis=1, keepdims=True)
    ref = 0.5 * ((u[:, None] - v[None]) ** 2).sum(-1)
  # Per entry: D differences, squares and adds, each one float32 rounding
  # relative to the terms (all >= 0, so relative to the sum), plus the
  # square root; cosine adds the two unit-row roundings (relative to 1).
  tol = (2 * d + 4) * EPS32
  out = est.transform(x)
  if metric == "sqeuclidean":
    np.testing.assert_allclose(out, ref, rtol=tol, atol=0)
  else:
    np.testing.assert_allclose(out, ref, rtol=tol, atol=(2 * d + 8) * EPS32)


def test_feature_names_set_output_and_sklearn_parameters(far):
  x = far.copy()
  est = KMeans(3, random_state=0, max_iter=5)
  with pytest.raises(NotFittedError):
    est.get_feature_names_out()
  assert set(SkKMeans().get_params()) <= set(est.get_params())
  x_before = x.copy()
  est.set_params(copy_x=False).fit(x)
  np.testing.assert_array_equal(x, x_before)  # copy_x: X is never modified
  np.testing.assert_array_equal(est.get_feature_names_out(),
                                np.array([f"kmeans{i}" for i in range(3)], dtype=object))
  np.testing.assert_array_equal(
      est.get_feature_names_out(),
      SkKMeans(3, n_init=1, random_state=0).fit(x).get_feature_names_out())
  assert est.set_output(transform="default") is est
  assert isinstance(est.transform(x), np.ndarray)
  for bad in ("elkan", "auto", "full"):
    with pytest.raises(ValueError, match=rf"algorithm must be one of \('lloyd',\), got "
                                         rf"'{bad}'"):
      KMeans(3, algorithm=bad).fit(x)


def test_float64_and_integer_input_under_x64(far):
  x = (far.astype(np.float64) - 1000.0) * 10
  with jax.enable_x64(True):
    est = KMeans(3, random_state=0, max_iter=30).fit(x)
    assert est.cluster_centers_.dtype == np.float64
    ints = KMeans(3, random_state=0, max_iter=30).fit(np.round(x).astype(np.int64))
    assert ints.cluster_centers_.dtype == np.float64
    sk = SkKMeans(3, init=est.cluster_centers_, n_init=1, max_iter=30).fit(x)
    # The dtype is kept, but the Lloyd loop accumulates in float32: from our
    # fixed point scikit-learn's float64 iterations move by float32 roundings
    # of the means only (48 points per sum at most).
    np.testing.assert_allclose(sk.cluster_centers_, est.cluster_centers_, rtol=0,
                               atol=(48 + 4) * EPS32 * np.abs(x).max())
    np.testing.assert_array_equal(est.predict(x), sk.predict(x))
    assert est.transform(x).dtype == np.float32
  # Without x64 float64 input is clustered in float32 (documented).
  assert KMeans(3, random_state=0, max_iter=5).fit(x).cluster_centers_.dtype == np.float32


@pytest.mark.parametrize("init", ["k-means++", "random"])
def test_seeding_follows_sample_weight(init):
  """scikit-learn's test_sample_weight_zero/_init (they call its private
  _init_centroids) for the seeding that fit uses: a point of weight 0 is
  never a starting centroid, and other weights give other seeds."""
  x, _ = make_blobs(100, n_features=5, centers=5, random_state=0)
  x = x.astype(np.float32)
  w = np.random.RandomState(0).uniform(size=100).astype(np.float32)
  w[::2] = 0
  seed = {"k-means++": fk.init_kmeans_plusplus, "random": fk.init_random}[init]
  for s in range(4):
    c = np.asarray(seed(jax.random.key(s), x, 10, w))
    # Every seed is a data point of positive weight (bitwise: seeds are rows of x).
    hit = (x[None, :, :] == c[:, None, :]).all(-1)
    assert hit.any(axis=1).all()
    assert not hit[:, ::2].any()
  ones = np.asarray(seed(jax.random.key(0), x, 10, np.ones(100, np.float32)))
  weighted = np.asarray(seed(jax.random.key(0), x, 10,
                             np.random.RandomState(1).uniform(size=100).astype(np.float32)))
  assert not np.array_equal(ones, weighted)
