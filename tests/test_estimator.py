"""The scikit-learn-style ``KMeans`` estimator."""

import importlib
import os
import pickle
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import flashkmeans_jax as fk
from flashkmeans_jax.estimator import KMeans, NotFittedError, pairwise_distances_tiled
from tests import helpers

sklearn = pytest.importorskip("sklearn")
from sklearn.base import clone  # noqa: E402
from sklearn.cluster import KMeans as SkKMeans  # noqa: E402
from sklearn.metrics import adjusted_rand_score  # noqa: E402
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
# Where k and max_iter are not the point, the tests fit KMeans(n_clusters=4,
# max_iter=30) on the 600 blobs: one compiled fit (and predict, transform,
# score) serves all of them.
SHARED = dict(n_clusters=4, max_iter=30)
# Tests leave the user's persistent compilation cache alone (set at
# collection, before any test calls the estimator; tests/test_compile_cache.py
# checks the cache in subprocesses).
os.environ.setdefault("FLASHKMEANS_JAX_NO_COMPILE_CACHE", "1")

# scikit-learn's estimator checks. The only check KMeans does not pass is
# listed here (and in flashkmeans_jax/estimator.py and docs/usage.md):
# - check_sample_weight_equivalence_on_dense_data: integer weights are not
#   equivalent to repeating rows *for the same seed*, because k-means++ draws
#   from a different array; scikit-learn expects the same failure of its own
#   KMeans (sklearn/utils/_test_common/instance_generator.py).
# scikit-learn itself skips the pandas checks when pandas is absent and the
# array-API checks unless SCIPY_ARRAY_API=1; sparse input raises TypeError, so
# the sparse checks are not generated.
EXPECTED_FAILED_CHECKS = {
    "check_sample_weight_equivalence_on_dense_data":
        "sample_weight is not equivalent to removing/repeating samples for the "
        "same random seeding (k-means++ draws differ), as for sklearn's KMeans",
}


@parametrize_with_checks([KMeans(n_clusters=2, max_iter=20, random_state=0)],
                         expected_failed_checks=lambda est: EXPECTED_FAILED_CHECKS)
def test_sklearn_estimator_checks(estimator, check):
  check(estimator)


@pytest.fixture(scope="module")
def blobs():
  x, _, _ = helpers.make_blobs(np.random.default_rng(0), 600, 5, 6, spread=4.0, std=1.0)
  return x


def test_matches_functional_kmeans(blobs):
  est = KMeans(n_clusters=6, random_state=3, max_iter=50).fit(blobs)
  # fit pads the 600 rows to their bucket (640) with weight-0 copies of the
  # last row: it is exactly the functional call on the padded data ...
  rows = fk.estimator.bucket_rows(600)
  assert rows == 640
  xp = np.concatenate([blobs, np.repeat(blobs[-1:], rows - 600, 0)])
  wp = np.r_[np.ones(600), np.zeros(rows - 600)].astype(np.float32)
  padded = fk.kmeans(jax.random.key(3), jnp.asarray(xp), 6, max_iter=50, empty="farthest",
                     weights=jnp.asarray(wp))
  np.testing.assert_array_equal(est.labels_, np.asarray(padded.labels)[:600])
  np.testing.assert_array_equal(est.cluster_centers_, np.asarray(padded.centroids))
  assert est.inertia_ == float(padded.inertia)
  np.testing.assert_array_equal(est.inertia_history_,
                                np.asarray(padded.inertia_history)[:est.n_iter_])
  # ... and the unpadded one's clustering: the padding moves nothing (the
  # inertia's float32 sum runs over more terms, so it may differ in the last bits).
  res = fk.kmeans(jax.random.key(3), jnp.asarray(blobs), 6, max_iter=50, empty="farthest")
  np.testing.assert_array_equal(est.labels_, np.asarray(res.labels))
  np.testing.assert_allclose(est.cluster_centers_, np.asarray(res.centroids), rtol=0, atol=0)
  assert est.inertia_ == pytest.approx(float(res.inertia), rel=1e-6)
  assert est.n_iter_ == int(res.n_iter)
  assert est.converged_ == bool(res.converged)
  assert est.inertia_history_.shape == (est.n_iter_,)
  np.testing.assert_allclose(est.inertia_history_,
                             np.asarray(res.inertia_history)[:est.n_iter_], rtol=1e-6)
  assert est.labels_.dtype == np.int32 and est.cluster_centers_.dtype == np.float32
  assert est.n_features_in_ == 5
  # The inertia never increases along Lloyd's iterations.
  assert np.all(np.diff(est.inertia_history_.astype(np.float64)) <= 1e-3 * est.inertia_)


def test_agrees_with_sklearn_from_same_init(blobs):
  c0 = blobs[[0, 100, 200, 300, 400, 500]]
  est = KMeans(n_clusters=6, init=c0, max_iter=100, tol=0.0).fit(blobs)
  sk = SkKMeans(6, init=c0, n_init=1, max_iter=100, tol=0.0, algorithm="lloyd").fit(
      blobs.astype(np.float64))
  assert adjusted_rand_score(sk.labels_, est.labels_) == 1.0
  np.testing.assert_allclose(est.cluster_centers_, sk.cluster_centers_, rtol=1e-4, atol=1e-4)
  assert est.inertia_ == pytest.approx(sk.inertia_, rel=1e-5)
  assert est.score(blobs) == pytest.approx(sk.score(blobs.astype(np.float64)), rel=1e-5)
  np.testing.assert_array_equal(est.predict(blobs[:50]), sk.predict(blobs[:50].astype(np.float64)))
  # transform: Euclidean distances, as scikit-learn's.
  np.testing.assert_allclose(est.transform(blobs), sk.transform(blobs.astype(np.float64)),
                             rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("metric", ["sqeuclidean", "cosine", "dot"])
def test_transform_tiles_and_metrics(blobs, metric):
  est = KMeans(**SHARED, metric=metric, random_state=0).fit(blobs)
  ref = helpers.np_distances(blobs, est.cluster_centers_, metric)
  if metric == "sqeuclidean":
    ref = np.sqrt(ref)
  got = est.transform(blobs)
  assert got.shape == (600, 4) and got.dtype == np.float32
  np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-3)
  # Tiny tiles (7 rows of K=4 floats, last one padded): the same values up to
  # float32 rounding of a differently shaped matmul.
  tiled = pairwise_distances_tiled(jnp.asarray(blobs), est.cluster_centers_, metric=metric,
                                   sqrt=metric == "sqeuclidean", tile_bytes=7 * 4 * 4)
  np.testing.assert_allclose(tiled, got, rtol=1e-5, atol=1e-4)
  np.testing.assert_array_equal(est.predict(blobs), est.labels_)
  np.testing.assert_array_equal(got.argmin(1), est.labels_)


def test_score_and_weights(blobs):
  w = np.random.default_rng(1).uniform(0.5, 2.0, size=len(blobs)).astype(np.float32)
  est = KMeans(n_clusters=6, random_state=0, max_iter=50).fit(blobs, sample_weight=w)
  res = fk.kmeans(jax.random.key(0), jnp.asarray(blobs), 6, max_iter=50,
                  weights=jnp.asarray(w), empty="farthest")
  np.testing.assert_array_equal(est.labels_, np.asarray(res.labels))
  d = helpers.np_distances(blobs, est.cluster_centers_, "sqeuclidean")[
      np.arange(len(blobs)), est.labels_]
  assert est.inertia_ == pytest.approx(float((w * d).sum()), rel=1e-4)
  assert est.score(blobs, sample_weight=w) == pytest.approx(-est.inertia_, rel=1e-5)
  assert est.score(blobs) == pytest.approx(-d.sum(), rel=1e-4)
  with pytest.raises(ValueError, match=r"sample_weight must have shape \(600,\)"):
    est.fit(blobs, sample_weight=w[:10])
  with pytest.raises(ValueError, match="sample_weight must be >= 0"):
    est.fit(blobs, sample_weight=-w)


def test_jax_input_and_dtypes(blobs):
  base = KMeans(**SHARED, random_state=1)
  a = clone(base).fit(blobs)
  b = clone(base).fit(jnp.asarray(blobs))
  c = clone(base).fit(blobs.astype(np.float64))
  for other in (b, c):
    np.testing.assert_array_equal(other.labels_, a.labels_)
    assert other.cluster_centers_.dtype == np.float32
  half = clone(base).fit(blobs.astype(np.float16))
  assert half.cluster_centers_.dtype == np.float16
  bf = clone(base).fit(jnp.asarray(blobs, jnp.bfloat16))
  assert bf.cluster_centers_.dtype == jnp.bfloat16
  cast = clone(base).set_params(dtype="float32").fit(blobs.astype(np.float16))
  assert cast.cluster_centers_.dtype == np.float32
  ints = clone(base).fit(np.round(blobs).astype(np.int64))
  assert ints.cluster_centers_.dtype == np.float32
  assert adjusted_rand_score(half.labels_, a.labels_) > 0.95
  with pytest.raises(ValueError, match="dtype"):
    clone(base).set_params(dtype="int8").fit(blobs)
  with pytest.raises(ValueError, match="2 features, but KMeans is expecting 5"):
    a.predict(jnp.asarray(blobs[:, :2]))


def test_params_pickle_errors(blobs):
  est = KMeans(**SHARED, random_state=0)
  assert est.get_params()["n_clusters"] == 4 and est.get_params()["init"] == "k-means++"
  assert repr(est) == "KMeans(max_iter=30, n_clusters=4, random_state=0)"
  with pytest.raises(NotFittedError):
    est.predict(blobs)
  est.fit(blobs)
  again = pickle.loads(pickle.dumps(est))
  np.testing.assert_array_equal(again.predict(blobs), est.predict(blobs))
  np.testing.assert_array_equal(est.fit_predict(blobs), est.labels_)
  np.testing.assert_allclose(est.fit_transform(blobs), est.transform(blobs))
  with pytest.raises(ValueError, match="n_clusters=4 exceeds the number of points n_samples=3"):
    clone(est).fit(blobs[:3])
  with pytest.raises(ValueError, match="metric"):
    clone(est).set_params(metric="manhattan").fit(blobs)
  with pytest.raises(ValueError, match=r"init must have k=4 rows, got shape \(3, 5\)"):
    clone(est).set_params(init=blobs[:3]).fit(blobs)
  # A wrong number of features is named as such, also when the number of
  # rows is wrong too (scikit-learn's test passes X[:, :2] as init).
  for bad in (blobs[:4, :2], blobs[:, :2]):
    with pytest.raises(ValueError, match="init has 2 features, but KMeans is expecting 5 "
                                         "features as input"):
      clone(est).set_params(init=bad).fit(blobs)
  # NaN data is the data's fault, not the "starting centroids'"; the estimator
  # has no check_finite option, so the message names none.
  for bad in (jnp.asarray(blobs).at[0, 0].set(jnp.nan), np.where(blobs == blobs[0, 0], np.nan,
                                                                   blobs)):
    with pytest.raises(ValueError, match=r"^X contains NaN or Inf; clean the data$"):
      clone(est).fit(bad)


def test_init_options(blobs):
  # n_init="auto" is 10 for init="random": never worse than a single run.
  one = KMeans(n_clusters=6, init="random", n_init=1, random_state=0, max_iter=50).fit(blobs)
  auto = KMeans(n_clusters=6, init="random", n_init="auto", random_state=0,
                max_iter=50).fit(blobs)
  res = fk.kmeans(jax.random.key(0), jnp.asarray(blobs), 6, init="random", n_init=10,
                  max_iter=50, empty="farthest")
  assert auto.inertia_ == pytest.approx(float(res.inertia), rel=1e-6)
  assert auto.inertia_ <= one.inertia_ * (1 + 1e-6)
  seen = {}

  def my_init(x, k, rs):
    seen["args"] = (x.shape, k, type(rs).__name__)
    return x[:k]

  est = KMeans(n_clusters=6, init=my_init, n_init=1, max_iter=50, random_state=0).fit(blobs)
  assert seen["args"] == ((600, 5), 6, "RandomState")
  ref = fk.kmeans(jax.random.key(0), jnp.asarray(blobs), 6, init=jnp.asarray(blobs[:6]),
                  max_iter=50, empty="farthest")
  np.testing.assert_array_equal(est.labels_, np.asarray(ref.labels))


def test_verbose_prints_each_iteration(blobs, capsys):
  # 512 rows fill their bucket: no padding, so no weights. (With weights,
  # fk.kmeans(verbose=True) prints half the inertia it records; reported.)
  est = KMeans(n_clusters=3, random_state=0, max_iter=8, verbose=True).fit(blobs[:512])
  jax.effects_barrier()
  lines = [l for l in capsys.readouterr().out.splitlines() if " iter " in l]
  assert len(lines) == est.n_iter_
  assert float(lines[0].split("inertia")[1].split()[0]) == pytest.approx(
      float(est.inertia_history_[0]), rel=1e-5)


@pytest.mark.parametrize("chunk_size", [None, 128])
def test_precision_reaches_fit_predict_and_score(blobs, chunk_size):
  # At 1e6 unscaled float16 overflows: only the scaled F16_F16_F32 path that
  # fit, predict and score all hand on gives the functional result.
  x = blobs * 1e6
  est = KMeans(n_clusters=4, random_state=2, max_iter=30, precision="F16_F16_F32",
               chunk_size=chunk_size).fit(x)
  assert est.get_params()["precision"] == "F16_F16_F32"
  res = fk.kmeans(jax.random.key(2), jnp.asarray(x), 4, max_iter=30, precision="F16_F16_F32",
                  empty="farthest")
  np.testing.assert_array_equal(est.labels_, np.asarray(res.labels))
  lab, dist = fk.assign(jnp.asarray(x), jnp.asarray(est.cluster_centers_),
                        precision="F16_F16_F32")
  np.testing.assert_array_equal(est.predict(x), np.asarray(lab))
  assert est.score(x) == pytest.approx(-float(np.sum(np.asarray(dist, np.float64))), rel=1e-6)


def test_chunk_size_uses_streaming(blobs, monkeypatch):
  """chunk_size= fits through kmeans_streaming (one call, n_init handed on),
  with X left on the host; the result is the in-memory fit's."""
  estimator_mod = importlib.import_module("flashkmeans_jax.estimator.kmeans")
  calls = []
  real = estimator_mod.kmeans_streaming

  def spy(key, host_x, k, **kw):
    calls.append((type(host_x), kw["chunk_size"], kw["n_init"]))
    return real(key, host_x, k, **kw)

  monkeypatch.setattr(estimator_mod, "kmeans_streaming", spy)
  kw = dict(n_clusters=4, random_state=2, max_iter=30, n_init=3)
  est = KMeans(chunk_size=128, **kw).fit(blobs)
  assert calls == [(np.ndarray, 128, 3)]
  ref = KMeans(**kw).fit(blobs)
  np.testing.assert_array_equal(est.labels_, ref.labels_)
  np.testing.assert_allclose(est.cluster_centers_, ref.cluster_centers_, rtol=1e-5, atol=1e-5)
  assert est.inertia_ == pytest.approx(ref.inertia_, rel=1e-5)
  assert est.n_iter_ == ref.n_iter_


@pytest.mark.parametrize("chunk_size", [None, 64])
def test_bad_init_and_weights_refused_in_memory_and_streaming(blobs, chunk_size):
  """What kmeans refuses, KMeans refuses on both paths, with kmeans' message."""
  base = KMeans(n_clusters=3, max_iter=5, random_state=0, chunk_size=chunk_size)
  nan3 = np.full((3, 5), np.nan)
  for init in (nan3, lambda x, k, rs: nan3):
    with pytest.raises(ValueError, match="init contains NaN or Inf; starting centroids must "
                                         "be finite"):
      clone(base).set_params(init=init).fit(blobs)
  with pytest.raises(ValueError, match="sample_weight must have a positive sum; all weights "
                                       "are zero"):
    clone(base).fit(blobs, sample_weight=np.zeros(len(blobs)))
  with pytest.raises(ValueError, match="sample_weight must be finite"):
    clone(base).fit(blobs, sample_weight=np.full(len(blobs), np.nan))


def test_unclear_arguments_get_clear_errors(blobs):
  base = KMeans(**SHARED, random_state=0)
  with pytest.raises(ValueError, match=r"dtype must be None, 'float16', 'bfloat16' or "
                                       r"'float32', got 'bogus'"):
    clone(base).set_params(dtype="bogus").fit(blobs)
  with pytest.raises(TypeError, match="sample_weight must be an array of numbers, got str"):
    clone(base).fit(blobs, sample_weight="x")
  with pytest.raises(TypeError, match="n_clusters must be a Python int, got float"):
    clone(base).set_params(n_clusters=3.0).fit(blobs)
  with pytest.raises(ValueError, match="n_init must be one of"):
    clone(base).set_params(n_init="many").fit(blobs)
  # A cast the estimator makes itself may not overflow silently.
  with pytest.raises(ValueError, match=r"X holds values beyond float32's largest finite "
                                       r"magnitude"):
    clone(base).fit(blobs.astype(np.float64) * 1e39)
  with pytest.raises(ValueError, match=r"X holds values beyond float16's"):
    clone(base).set_params(dtype="float16").fit(blobs * 3e4)
  with pytest.raises(ValueError, match=r"init holds values beyond float32's"):
    clone(base).set_params(init=blobs[:4].astype(np.float64) * 1e39).fit(blobs)
  fitted = clone(base).fit(blobs)
  with pytest.raises(ValueError, match=r"^X contains NaN or Inf; clean the data$"):
    fitted.predict(np.where(blobs == blobs[1, 1], np.nan, blobs))


def test_works_without_sklearn():
  code = r"""
import sys
for name in [m for m in sys.modules if m.startswith("sklearn")]:
    del sys.modules[name]
sys.modules["sklearn"] = None
import numpy as np
from flashkmeans_jax.estimator import KMeans, NotFittedError
x = np.random.default_rng(0).normal(size=(200, 3)).astype(np.float32)
est = KMeans(n_clusters=3, random_state=0, max_iter=10)
assert type(est).__mro__[1].__name__ == "ParamsBase", type(est).__mro__
assert est.set_params(n_clusters=4) is est and est.get_params()["n_clusters"] == 4
print(repr(est))
try:
    est.predict(x)
except NotFittedError:
    pass
est.fit(x)
assert est.labels_.shape == (200,) and est.transform(x).shape == (200, 4)
assert abs(est.score(x) + est.inertia_) <= 1e-4 * est.inertia_
try:
    est.set_params(bogus=1)
except ValueError as e:
    print("ok:", e)
assert est.set_output(transform="default") is est
try:
    est.set_output(transform="pandas")
except ValueError as e:
    print("ok2:", e)
assert list(est.get_feature_names_out()) == ["kmeans0", "kmeans1", "kmeans2", "kmeans3"]
import warnings
from flashkmeans_jax.estimator import ConvergenceWarning
assert issubclass(ConvergenceWarning, UserWarning)
with warnings.catch_warnings(record=True) as w:
    warnings.simplefilter("always")
    KMeans(n_clusters=3, n_init=1).fit(np.zeros((5, 3)))
assert [type(m.message) for m in w] == [ConvergenceWarning], w
"""
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       cwd=ROOT, env={**__import__("os").environ, "PYTHONPATH": str(ROOT)},
                       timeout=120)
  assert out.returncode == 0, out.stderr
  assert "KMeans(max_iter=10, n_clusters=4, random_state=0)" in out.stdout
  assert "ok: Invalid parameter 'bogus'" in out.stdout
  assert "ok2: transform must be one of ('default',), got 'pandas'" in out.stdout
