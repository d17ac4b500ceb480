"""k-means inside training code: the gradient of ``assign``, the straight-through
quantiser, EMA and mini-batch codebook updates (CPU: XLA and interpret mode)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, PartitionSpec as P

import flashkmeans_jax as fk
from flashkmeans_jax.api import training
from tests import cases

IMPLS = ["xla", "pallas_interpret"]


def _data(seed, n=300, d=5, k=7):
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(n, d)).astype(np.float32)
  c = rng.normal(size=(k, d)).astype(np.float32)
  return jnp.asarray(x), jnp.asarray(c)


def _np_grad_c(x, c, labels, g, metric):
  """float64 gradient of sum_n g_n * dist(x_n, c_{labels_n}) w.r.t. c."""
  x = np.asarray(x, np.float64)
  c = np.asarray(c, np.float64)
  g = np.asarray(g, np.float64)
  out = np.zeros_like(c)
  for n, l in enumerate(np.asarray(labels)):
    if metric == "sqeuclidean":
      out[l] += -2.0 * g[n] * (x[n] - c[l])
    elif metric == "dot":
      out[l] += -g[n] * x[n]
    else:
      xn, cn = np.linalg.norm(x[n]), np.linalg.norm(c[l])
      u, v = x[n] / xn, c[l] / cn
      out[l] += -g[n] * (u - (u @ v) * v) / cn
  return out


def grad_reference(x, c, g, labels, metric):
  """float64 gradients of ``sum_n g_n dist(x_n, c_{labels_n})`` (labels fixed)
  w.r.t. x and c, and the magnitudes their float32 rounding is relative to.

  Rows of x that are not finite, and non-finite ``g``, add nothing to the
  centroid gradient (the op's rule); ``gx`` is returned for the rows where
  both are finite only (NaN elsewhere). Returns ``(gx, gc, mag_x, mag_c, n_k)`` with ``n_k``
  the rows summed into each centroid.
  """
  x = np.asarray(x.astype(jnp.float32) if hasattr(x, "astype") else x, np.float64)
  c = np.asarray(c, np.float64)
  g = np.asarray(g, np.float64)
  labels = np.asarray(labels)
  ok = np.isfinite(x).all(1) & np.isfinite(g)
  x0 = np.where(ok[:, None], x, 0.0)
  g0 = np.where(ok, g, 0.0)[:, None]
  cl = c[labels]
  if metric == "sqeuclidean":
    gx, rows = 2.0 * g0 * (x0 - cl), -2.0 * g0 * (x0 - cl)
    mag_x = 2.0 * np.abs(g0) * (np.abs(x0) + np.abs(cl))
    mag_rows = 2.0 * np.abs(g0) * (np.abs(x0) + np.abs(cl))
  elif metric == "dot":
    gx, rows = -g0 * cl, -g0 * x0
    mag_x, mag_rows = np.abs(g0 * cl), np.abs(g0 * x0)
  else:
    xn = np.linalg.norm(x0, axis=1, keepdims=True)
    cn = np.linalg.norm(cl, axis=1, keepdims=True)
    live = (xn > 0) & (cn > 0)
    u = x0 / np.where(xn > 0, xn, 1.0)
    v = cl / np.where(cn > 0, cn, 1.0)
    cos = (u * v).sum(1, keepdims=True)
    gx = np.where(live, -g0 * (v - cos * u) / np.where(xn > 0, xn, 1.0), 0.0)
    rows = np.where(live, -g0 * (u - cos * v) / np.where(cn > 0, cn, 1.0), 0.0)
    mag_x = np.where(live, np.abs(g0) * (np.abs(v) + np.abs(u)) / np.where(xn > 0, xn, 1), 0)
    mag_rows = np.where(live, np.abs(g0) * (np.abs(u) + np.abs(v)) / np.where(cn > 0, cn, 1), 0)
  gc = np.zeros_like(c)
  mag_c = np.zeros_like(c)
  np.add.at(gc, labels, rows)
  np.add.at(mag_c, labels, mag_rows)
  n_k = np.bincount(labels[ok], minlength=c.shape[0])
  gx = np.where(ok[:, None], gx, np.nan)
  return gx, gc, mag_x, mag_c, n_k


def check_gradients(x, c, g, labels, gx, gc, metric):
  """The custom VJP's ``gx`` and ``gc`` against :func:`grad_reference` under
  bounds from float32 rounding: each centroid entry is a float32 sum of its
  ``n_k`` rows plus a D-term dot (cosine) and a few roundings, so its error
  is at most ``gamma(n_k + D + 6)`` times the summed magnitudes
  (:func:`tests.cases.gamma`, times :data:`tests.cases.SAFETY`); each ``gx``
  entry is a few roundings of its terms (cosine: a D-term dot)."""
  want_x, want_c, mag_x, mag_c, n_k = grad_reference(x, c, g, labels, metric)
  d = c.shape[1]
  u = cases.accumulation_roundoff()
  bound_c = cases.SAFETY * cases.gamma(n_k + d + 6, u)[:, None] * mag_c
  got_c = np.asarray(gc, np.float64)
  assert np.all(np.isfinite(got_c))
  err_c = np.abs(got_c - want_c)
  assert np.all(err_c <= bound_c), (err_c - bound_c).max()
  rows = np.isfinite(want_x).all(1)
  # gx is returned in x's dtype: one more rounding to it (relative, or half
  # the subnormal spacing for tiny float16 values).
  info = jnp.finfo(jnp.asarray(gx).dtype)
  got_x = np.asarray(jnp.asarray(gx).astype(jnp.float32), np.float64)[rows]
  bound_x = (cases.SAFETY * cases.gamma(d + 6, u) * mag_x[rows]
             + float(info.eps) / 2 * np.abs(want_x[rows]) + float(info.smallest_subnormal) / 2)
  err_x = np.abs(got_x - want_x[rows])
  assert np.all(err_x <= bound_x), (err_x - bound_x).max()


def edge_case(metric, dtype, seed=20, n=240, d=6, k=7):
  """Points, codebook and cotangents with every edge the rule names: NaN and
  Inf rows, a zero row, a NaN and an Inf cotangent, negative and zero
  cotangents, a cluster no point is nearest to and a NaN centroid."""
  rng = np.random.default_rng(seed)
  x = np.abs(rng.normal(size=(n, d))) + 0.1
  x[3, 1] = np.nan
  x[7] = np.inf
  x[11] = 0.0
  c = rng.normal(size=(k, d))
  c[5] = -100.0   # opposite the positive points: nearest to none under every metric
  c[6] = np.nan   # wins no point
  g = rng.uniform(-1.0, 1.0, n)
  g[20:30] = 0.0
  g[31], g[32] = np.nan, np.inf
  return (jnp.asarray(x, dtype), jnp.asarray(c, jnp.float32), jnp.asarray(g, jnp.float32))


@pytest.mark.parametrize("impl,dtype", [("xla", "float32"), ("xla", "bfloat16"),
                                        ("xla", "float16"), ("pallas_interpret", "float32"),
                                        ("pallas_interpret", "bfloat16")])
@pytest.mark.parametrize("metric", ["sqeuclidean", "cosine", "dot"])
def test_gradients_match_float64_with_edge_rows(impl, dtype, metric):
  x, c, g = edge_case(metric, cases.DTYPES[dtype])

  def loss(x, c):
    return jnp.sum(g * fk.assign(x, c, metric=metric, impl=impl)[1])

  # Under jit: an eager call refuses the NaN rows and the NaN centroid.
  labels = np.asarray(jax.jit(lambda x, c: fk.assign(x, c, metric=metric, impl=impl)[0])(x, c))
  assert 5 not in labels and 6 not in labels
  gx, gc = jax.jit(jax.grad(loss, argnums=(0, 1)))(x, c)
  assert gx.dtype == x.dtype and gc.dtype == c.dtype
  check_gradients(x, c, g, labels, gx, gc, metric)
  assert np.all(np.asarray(gc)[5:] == 0.0)
  # A NaN cotangent still reaches gx (elementwise), only the sums leave it out.
  assert np.isnan(np.asarray(gx[31], np.float32)).all()


# dot's centroid gradient is the same weighted sum as sqeuclidean's.
@pytest.mark.parametrize("metric", ["sqeuclidean", "cosine"])
def test_gradients_under_jit_of_vmap_match_float64(metric):
  xs, cs, gs = zip(*[edge_case(metric, jnp.bfloat16, seed=s, n=96, d=5, k=7)
                     for s in (21, 22)])
  xs, cs, gs = jnp.stack(xs), jnp.stack(cs), jnp.stack(gs)

  def loss(x, c, g):
    return jnp.sum(g * fk.assign(x, c, metric=metric, impl="pallas_interpret")[1])

  gx, gc = jax.jit(jax.vmap(jax.grad(loss, argnums=(0, 1))))(xs, cs, gs)
  for b in range(2):
    labels = jax.jit(lambda x, c: fk.assign(x, c, metric=metric, impl="pallas_interpret")[0])(
        xs[b], cs[b])
    check_gradients(xs[b], cs[b], gs[b], labels, gx[b], gc[b], metric)


@pytest.mark.parametrize("impl", IMPLS)
def test_gradients_match_finite_differences(impl):
  x, c = _data(2, n=64, d=3, k=4)
  x64 = np.asarray(x, np.float64)

  def loss(x, c):
    return jnp.sum(jnp.sin(fk.assign(x, c, impl=impl)[1]))

  gx, gc = jax.grad(loss, argnums=(0, 1))(x, c)
  labels = np.asarray(fk.assign(x, c, impl="xla")[0])

  def f64(xv, cv):  # labels held fixed, as the gradient is
    return np.sum(np.sin(((xv - cv[labels]) ** 2).sum(1)))

  h = 1e-6
  c64 = np.asarray(c, np.float64)
  for idx in [(0, 0), (1, 2), (3, 1)]:
    e = np.zeros_like(c64)
    e[idx] = h
    fd = (f64(x64, c64 + e) - f64(x64, c64 - e)) / (2 * h)
    np.testing.assert_allclose(float(gc[idx]), fd, rtol=1e-3, atol=1e-4)
  for idx in [(0, 0), (10, 2), (63, 1)]:
    e = np.zeros_like(x64)
    e[idx] = h
    fd = (f64(x64 + e, c64) - f64(x64 - e, c64)) / (2 * h)
    np.testing.assert_allclose(float(gx[idx]), fd, rtol=1e-3, atol=1e-4)


def test_vector_quantize_straight_through_and_losses():
  x, c = _data(4)
  r = jax.random.normal(jax.random.key(5), x.shape)
  vq = fk.vector_quantize(x, c, commitment_cost=0.5)
  labels = np.asarray(fk.assign(x, c)[0])
  np.testing.assert_array_equal(vq.labels, labels)
  np.testing.assert_array_equal(vq.quantized, np.asarray(c)[labels])
  d = ((np.asarray(x, np.float64) - np.asarray(c, np.float64)[labels]) ** 2).sum(1)
  np.testing.assert_allclose(float(vq.codebook_loss), d.mean(), rtol=1e-5)
  np.testing.assert_allclose(float(vq.loss), 1.5 * d.mean(), rtol=1e-5)
  # Straight-through: d(sum(q * r))/dx is r exactly.
  gx = jax.grad(lambda x: jnp.sum(fk.vector_quantize(x, c).quantized * r))(x)
  np.testing.assert_array_equal(gx, r)
  # The codebook loss moves only the codes, the commitment loss only x.
  gx_cb = jax.grad(lambda x: fk.vector_quantize(x, c).codebook_loss)(x)
  gc_commit = jax.grad(lambda c: fk.vector_quantize(x, c).commitment_loss)(c)
  assert np.all(gx_cb == 0) and np.all(gc_commit == 0)
  gc = jax.grad(lambda c: fk.vector_quantize(x, c).codebook_loss)(c)
  want = _np_grad_c(x, c, labels, np.full(x.shape[0], 1.0 / x.shape[0]), "sqeuclidean")
  np.testing.assert_allclose(gc, want, atol=1e-6)


def test_vector_quantize_mask_weighs_losses():
  x, c = _data(6)
  mask = jnp.arange(x.shape[0]) < 100
  vq = fk.vector_quantize(x, c, mask=mask)
  full = fk.vector_quantize(x[:100], c)
  np.testing.assert_allclose(float(vq.codebook_loss), float(full.codebook_loss), rtol=1e-6)


def _np_ema(c0, batches, weights, decay, eps):
  """NumPy reference of the bias-corrected, Laplace-smoothed EMA codebook."""
  c = np.asarray(c0, np.float64)
  k = c.shape[0]
  s = np.zeros_like(c)
  n_ema = np.zeros(k)
  for t, (x, w) in enumerate(zip(batches, weights), start=1):
    x = np.asarray(x, np.float64)
    d = ((x[:, None] - c[None]) ** 2).sum(-1)
    lab = d.argmin(1)
    bs = np.zeros_like(c)
    bn = np.zeros(k)
    np.add.at(bs, lab, w[:, None] * x)
    np.add.at(bn, lab, w)
    s = decay * s + (1 - decay) * bs
    n_ema = decay * n_ema + (1 - decay) * bn
    bias = 1 - decay ** t
    tot = n_ema.sum()
    smoothed = (n_ema + eps * bias) / (tot + k * eps * bias) * tot
    c = np.where((n_ema > 0)[:, None], s / np.where(smoothed > 0, smoothed, 1)[:, None], c)
  return c, n_ema


def test_ema_matches_numpy_over_several_steps():
  rng = np.random.default_rng(7)
  centers = rng.normal(size=(6, 3)) * 5
  batches = [(centers[rng.integers(0, 6, 200)] + rng.normal(size=(200, 3))).astype(np.float32)
             for _ in range(5)]
  weights = [rng.uniform(0.5, 2.0, 200).astype(np.float32) for _ in range(5)]
  weights[2][:50] = 0.0  # masked rows
  c0 = batches[0][:6]
  t = fk.ema_codebook(decay=0.8, eps=1e-3)
  state = t.init(jnp.asarray(c0))
  step = jax.jit(t.update)
  for x, w in zip(batches, weights):
    state, _, _ = step(state, jnp.asarray(x), weights=jnp.asarray(w))
  want_c, want_n = _np_ema(c0, batches, weights, 0.8, 1e-3)
  np.testing.assert_allclose(state.codebook, want_c, rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(state.counts, want_n, rtol=1e-5)
  assert int(state.step) == 5


def test_ema_reseeds_dead_codes_from_distinct_batch_points():
  x, _ = _data(8, n=200, d=3)
  c = jnp.concatenate([x[:3], jnp.full((3, 3), 1e3)])  # codes 3..5 win no point
  t = fk.ema_codebook(decay=0.9, dead_threshold=1.0)
  state, _, _ = t.update(t.init(c), x, key=jax.random.key(0))
  new = np.asarray(state.codebook)
  xs = np.asarray(x)
  for j in (3, 4, 5):
    assert any(np.array_equal(new[j], row) for row in xs), j
  assert len({tuple(r) for r in new[3:]}) == 3
  with pytest.raises(TypeError, match="key"):
    t.update(t.init(c), x)


def test_ema_under_vmap_and_shard_map():
  x, c = _data(9, n=256, d=4, k=5)
  t = fk.ema_codebook(decay=0.5)
  one, _, _ = t.update(t.init(c), x)
  xs = jnp.stack([x, x])
  both, _, _ = jax.vmap(lambda s, x: t.update(s, x))(jax.vmap(t.init)(jnp.stack([c, c])), xs)
  np.testing.assert_allclose(both.codebook[1], one.codebook, rtol=1e-6)

  mesh = Mesh(np.asarray(jax.devices()[:4]), ("data",))
  ts = fk.ema_codebook(decay=0.5, axis_name="data")
  f = jax.jit(jax.shard_map(lambda s, x: ts.update(s, x)[0], mesh=mesh,
                            in_specs=(P(), P("data")), out_specs=P(), check_vma=False))
  sharded = f(ts.init(c), x)
  np.testing.assert_allclose(sharded.codebook, one.codebook, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(sharded.counts, one.counts, rtol=1e-6)


def test_minibatch_matches_sklearn_minibatch_kmeans():
  sklearn_cluster = pytest.importorskip("sklearn.cluster")
  rng = np.random.default_rng(10)
  centers = rng.normal(size=(5, 4)) * 4
  batches = [(centers[rng.integers(0, 5, 128)] + rng.normal(size=(128, 4))) for _ in range(6)]
  c0 = batches[0][:5].copy()
  sk = sklearn_cluster.MiniBatchKMeans(n_clusters=5, init=c0, n_init=1,
                                       reassignment_ratio=0.0, batch_size=128)
  t = fk.minibatch_codebook()
  state = t.init(jnp.asarray(c0, jnp.float32))
  for b in batches:
    sk.partial_fit(b)
    state, _, _ = t.update(state, jnp.asarray(b, jnp.float32))
  np.testing.assert_allclose(state.codebook, sk.cluster_centers_, rtol=1e-4, atol=1e-4)


def test_bad_arguments():
  with pytest.raises(ValueError, match="decay"):
    fk.ema_codebook(decay=1.0)
  with pytest.raises(ValueError, match="eps"):
    fk.ema_codebook(eps=0.0)
  x, c = _data(11)
  with pytest.raises(ValueError, match="mask"):
    fk.vector_quantize(x, c, mask=jnp.ones((3,), bool))
  with pytest.raises(ValueError, match="codebook"):
    fk.vector_quantize(x, c[:, :2])
  assert isinstance(training.ema_codebook(), training.CodebookTransform)


# Cheap repeated calls: the loop's last assignment reused at a fixed point and
# the finiteness check folded into the compiled call must change no result.

_FIELDS = ("centroids", "labels", "inertia", "n_iter", "converged", "inertia_history")


def _clusters(seed=12, n=400, d=4, k=5):
  rng = np.random.default_rng(seed)
  centers = rng.normal(size=(k, d)) * 4
  return jnp.asarray(centers[rng.integers(0, k, n)] + rng.normal(size=(n, d)), jnp.float32)


@pytest.mark.parametrize("impl", IMPLS)
def test_final_assignment_reuse_is_bit_identical(impl):
  from flashkmeans_jax.core import validation
  from flashkmeans_jax.lloyd import loop
  x = _clusters()
  w = jnp.asarray(np.random.default_rng(13).uniform(0.5, 2.0, x.shape[0]), jnp.float32)
  configs = [(dict(tol=0.0), True), (dict(max_iter=2), False),
             (dict(tol=0.0, metric="cosine", weights=w), True)]
  # Interpret mode is slow: its kernels once, at a fixed point.
  for kwargs, fixed_point in configs[:1] if impl == "pallas_interpret" else configs:
    weights = kwargs.get("weights")
    opts, init = validation.lloyd_options(x, 5, init=x[:5], impl=impl, **kwargs)

    @jax.jit
    def both(x, weights, init):
      tol_abs = loop.data_tolerance(x, opts.tol, weights)
      wn, _ = loop.normalise_weights(weights)
      kept = loop.iterate(x, init, wn, tol_abs, opts, keep_last=True)
      plain = loop.finish(x, loop.iterate(x, init, wn, tol_abs, opts), wn, opts)
      return kept[4][2], loop.finish(x, kept, wn, opts), plain

    fixed, reused, plain = both(x, weights, init)
    assert bool(fixed) == fixed_point, kwargs  # the reuse path is taken (or not)
    public = fk.kmeans(jax.random.key(0), x, 5, init=x[:5], impl=impl, **kwargs)
    for f in _FIELDS:
      np.testing.assert_array_equal(getattr(reused, f), getattr(plain, f), err_msg=f)
      if weights is None:  # the public call also undoes the weight scale
        np.testing.assert_array_equal(getattr(public, f), getattr(plain, f), err_msg=f)


def test_folded_finite_check_raises_the_eager_errors():
  from flashkmeans_jax.core import values
  x = np.asarray(_clusters(n=64, d=3))
  cases_ = {"nan": x.copy(), "inf": x.copy(), "norm": x.copy(), "f64": x.astype(np.float64)}
  cases_["nan"][5, 1] = np.nan
  cases_["inf"][9, 0] = -np.inf
  cases_["norm"][3] = 1.2e19   # finite, squared norm past float32max / 4
  cases_["f64"][7, 2] = 1e39   # finite in float64, Inf once cast to float32
  runs = {
      "kmeans": lambda a: fk.kmeans(jax.random.key(0), a, 3, init=x[:3], max_iter=2,
                                    impl="xla"),
      "batched": lambda a: fk.batched_kmeans(jax.random.key(0), a[None], 3, init=x[:3],
                                             max_iter=2, impl="xla"),
  }
  for name, bad in cases_.items():
    for arr in ([bad, jnp.asarray(bad)] if name != "f64" else [bad]):
      with pytest.raises(ValueError) as want:
        values.check_finite(arr)
      for run_name, run in runs.items():
        with pytest.raises(ValueError) as got:
          run(arr)
        assert str(got.value) == str(want.value), (name, run_name)
  # A bad constant closed over by a traced function is still refused.
  nan_const = jnp.asarray(cases_["nan"])
  with pytest.raises(ValueError, match="NaN or Inf"):
    jax.jit(lambda: runs["kmeans"](nan_const).inertia)()
  # Clean data and check_finite=False: no error, same result with and without the check.
  a = fk.kmeans(jax.random.key(0), jnp.asarray(x), 3, max_iter=3, impl="xla")
  b = fk.kmeans(jax.random.key(0), jnp.asarray(x), 3, max_iter=3, impl="xla",
                check_finite=False)
  for f in _FIELDS:
    np.testing.assert_array_equal(getattr(a, f), getattr(b, f))
  fk.kmeans(jax.random.key(0), jnp.asarray(cases_["nan"]), 3, max_iter=2, impl="xla",
            check_finite=False)
