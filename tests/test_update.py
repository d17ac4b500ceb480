"""``update`` / ``cluster_sums`` on the XLA path against float64 NumPy, and
the empty-cluster policies on cases whose answer is known."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import flashkmeans_jax as fk
from flashkmeans_jax.ops.cluster_sums import xla as cluster_sums_xla
from tests import cases

IMPL = "xla"


@pytest.mark.parametrize("n,k,d", [(1000, 7, 17), (999, 100, 96), (300, 1, 200), (50, 64, 3),
                                   (1537, 513, 1)])
@pytest.mark.parametrize("dtype", list(cases.DTYPES))
@pytest.mark.parametrize("weighted", [False, True])
def test_update_matches_float64(n, k, d, dtype, weighted):
  cases.check_update(IMPL, n, k, d, cases.DTYPES[dtype], weighted)


def test_update_skewed_clusters_and_empty():
  cases.check_update_skewed(IMPL)


@pytest.mark.parametrize("n,tile_n", [(1000, 64), (1000, 999), (1024, 64), (1000, 1),
                                      (1000, 1000)])
@pytest.mark.parametrize("weighted", [False, True])
def test_cluster_sums_tiled_counts_every_row_once(n, tile_n, weighted):
  # The clamped last chunk overlaps its predecessor (1000 = 15 * 64 + 40:
  # the 16th chunk starts at 936; with tile_n=999 the second chunk revisits
  # 998 rows): those rows must not be counted twice.
  rng = np.random.default_rng(21)
  k, d = 9, 5
  x = jnp.asarray(rng.normal(size=(n, d)), jnp.float32)
  labels = jnp.asarray(rng.integers(0, k, n), jnp.int32)
  w = jnp.asarray(rng.random(n) + 0.5, jnp.float32) if weighted else None
  sums, counts = cluster_sums_xla.cluster_sums_xla(x, labels, k, w, tile_n=tile_n)
  cases.check_cluster_sums_result(x, labels, k, w, sums, counts)


def test_cluster_sums_tiled_16bit():
  rng = np.random.default_rng(22)
  x = jnp.asarray(rng.normal(size=(1000, 7)) * 100, jnp.bfloat16)
  labels = jnp.asarray(rng.integers(0, 4, 1000), jnp.int32)
  sums, counts = cluster_sums_xla.cluster_sums_xla(x, labels, 4, tile_n=64)
  # Sums of the bfloat16 values themselves, accumulated in float32.
  cases.check_cluster_sums_result(x, labels, 4, None, sums, counts)


# A case with a known answer for empty="farthest": cluster 0 holds points
# around the origin, one of them far out at (10, 0) (distance 100 to its
# centroid); cluster 1 sits at (100, 0) with (103, 0) at distance 9;
# centroids 2 and 3 are far from every point, so they are empty.
FX = np.array([[0, 0], [1, 0], [-1, 0], [10, 0], [100, 0], [103, 0]], np.float32)
FC = np.array([[0, 0], [100, 0], [1000, 1000], [-1000, -1000]], np.float32)


def _farthest_case(weights=None):
  x, c = jnp.asarray(FX), jnp.asarray(FC)
  labels, dist = fk.assign(x, c, impl=IMPL, precision="highest")
  np.testing.assert_array_equal(np.asarray(labels), [0, 0, 0, 0, 1, 1])
  np.testing.assert_allclose(np.asarray(dist), [0, 1, 1, 100, 0, 9])
  return fk.update(x, labels, c, empty="farthest", dist=dist, weights=weights, impl=IMPL)


def test_farthest_takes_farthest_points_in_order():
  cent, counts = _farthest_case()
  # Empty cluster 2 (the first empty one) takes the farthest point (10, 0),
  # cluster 3 the second farthest (103, 0); both leave their old clusters.
  np.testing.assert_array_equal(np.asarray(cent), [[0, 0], [100, 0], [10, 0], [103, 0]])
  np.testing.assert_array_equal(np.asarray(counts), [3, 1, 1, 1])


def test_farthest_with_weights():
  # (10, 0) has weight 0: never a candidate. (103, 0) moves with its weight.
  w = jnp.asarray([1.0, 1.0, 3.0, 0.0, 2.0, 2.5])
  cent, counts = _farthest_case(w)
  # Next candidates after (103, 0) (9): (1, 0) and (-1, 0) (distance 1 each);
  # top_k keeps the lower index first on ties: (1, 0) goes to cluster 3.
  # Cluster 0 keeps 1 * (0, 0) + 3 * (-1, 0) (weight 4), cluster 1 keeps
  # 2 * (100, 0) (weight 2).
  np.testing.assert_allclose(np.asarray(cent),
                             [[-0.75, 0], [100, 0], [103, 0], [1, 0]], atol=1e-6)
  np.testing.assert_allclose(np.asarray(counts), [4.0, 2.0, 2.5, 1.0])


def test_keep_on_the_same_case():
  x, c = jnp.asarray(FX), jnp.asarray(FC)
  labels, dist = fk.assign(x, c, impl=IMPL)
  cent, counts = fk.update(x, labels, c, empty="keep", dist=dist, impl=IMPL)
  np.testing.assert_allclose(np.asarray(cent), [[2.5, 0], [101.5, 0], FC[2], FC[3]])
  np.testing.assert_array_equal(np.asarray(counts), [4, 2, 0, 0])


def test_farthest_with_no_empty_cluster_is_plain_mean():
  rng = np.random.default_rng(23)
  x = jnp.asarray(rng.normal(size=(500, 4)), jnp.float32)
  c = x[:6]
  labels, dist = fk.assign(x, c, impl=IMPL)
  a = fk.update(x, labels, c, empty="farthest", dist=dist, impl=IMPL)
  b = fk.update(x, labels, c, empty="keep", impl=IMPL)
  assert float(b[1].min()) > 0
  for u, v in zip(a, b):
    np.testing.assert_array_equal(np.asarray(u), np.asarray(v))


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_cosine_update_gives_unit_norm_normalised_means(dtype):
  rng = np.random.default_rng(24)
  x = jnp.asarray(rng.normal(size=(800, 10)) + 0.5, cases.DTYPES[dtype])
  k = 7
  labels = jnp.asarray(rng.integers(0, k, 800), jnp.int32)
  prev = jnp.asarray(rng.normal(size=(k, 10)), jnp.float32)
  cent, counts = fk.update(x, labels, prev, metric="cosine", impl=IMPL)
  assert cent.dtype == x.dtype
  # The normalised float64 means, within the float32 bound plus one rounding
  # to the points' dtype (bfloat16: 2^-8 relative).
  cases.check_centroids_result(x, labels, prev, None, cent, counts, metric="cosine")


def test_update_with_int_k_gives_zeros_for_empty_clusters():
  rng = np.random.default_rng(25)
  x = jnp.asarray(rng.normal(size=(100, 3)), jnp.float16)
  labels = jnp.asarray(rng.choice([0, 2, 5], 100), jnp.int32)
  cent, counts = fk.update(x, labels, 7, impl=IMPL)
  assert cent.shape == (7, 3) and cent.dtype == jnp.float16
  # Clusters 1, 3, 4 and 6 are empty and get the zero vector.
  cases.check_centroids_result(x, labels, np.zeros((7, 3)), None, cent, counts)
  # Same for numpy integers.
  c2, _ = fk.update(x, labels, np.int64(7), impl=IMPL)
  np.testing.assert_array_equal(np.asarray(c2), np.asarray(cent))


def test_vmap_cluster_sums():
  cases.check_vmap_update(IMPL)


@pytest.mark.parametrize("empty", ["keep", "farthest"])
def test_vmap_update_equals_loop(empty):
  rng = np.random.default_rng(26)
  b, n, d, k = 3, 300, 4, 8
  x = jnp.asarray(rng.normal(size=(b, n, d)), jnp.float32)
  c = jnp.asarray(rng.normal(size=(b, k, d)) * 3, jnp.float32)  # some clusters empty
  w = jnp.asarray(rng.random((b, n)), jnp.float32)

  def step(x, c, w):
    labels, dist = fk.assign(x, c, impl=IMPL, precision="highest")
    return fk.update(x, labels, c, weights=w, empty=empty, dist=dist, impl=IMPL)

  cb, nb = jax.jit(jax.vmap(step))(x, c, w)
  any_empty = False
  for i in range(b):
    c1, n1 = step(x[i], c[i], w[i])
    np.testing.assert_allclose(np.asarray(cb[i]), np.asarray(c1), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(nb[i]), np.asarray(n1), rtol=1e-5, atol=1e-6)
    labels = fk.assign(x[i], c[i], impl=IMPL, precision="highest")[0]
    any_empty |= len(np.unique(np.asarray(labels))) < k
  assert any_empty  # the policy really had something to do
