"""Certified float32 labels (issue 19): the error bound is sound (and tight
enough that half of it is not), and certified labels are the float64 argmin
beyond the stated tie width on adversarial near-ties, on the XLA path and the
Pallas kernel in interpret mode. The real kernel: tests/gpu/test_certified_gpu.py.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

import flashkmeans_jax as fk
from flashkmeans_jax.api import ops as ops_api
from flashkmeans_jax.core import metric as metric_mod
from flashkmeans_jax.core import precision as precision_mod
from flashkmeans_jax.ops.assign import api as assign_op
from flashkmeans_jax.ops.assign import bound as bound_mod
from flashkmeans_jax.ops.assign import certified
from flashkmeans_jax.ops.assign import reference
from tests import cases
from tests import checks_certified as cc

PRESETS = ("default", "high", "highest", "F16_F16_F32", "BF16_BF16_F32")


def test_resolve_certified():
  r = precision_mod.resolve_precision
  assert r("certified") == precision_mod.Certified(lax.Precision.DEFAULT)
  assert r("certified:F16_F16_F32").base == lax.DotAlgorithmPreset.F16_F16_F32
  assert r("Certified:highest").base == lax.Precision.HIGHEST
  assert r(precision_mod.Certified("bf16_bf16_f32", 0.5)).capacity == 0.5
  assert precision_mod.dot_precision(r("certified:high")) == lax.Precision.HIGH
  for bad in ("certified:", "certified:ultra", "certifiedx", "certified:ANY_F8_ANY_F8_F32"):
    with pytest.raises(ValueError, match="precision"):
      fk.assign(jnp.ones((4, 2)), jnp.ones((2, 2)), precision=bad)
  with pytest.raises(ValueError, match="capacity"):
    r(precision_mod.Certified(lax.Precision.DEFAULT, 1.5))


def _fast_scores(x, c, metric, precision):
  """The XLA path's full float32 score matrix at ``precision``."""
  p = precision_mod.resolve_precision(precision)
  cp, bias, c_inverse = reference.operands(x, c, metric, p)
  x_op, row_factor = reference.half_operands(x, cp, c_inverse)
  return np.asarray(reference.scores(x_op, cp, bias, p, row_factor), np.float64)


def _bound(x, c, metric, precision, impl="xla"):
  cp, bias = metric_mod.prepare_centroids(jnp.asarray(c), metric, jnp.float32)
  stats = bound_mod.centroid_stats(cp, bias, metric)
  model = bound_mod.dot_model(precision_mod.resolve_precision(precision), impl)
  xsq = metric_mod.row_sqnorm(jnp.asarray(x))
  return np.asarray(bound_mod.score_error_bound(xsq, stats, x.shape[1], metric, model),
                    np.float64)


def _worst_case(d, precision, rng):
  """Points and centroids whose every entry sits just below a rounding
  midpoint of the preset's operands, all positive: every product loses
  almost ``2 u_op`` in the same direction, the bound's leading term (rows
  constant along D, so x and c are parallel and Cauchy-Schwarz is tight)."""
  step = {"F16_F16_F32": 2.0 ** -11, "BF16_BF16_F32": 2.0 ** -8}[precision]
  base = np.broadcast_to(2.0 ** rng.integers(-3, 4, size=(6, 1)), (6, d))
  v = (base * (1.0 + step * (1.0 - 2.0 ** -6))).astype(np.float32)
  return v[:3], v[3:]


@pytest.mark.parametrize("precision", ["default", "F16_F16_F32", "BF16_BF16_F32"])
@pytest.mark.parametrize("metric", cases.METRICS)
def test_bound_is_sound(precision, metric):
  """Random, near-tie and worst-case data: the float64 error of every fast
  score is at most the bound; on worst-case data more than half of it (so
  half the bound is not sound: the test cannot pass with a bound too small)."""
  rng = np.random.default_rng(19)
  data = [(rng.normal(size=(64, 33)) * 10.0 ** rng.integers(-8, 9, size=(64, 1)),
           rng.normal(size=(9, 33))),
          cc.near_ties(rng, 17, 1e4, metric)]
  worst = None
  if precision != "default":
    worst = _worst_case(256, precision, rng)
    data.append(worst)
  ratios = []
  for x, c in data:
    x = np.asarray(x, np.float32)
    c = np.asarray(c, np.float32)
    err = np.abs(_fast_scores(x, c, metric, precision) - cc.exact_scores(x, c, metric))
    ratio = (err / _bound(x, c, metric, precision)[:, None]).max()
    ratios.append(ratio)
    assert ratio <= 1.0, (precision, metric, ratio)
  if worst is not None and metric != "cosine":
    # Unit rows of cosine do not sit at rounding midpoints: not a worst case.
    assert ratios[-1] > 0.5, (precision, metric, ratios)


def _check_near_ties(impl, metric, precision, datasets, seed):
  rng = np.random.default_rng(seed)
  strict = 0
  for d, mag in datasets:
    x, c = cc.near_ties(rng, d, mag, metric)
    labels, dist, runner = fk.assign(x, c, metric=metric, impl=impl,
                                     precision="certified:" + precision,
                                     return_runner_up=True)
    strict += cc.check_certified_labels(x, c, labels, metric, impl)["strict"]
    assert np.all(np.asarray(runner) >= np.asarray(dist))
  return strict


# (D, magnitude): all shapes equal within a D, so one compilation serves them.
FAST_GRID = ((1, 1e-8), (1, 1e8), (130, 1e-8), (130, 1e8))
FULL_GRID = FAST_GRID + ((7, 1.0), (130, 1.0), (1024, 1e-8), (1024, 1.0), (1024, 1e8))


@pytest.mark.parametrize("metric,precision", [
    ("sqeuclidean", "BF16_BF16_F32"), ("cosine", "default"), ("dot", "F16_F16_F32")])
def test_near_ties_xla(metric, precision):
  """Adversarial near-ties at relative margins 1e-3..1e-7, magnitudes 1e-8
  and 1e8, zero rows, D = 1 and 130: certified labels are the float64 argmin
  beyond the tie width (and the check is not vacuous: many points are
  resolvable at float32 resolution; zero rows and 1-D cosine tie exactly)."""
  assert _check_near_ties("xla", metric, precision, FAST_GRID, 7) >= 5


@pytest.mark.slow
@pytest.mark.parametrize("metric", cases.METRICS)
@pytest.mark.parametrize("precision", PRESETS)
def test_near_ties_xla_full_grid(metric, precision):
  """Every preset, D up to 1024, magnitudes 1e-8..1e8."""
  assert _check_near_ties("xla", metric, precision, FULL_GRID, 9) >= 10


@pytest.mark.parametrize("metric,precision,grid", [
    ("sqeuclidean", "default", ((130, 1e8),)),
    ("cosine", "BF16_BF16_F32", ((3, 1e-8),)),
])
def test_near_ties_interpret(metric, precision, grid):
  """The kernel's runner-up and the certified flow around it (interpret)."""
  _check_near_ties("pallas_interpret", metric, precision, grid, 8)


def test_bfloat16_alone_gets_near_ties_wrong():
  """The data is hard: without the certificate bfloat16 operands miss labels
  that the certified path gets right (test_near_ties_* would fail)."""
  rng = np.random.default_rng(7)
  x, c = cc.near_ties(rng, 130, 1.0, "sqeuclidean")
  assert cc.fast_wrong(x, c, "sqeuclidean", "xla", "BF16_BF16_F32") > 0


@pytest.mark.parametrize("n,n_ties", [(2048, 40), (2048, 300)])
def test_compacted_exact_pass(n, n_ties):
  """Near-ties among far points: 40 of 2048 fit the smallest compacted pass
  (128 rows), 300 take the 512-row one; labels as float64 in both
  (same shapes: one compilation; the pass over every point is what small N
  takes in the other tests)."""
  assert certified.capacity_ladder(512, 1 / 256) == (128,)
  assert certified.capacity_ladder(2048, 1 / 256) == (128, 256, 512)
  rng = np.random.default_rng(3)
  x, c = cc.near_ties(rng, 16, 1.0, "sqeuclidean", k_extra=0)
  x, c = x[:10], c[:20]  # the 1e-3 and 1e-4 margins: 10 points, 20 centroids
  far = rng.normal(size=(n - n_ties, 16)).astype(np.float32) * 0.01 + 50.0
  pts = np.concatenate([np.repeat(x, n_ties // 10, axis=0), far])
  cent = np.concatenate([c, np.full((1, 16), 50.0, np.float32)])
  p = precision_mod.resolve_precision("certified:BF16_BF16_F32")
  top = certified.certified_top2(jnp.asarray(pts), jnp.asarray(cent), "sqeuclidean", "xla", p)
  assert int(top.n_uncertified) >= n_ties // 2
  assert (int(top.n_uncertified) > 128) == (n_ties > 128)
  cc.check_certified_labels(pts, cent, top.labels, "sqeuclidean", "xla")


@pytest.mark.parametrize("impl", ["xla", "pallas_interpret"])
def test_runner_up_output_and_gradient(impl):
  rng = np.random.default_rng(5)
  x = jnp.asarray(rng.normal(size=(40, 6)), jnp.float32)
  c = jnp.asarray(rng.normal(size=(5, 6)), jnp.float32)
  for prec in ("certified",):
    labels, dist, runner = fk.assign(x, c, impl=impl, precision=prec, return_runner_up=True)
    d64 = np.sort(((np.asarray(x, np.float64)[:, None] - np.asarray(c, np.float64)[None])
                   ** 2).sum(-1), axis=1)
    np.testing.assert_allclose(np.asarray(runner), d64[:, 1], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(dist), d64[:, 0], rtol=1e-5, atol=1e-5)

  def loss(x, c, w):
    _, d, r = fk.assign(x, c, impl=impl, precision="certified", return_runner_up=True)
    return jnp.sum(d ** 2) + w * jnp.sum(r)

  if impl != "xla":
    return  # the gradient rule is shared (ops/assign/api.py): checked once
  g1 = jax.grad(loss, argnums=(0, 1))(x, c, 1.0)
  g0 = jax.grad(lambda x, c: jnp.sum(fk.assign(x, c, impl=impl)[1] ** 2), argnums=(0, 1))(x, c)
  # The runner-up carries no gradient; the distance's is assign's.
  for a, b in zip(g1, g0):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-5)
  # One centroid: no runner-up.
  _, _, r1 = fk.assign(x, c[:1], impl=impl, return_runner_up=True)
  assert np.all(np.isposinf(np.asarray(r1)))


def test_kmeans_with_certified_precision():
  """Lloyd's loop takes the certified path through its precision option:
  five iterations from the same start as float64 NumPy Lloyd."""
  rng = np.random.default_rng(2)
  x = rng.normal(size=(300, 4)).astype(np.float32)
  init = x[:6]
  r = fk.kmeans(jax.random.key(0), jnp.asarray(x), 6, init=jnp.asarray(init), max_iter=5,
                tol=0.0, impl="xla", precision="certified:BF16_BF16_F32")
  c = init.astype(np.float64)
  x64 = x.astype(np.float64)
  for _ in range(5):
    lab = cc.exact_scores(x, c.astype(np.float32), "sqeuclidean").argmin(1)
    c = np.stack([x64[lab == j].mean(0) for j in range(6)])
  np.testing.assert_allclose(np.asarray(r.centroids), c, rtol=1e-5, atol=1e-5)


def test_certification_report():
  rng = np.random.default_rng(4)
  x, c = cc.near_ties(rng, 9, 1.0, "dot")
  rep = ops_api.certification(x, c, metric="dot", impl="xla", precision="BF16_BF16_F32")
  cert = np.asarray(rep.certified)
  assert 0 < cert.sum() < len(cert)
  assert np.all(np.asarray(rep.margin)[cert] > 2 * np.asarray(rep.bound)[cert])
  # The float16 pass certifies more than the bfloat16 one (smaller bound).
  rep16 = ops_api.certification(x, c, metric="dot", impl="xla", precision="F16_F16_F32")
  assert np.asarray(rep16.certified).sum() >= cert.sum()
  assert assign_op.assign is not None


@pytest.mark.parametrize("deferred", [False, True])
def test_kernel_top2_matches_reference(deferred):
  """The kernel's runner-up over several centroid tiles (both sweeps: per-tile
  reductions and the deferred element-wise minimum), with a duplicated
  centroid (an exact tie: runner-up equals best) and padded tiles."""
  from flashkmeans_jax.ops.assign import config as config_mod
  from flashkmeans_jax.ops.assign import pallas_triton
  rng = np.random.default_rng(12)
  x = jnp.asarray(rng.normal(size=(45, 5)), jnp.float32)
  c = np.asarray(rng.normal(size=(70, 5)), np.float32)
  c[69] = c[3]
  x = x.at[0].set(c[3] + 0.01)  # nearest to both copies: runner-up = best
  c = jnp.asarray(c)
  cfg = config_mod.AssignConfig(block_n=16, block_k=16, block_d=16, num_warps=4, num_stages=1,
                                deferred_argmin=deferred)
  got = pallas_triton.flash_assign(x, c, precision="highest", config=cfg, interpret=True,
                                   runner_up=True)
  want = reference.assign_top2_reference(x, c, precision="highest")
  np.testing.assert_array_equal(np.asarray(got[0]), np.asarray(want[0]))
  for g, w in zip(got[1:], want[1:]):
    np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=1e-5, atol=1e-5)
  s = cc.exact_scores(np.asarray(x), np.asarray(c), "sqeuclidean")
  np.testing.assert_allclose(np.asarray(got[2]), np.sort(s, 1)[:, 1], rtol=1e-5, atol=1e-5)
  assert got[0][0] == 3 and got[1][0] == got[2][0]


def test_default_switch(monkeypatch):
  """One constant makes certified labels the float32 default on GPUs."""
  assert precision_mod.resolve_precision(None) == lax.Precision.DEFAULT
  monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
  assert precision_mod.resolve_precision(None) == lax.Precision.DEFAULT
  monkeypatch.setattr(precision_mod, "CERTIFIED_FLOAT32_DEFAULT_ON_GPU",
                      lax.DotAlgorithmPreset.F16_F16_F32)
  assert precision_mod.resolve_precision(None) == precision_mod.Certified(
      lax.DotAlgorithmPreset.F16_F16_F32)
  with jax.default_matmul_precision("highest"):
    assert precision_mod.resolve_precision(None) == lax.Precision.HIGHEST


@pytest.mark.parametrize("std", [4.0])
def test_lloyd_matches_sklearn(std):
  """Lloyd's loop with certified labels follows scikit-learn's float64 Lloyd
  from the same initial centroids at every iteration count, up to a proven
  tie (:func:`tests.checks_certified.lloyd_vs_sklearn`; the GPU file runs it
  at 20,000 x 32, K=50)."""
  from sklearn.datasets import make_blobs
  x, _ = make_blobs(n_samples=1500, n_features=8, centers=12, cluster_std=std,
                    center_box=(-20.0, 20.0), random_state=3)
  x = x.astype(np.float32)
  init = x[np.random.default_rng(1).choice(len(x), 12, replace=False)]
  its, differing = cc.lloyd_vs_sklearn(x, init, impl="xla", max_iter=40, chained=True)
  print("iterations compared", its, "differing", differing)
  assert its >= 2 and differing <= 2, (its, differing)
