"""The inverse map: ``return_order=True`` and ``fk.cluster_order`` against NumPy."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import flashkmeans_jax as fk
from flashkmeans_jax.api.order import cluster_order
from tests import helpers

km = functools.partial(fk.kmeans, impl="xla", precision="highest", max_iter=20)


def check_order(labels, k, order, offsets, sizes):
  """order is a permutation; segment j holds exactly cluster j's points in
  ascending order; sizes are the label counts; offsets their running sum."""
  labels, order = np.asarray(labels), np.asarray(order)
  offsets, sizes = np.asarray(offsets), np.asarray(sizes)
  n = labels.shape[0]
  assert order.dtype == offsets.dtype == sizes.dtype == np.int32
  assert offsets.shape == (k + 1,) and sizes.shape == (k,)
  np.testing.assert_array_equal(np.sort(order), np.arange(n))
  np.testing.assert_array_equal(sizes, np.bincount(labels, minlength=k))
  np.testing.assert_array_equal(offsets, np.r_[0, np.cumsum(sizes)])
  # A stable argsort is exactly "grouped by cluster, ascending inside".
  np.testing.assert_array_equal(order, np.argsort(labels, kind="stable"))
  for j in np.unique(labels)[:16]:
    np.testing.assert_array_equal(order[offsets[j]:offsets[j + 1]], np.flatnonzero(labels == j))


@pytest.fixture(scope="module")
def blobs():
  x, _, _ = helpers.make_blobs(np.random.default_rng(0), 300, 3, 5)
  return jnp.asarray(x)


def test_kmeans_return_order(blobs):
  r = km(jax.random.key(0), blobs, 6, return_order=True)
  check_order(r.labels, 6, r.order, r.offsets, r.sizes)
  # The labels are the nearest centroids (well-separated blobs: no near-ties).
  x, c = np.asarray(blobs, np.float64), np.asarray(r.centroids, np.float64)
  np.testing.assert_array_equal(((x[:, None] - c[None]) ** 2).sum(-1).argmin(1),
                                np.asarray(r.labels))
  # Still a pytree through jit; the optional fields are None by default.
  assert len(jax.tree.leaves(jax.jit(lambda t: t)(r))) == 9
  empty = fk.KMeansResult(*jax.tree.leaves(r)[:6])
  assert empty.order is None and len(jax.tree.leaves(empty)) == 6


def test_cluster_order_helper_with_empty_clusters():
  rng = np.random.default_rng(3)
  labels = rng.choice(np.array([0, 2, 2, 5, 7]), size=257).astype(np.int32)  # 1,3,4,6 empty
  co = cluster_order(jnp.asarray(labels), 8)
  check_order(labels, 8, *co)
  # Batched labels [B, N]; k > 2^16 takes the packed 32-bit sort.
  lb = rng.integers(0, 70000, size=(2, 300)).astype(np.int32)
  cb = cluster_order(jnp.asarray(lb), 70000)
  for b in range(2):
    check_order(lb[b], 70000, cb.order[b], cb.offsets[b], cb.sizes[b])


def test_cluster_order_bad_arguments():
  with pytest.raises(ValueError, match=r"labels must lie in \[0, k=3\)"):
    cluster_order(jnp.array([0, 3]), 3)
  with pytest.raises(TypeError, match="labels must be an integer"):
    cluster_order(jnp.array([0.0, 1.0]), 3)
  with pytest.raises(TypeError, match="k must be a Python int"):
    cluster_order(jnp.array([0, 1]), 2.0)
  with pytest.raises(TypeError, match="return_order must be a bool"):
    km(jax.random.key(0), jnp.ones((4, 2)), 2, return_order=1)
