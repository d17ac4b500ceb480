"""k-means||, the training sample and the inverse map through the real Triton
kernels. Run on the GPU machine:
``python -m pytest -q tests/gpu/test_seeding_order_gpu.py``."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import flashkmeans_jax as fk
from tests import helpers
from tests.test_order import check_order

pytestmark = pytest.mark.gpu


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_kmeans_parallel_and_order_pallas(dtype):
  x, centers, _ = helpers.make_blobs(np.random.default_rng(0), 1 << 16, 32, 64, spread=30.0)
  xj = jnp.asarray(x, dtype)
  kw = dict(impl="pallas", max_iter=20, tol=0.0, return_order=True)
  par = fk.kmeans(jax.random.key(0), xj, 64, init="k-means||", **kw)
  pp = fk.kmeans(jax.random.key(0), xj, 64, init="k-means++", **kw)
  sub = fk.kmeans(jax.random.key(0), xj, 64, init="k-means||", max_points_per_centroid=64,
                  **kw)
  for r in (par, pp, sub):
    check_order(r.labels, 64, r.order, r.offsets, r.sizes)
    nearest = ((np.asarray(r.centroids, np.float64)[:, None] - centers[None]) ** 2).sum(-1)
    assert sorted(nearest.argmin(1).tolist()) == list(range(64))
  assert float(par.inertia) <= float(pp.inertia) * (1 + 1e-3)


def test_batched_order_pallas():
  rng = np.random.default_rng(1)
  xb = jnp.asarray(np.stack([helpers.make_blobs(rng, 4096, 16, 8)[0] for _ in range(4)]))
  rb = fk.batched_kmeans(jax.random.key(0), xb, 8, impl="pallas", return_order=True,
                         max_iter=30)
  for b in range(4):
    check_order(rb.labels[b], 8, rb.order[b], rb.offsets[b], rb.sizes[b])
    h = np.asarray(rb.inertia_history[b])
    n = int(rb.n_iter[b])
    assert np.isfinite(h[:n]).all() and np.isnan(h[n:]).all()
