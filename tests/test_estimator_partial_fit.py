"""``KMeans.partial_fit`` against ``sklearn.cluster.MiniBatchKMeans`` fed the
same batches from the same centres, and against the running-mean rule in
NumPy after a ``fit``."""

import os

import numpy as np
import pytest

from flashkmeans_jax.estimator import KMeans, bucket_rows

os.environ.setdefault("FLASHKMEANS_JAX_NO_COMPILE_CACHE", "1")  # see test_estimator.py

sklearn = pytest.importorskip("sklearn")
from sklearn.cluster import MiniBatchKMeans  # noqa: E402

EPS32 = float(np.finfo(np.float32).eps)
# Batch sizes of one row bucket (one compiled step), weights on some steps.
SIZES = (40, 37, 34, 39, 36)


@pytest.fixture(scope="module")
def stream():
  rng = np.random.default_rng(0)
  means = np.array([[0, 0, 0], [8, 0, 0], [0, 8, 0], [0, 0, 8]], np.float64)
  batches = []
  for i, n in enumerate(SIZES):
    x = (means[rng.integers(0, 4, n)] + rng.normal(size=(n, 3))).astype(np.float32)
    w = rng.uniform(0.5, 2.0, n).astype(np.float32) if i % 2 else None
    batches.append((x, w))
  assert len({bucket_rows(n) for n in SIZES}) == 1
  init = (means + 0.5).astype(np.float32)
  return batches, init


def test_partial_fit_matches_minibatch_kmeans(stream):
  batches, init = stream
  sk = MiniBatchKMeans(4, init=init.astype(np.float64), n_init=1, reassignment_ratio=0.0,
                       random_state=0)
  est = KMeans(4, init=init)
  scale = max(float(np.abs(x).max()) for x, _ in batches)
  for step, (x, w) in enumerate(batches, start=1):
    sk.partial_fit(x.astype(np.float64), sample_weight=w)
    assert est.partial_fit(x, sample_weight=w) is est
    # The labels (of the batch, against the updated centres) agree exactly:
    # the blobs leave no near-tie.
    np.testing.assert_array_equal(est.labels_, sk.labels_)
    # Each step rounds c * W, the batch's sum S (at most n terms), c * W + S,
    # W + w and the division: (n + 4) roundings of at most `scale`, carried
    # forward with a factor W / (W + w) <= 1, so they add up over the steps.
    tol = step * (max(SIZES) + 4) * EPS32 * scale
    np.testing.assert_allclose(est.cluster_centers_, sk.cluster_centers_, rtol=0, atol=tol)
    assert est.inertia_ == pytest.approx(sk.inertia_, rel=1e-5)
    assert est.n_steps_ == sk.n_steps_ == step
  assert est.cluster_centers_.dtype == np.float32 and est.n_iter_ == 0


def test_partial_fit_after_fit_continues_the_running_mean(stream):
  batches, _ = stream
  x0 = np.concatenate([x for x, _ in batches[:2]])
  est = KMeans(4, random_state=0, max_iter=50).fit(x0)
  c = est.cluster_centers_.astype(np.float64)
  counts = np.bincount(est.labels_, minlength=4).astype(np.float64)
  x, _ = batches[2]
  w = np.linspace(0.5, 1.5, len(x))
  lab = np.argmin(((x[:, None].astype(np.float64) - c[None]) ** 2).sum(-1), 1)
  s = np.zeros_like(c)
  np.add.at(s, lab, w[:, None] * x)
  wk = np.bincount(lab, weights=w, minlength=4)
  ref = np.where((wk > 0)[:, None], (c * counts[:, None] + s) / (counts + wk)[:, None], c)
  est.partial_fit(x, sample_weight=w)
  tol = (len(x) + 4) * EPS32 * float(np.abs(x0).max())
  np.testing.assert_allclose(est.cluster_centers_, ref, rtol=0, atol=tol)
  assert est.n_steps_ == 1
  with pytest.raises(ValueError, match="X has 2 features, but KMeans is expecting 3"):
    est.partial_fit(x[:, :2])
  with pytest.raises(ValueError, match=r"sample_weight must have shape \(34,\)"):
    est.partial_fit(x, sample_weight=w[:5])
