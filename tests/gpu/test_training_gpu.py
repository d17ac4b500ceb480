"""Training-code paths on the real GPU: the centroid gradient through the
sort-inverse kernel (the CPU tests' float64 checker), the loop's reused final
assignment and folded finiteness check, and the EMA codebook step."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import flashkmeans_jax as fk
from tests import test_training

pytestmark = pytest.mark.gpu


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float16, jnp.bfloat16])
@pytest.mark.parametrize("metric", ["sqeuclidean", "cosine", "dot"])
@pytest.mark.parametrize("n", [16384, 262144])
def test_centroid_gradient_equals_float64(dtype, metric, n):
  # The CPU tests' checker (float64 reference, bounds from float32 rounding
  # with the GPU's accumulation roundoff) on the real sort-inverse kernel
  # (N=262144: N*D = 2^24) and on XLA's segment sums, which rows up to
  # N*D = 2^23 take (N=16384).
  from flashkmeans_jax.ops.cluster_sums import config
  assert config.backward_sums_impl(n, 64, "pallas") == ("xla" if n == 16384 else "pallas")
  rng = np.random.default_rng(0)
  d, k = 64, 1024
  x = jnp.asarray(rng.normal(size=(n, d)), dtype)
  c = jnp.asarray(rng.normal(size=(k, d)), jnp.float32)
  g = jnp.asarray(rng.uniform(-1, 1, n), jnp.float32)

  def loss(x, c):
    return jnp.sum(g * fk.assign(x, c, metric=metric, impl="pallas")[1])

  gx, gc = jax.jit(jax.grad(loss, argnums=(0, 1)))(x, c)
  labels = np.asarray(fk.assign(x, c, metric=metric, impl="pallas")[0])
  test_training.check_gradients(x, c, g, labels, gx, gc, metric)


@pytest.mark.parametrize("metric", ["sqeuclidean", "cosine"])
def test_gradient_edge_rows_and_vmap(metric):
  xs, cs, gs = zip(*[test_training.edge_case(metric, jnp.bfloat16, seed=s, n=4096, d=64,
                                             k=64) for s in (1, 2)])
  xs, cs, gs = jnp.stack(xs), jnp.stack(cs), jnp.stack(gs)

  def loss(x, c, g):
    return jnp.sum(g * fk.assign(x, c, metric=metric, impl="pallas")[1])

  gx, gc = jax.jit(jax.vmap(jax.grad(loss, argnums=(0, 1))))(xs, cs, gs)
  for b in range(2):
    labels = jax.jit(lambda x, c: fk.assign(x, c, metric=metric, impl="pallas")[0])(
        xs[b], cs[b])
    test_training.check_gradients(xs[b], cs[b], gs[b], labels, gx[b], gc[b], metric)


def test_final_assignment_reuse_and_folded_check_change_nothing():
  # The loop's last assignment reused at a fixed point, against the same run
  # that recomputes it; and a warm 2-iteration call with and without the
  # (folded) finiteness check.
  from flashkmeans_jax.core import validation
  from flashkmeans_jax.lloyd import loop
  rng = np.random.default_rng(3)
  centers = rng.normal(size=(64, 32)) * 4
  x = jnp.asarray(centers[rng.integers(0, 64, 65536)] + rng.normal(size=(65536, 32)),
                  jnp.bfloat16)
  opts, init = validation.lloyd_options(x, 64, init=x[:64], tol=0.0, max_iter=300,
                                        impl="pallas")

  @jax.jit
  def both(x, init):
    kept = loop.iterate(x, init, None, jnp.float32(0.0), opts, keep_last=True)
    plain = loop.finish(x, loop.iterate(x, init, None, jnp.float32(0.0), opts), None, opts)
    return kept[4][2], loop.finish(x, kept, None, opts), plain

  fixed, reused, plain = both(x, init)
  assert bool(fixed)
  for f in ("centroids", "labels", "inertia", "n_iter", "converged", "inertia_history"):
    np.testing.assert_array_equal(getattr(reused, f), getattr(plain, f), err_msg=f)
  xb = x.reshape(4, 16384, 32)
  runs = [fk.batched_kmeans(jax.random.key(0), xb, 64, init=xb[:, :64], max_iter=2,
                            check_finite=cf) for cf in (True, False)]
  for f in ("centroids", "labels", "inertia", "n_iter"):
    np.testing.assert_array_equal(getattr(runs[0], f), getattr(runs[1], f), err_msg=f)
  with pytest.raises(ValueError, match="NaN or Inf"):
    fk.batched_kmeans(jax.random.key(0), xb.at[1, 5, 3].set(jnp.nan), 64, init=xb[:, :64],
                      max_iter=2)


def test_gradient_is_bit_stable_across_runs():
  rng = np.random.default_rng(1)
  x = jnp.asarray(rng.normal(size=(262144, 64)), jnp.bfloat16)
  c = jnp.asarray(rng.normal(size=(1024, 64)), jnp.float32)
  f = jax.jit(jax.grad(lambda c: jnp.mean(fk.assign(x, c)[1])))
  a, b = np.asarray(f(c)), np.asarray(f(c))
  np.testing.assert_array_equal(a, b)  # no atomics in the backward pass at this size


def test_ema_step_equals_xla_path():
  rng = np.random.default_rng(2)
  centers = rng.normal(size=(512, 32)) * 4
  x = jnp.asarray(centers[rng.integers(0, 512, 100_000)] + rng.normal(size=(100_000, 32)),
                  jnp.float32)
  c = x[:512]
  outs = []
  for impl in ("pallas", "xla"):
    t = fk.ema_codebook(decay=0.9, impl=impl, precision="highest")
    state = t.init(c)
    for _ in range(3):
      state, labels, _ = jax.jit(t.update)(state, x)
    outs.append((np.asarray(state.codebook), np.asarray(labels)))
  np.testing.assert_array_equal(outs[0][1], outs[1][1])
  np.testing.assert_allclose(outs[0][0], outs[1][0], rtol=1e-5, atol=1e-5)
