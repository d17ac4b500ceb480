"""Per-member statistics of ``batched_kmeans``: inertia, sizes, n_iter and an
inertia history that stops at each member's own convergence."""

import jax
import jax.numpy as jnp
import numpy as np

import flashkmeans_jax as fk
from tests import helpers
from tests.test_order import check_order


def test_per_member_inertia_sizes_and_history():
  rng = np.random.default_rng(5)
  xs = [helpers.make_blobs(rng, 200, 2, 3, spread=s)[0] for s in (20.0, 1.0, 5.0)]
  xb = jnp.asarray(np.stack(xs))
  w = jnp.ones((3, 200)).at[1, :30].set(0.0)  # zero-weight points keep their place
  rb = fk.batched_kmeans(jax.random.key(2), xb, 3, impl="xla", precision="highest",
                         max_iter=30, return_order=True, weights=w)
  n_iter = np.asarray(rb.n_iter)
  assert n_iter.shape == (3,) and rb.inertia.shape == (3,) and rb.sizes.shape == (3, 3)
  assert len(set(n_iter.tolist())) > 1, n_iter  # members stop at different iterations
  hist = np.asarray(rb.inertia_history)
  for b in range(3):
    lab = np.asarray(rb.labels[b])
    c = np.asarray(rb.centroids[b], np.float64)
    d2 = ((xs[b].astype(np.float64) - c[lab]) ** 2).sum(-1)
    np.testing.assert_allclose(float(rb.inertia[b]), (np.asarray(w[b]) * d2).sum(), rtol=1e-4)
    check_order(lab, 3, rb.order[b], rb.offsets[b], rb.sizes[b])
    # Finite exactly up to the member's own n_iter, NaN after it; Lloyd's
    # inertia never rises.
    assert np.isfinite(hist[b, :n_iter[b]]).all() and np.isnan(hist[b, n_iter[b]:]).all()
    h = hist[b, :n_iter[b]]
    assert (np.diff(h) <= 1e-5 * h[:-1]).all(), h
