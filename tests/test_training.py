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


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("metric", ["sqeuclidean", "cosine", "dot"])
def test_centroid_gradient_matches_float64(impl, metric):
  x, c = _data(0)
  # Points in the positive orthant and cluster 6 opposite them: it is the
  # nearest of no point under every metric, so its gradient must be exactly 0.
  x = jnp.abs(x)
  c = c.at[6].set(-100.0)
  g = jax.random.uniform(jax.random.key(1), (x.shape[0],), minval=-1.0, maxval=1.0)
  g = g.at[:20].set(0.0)  # masked rows: no contribution

  def loss(c):
    return jnp.sum(g * fk.assign(x, c, metric=metric, impl=impl)[1])

  labels = np.asarray(fk.assign(x, c, metric=metric, impl="xla")[0])
  assert 6 not in labels
  got = np.asarray(jax.grad(loss)(c), np.float64)
  want = _np_grad_c(x, c, labels, g, metric)
  # float32 sums of N products of O(1) terms: a few ulps of the summed magnitude.
  bound = 1e-5 * (1.0 + np.abs(want).max())
  np.testing.assert_allclose(got, want, atol=bound, rtol=0)
  assert np.all(got[6] == 0.0)


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


def test_gradient_under_vmap_matches_per_member():
  x, c = _data(3, n=48, d=4, k=4)
  xs = jnp.stack([x, x[::-1] * 2.0])
  cs = jnp.stack([c, c + 0.5])

  def loss(x, c):
    return jnp.mean(fk.assign(x, c, impl="pallas_interpret")[1])

  batched = jax.vmap(jax.grad(loss, argnums=1))(xs, cs)
  for b in range(2):
    np.testing.assert_allclose(batched[b], jax.grad(loss, argnums=1)(xs[b], cs[b]),
                               rtol=1e-6, atol=1e-6)


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
