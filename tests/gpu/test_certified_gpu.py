"""Certified float32 labels through the real Triton kernel and XLA's GPU dots
(TF32 operands are only real on the GPU). Run on the GPU machine:
``python -m pytest -q tests/gpu/test_certified_gpu.py``."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import flashkmeans_jax as fk
from flashkmeans_jax.core import metric as metric_mod
from flashkmeans_jax.core import precision as precision_mod
from flashkmeans_jax.ops.assign import bound as bound_mod
from flashkmeans_jax.ops.assign import certified
from tests import cases
from tests import checks_certified as cc

pytestmark = pytest.mark.gpu

PRESETS = ("default", "high", "highest", "F16_F16_F32", "BF16_BF16_F32", "TF32_TF32_F32_X3",
           "BF16_BF16_F32_X3")
GRID = ((1, 1e-8), (1, 1e8), (7, 1.0), (130, 1e-8), (130, 1.0), (130, 1e8), (1024, 1e-8),
        (1024, 1.0), (1024, 1e8))


@pytest.mark.parametrize("impl", ["pallas", "xla"])
@pytest.mark.parametrize("metric", cases.METRICS)
@pytest.mark.parametrize("precision", PRESETS)
def test_near_ties_gpu(impl, metric, precision):
  rng = np.random.default_rng(21)
  for d, mag in GRID:
    x, c = cc.near_ties(rng, d, mag, metric)
    labels, dist, runner = fk.assign(x, c, metric=metric, impl=impl,
                                     precision="certified:" + precision, return_runner_up=True)
    cc.check_certified_labels(x, c, labels, metric, impl)
    assert np.all(np.asarray(runner) >= np.asarray(dist))


def _sound(x, c, metric, impl, precision):
  """The kernel's best and runner-up scores are within the bound of the
  exact best and runner-up (the min of values each within E is within E)."""
  p = precision_mod.resolve_precision(precision)
  top = certified.top2(jnp.asarray(x), jnp.asarray(c), metric, impl, p)
  cp, bias = metric_mod.prepare_centroids(jnp.asarray(c), metric, jnp.float32)
  e = np.asarray(bound_mod.score_error_bound(
      top.xsq, bound_mod.centroid_stats(cp, bias, metric), x.shape[1], metric,
      bound_mod.dot_model(p, impl)), np.float64)
  s = cc.exact_scores(x, c, metric)
  lab = np.asarray(top.labels)
  rows = np.arange(len(lab))
  err_best = np.abs(np.asarray(top.best, np.float64) - s[rows, lab])
  s_other = s.copy()
  s_other[rows, lab] = np.inf
  err_second = np.abs(np.asarray(top.second, np.float64) - s_other.min(1))
  ratio = max((err_best / e).max(), (err_second / e).max())
  assert ratio <= 1.0, (metric, impl, precision, ratio)
  return ratio


@pytest.mark.parametrize("impl", ["pallas", "xla"])
@pytest.mark.parametrize("metric", cases.METRICS)
@pytest.mark.parametrize("precision", ("default", "F16_F16_F32", "BF16_BF16_F32", "highest"))
def test_bound_is_sound_gpu(impl, metric, precision):
  rng = np.random.default_rng(22)
  x = (rng.normal(size=(4096, 128)) * 10.0 ** rng.integers(-6, 7, size=(4096, 1)))
  c = rng.normal(size=(300, 128))
  _sound(x.astype(np.float32), c.astype(np.float32), metric, impl, precision)
  x, c = cc.near_ties(rng, 128, 1.0, metric)
  _sound(x, c, metric, impl, precision)


def test_grid_shape_labels_equal_float64():
  """N=65536, K=1024, D=128 (the issue's table): certified TF32 labels equal
  the float64 argmin beyond the tie width; few points need the exact pass."""
  x = jax.random.normal(jax.random.key(1), (65536, 128), jnp.float32)
  c = x[:1024]
  for prec in ("certified", "certified:F16_F16_F32", "certified:BF16_BF16_F32"):
    labels, _ = fk.assign(x, c, impl="pallas", precision=prec)
    cc.check_certified_labels(np.asarray(x), np.asarray(c), labels, "sqeuclidean", "pallas")
    rep = fk.certification(x, c, impl="pallas", precision=prec) if hasattr(
        fk, "certification") else None
    if rep is not None:
      print(prec, "uncertified", 1.0 - float(np.asarray(rep.certified).mean()))


@pytest.mark.parametrize("std", [1.0, 6.0])
def test_lloyd_matches_sklearn(std):
  """Certified labels in Lloyd's loop, from scikit-learn's initial centroids:
  the same labels as scikit-learn's float64 Lloyd at every iteration count,
  up to the first proven tie (our float32 centroids against its float64
  ones: :func:`tests.checks_certified.lloyd_vs_sklearn`)."""
  from sklearn.datasets import make_blobs
  x, _ = make_blobs(n_samples=20000, n_features=32, centers=50, cluster_std=std,
                    center_box=(-20.0, 20.0), random_state=0)
  x = x.astype(np.float32)
  init = x[np.random.default_rng(1).choice(len(x), 50, replace=False)]
  its, differing = cc.lloyd_vs_sklearn(x, init, impl="pallas")
  print("std", std, "iterations compared", its, "labels differing (proven ties)", differing)
