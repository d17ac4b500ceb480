"""The small-D assignment op (D < 16): the exact D=1 search, the FMA kernel in
interpret mode and the XLA path, against float64 NumPy.

* D = 1: labels equal the exact float64 argmin (lowest index on ties), no
  near-tie allowance: duplicates, exact midpoints, zeros of both signs,
  points beyond the extremes, K = 1.
* D >= 2, small-integer data: every float32 operation is exact, so ties are
  exact and labels must equal the float64 argmin with ties to the lower
  index; distances are exact too.
* D >= 2, random data of each dtype and metric: the shared checker
  (:func:`tests.cases.check_assign_result`: float32 accumulation over D
  products, near-ties counted).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flashkmeans_jax.ops.assign_small_d import api, config, reference, sorted_search, xla
from tests import cases

IMPLS = ("xla", "pallas_interpret")
# Several point and centroid tiles, both ways of folding the tiles together.
SMALL_BLOCKS = config.SmallDConfig(block_n=16, block_k=16, deferred_argmin=False)
SMALL_DEFERRED = config.SmallDConfig(block_n=32, block_k=16)
KERNEL_D1 = config.SmallDConfig(block_n=32, block_k=16, d1_search=False)


def run(x, c, metric, impl, cfg=None):
  return api.assign_small_d(jnp.asarray(x), jnp.asarray(c), metric=metric, impl=impl,
                            config=cfg)


def exact_d1(x, c, metric):
  """float64 distances of 1-D ``x [..., N]`` to ``c [..., K]``: exact for
  inputs of a 16-bit or float32 type (differences and products are exact)."""
  x, c = np.asarray(x, np.float64)[..., :, None], np.asarray(c, np.float64)[..., None, :]
  if metric == "sqeuclidean":
    return np.abs(x - c)  # ordered as the squared distance
  if metric == "dot":
    return -x * c
  return np.where(x == 0, 1.0, 1.0 - np.sign(x) * np.sign(c))


def d1_problem(dtype):
  """``x [2, 300, 1]``, ``c [2, 13, 1]`` of ``dtype``: member 0 dyadic
  centroids with duplicates (a higher value at a lower index, too), every
  pairwise midpoint, the centroids themselves, +-0 and points beyond the
  extremes; member 1 random with two duplicated centroids, and 1, 1 + 3 eps
  with points at 1 + eps and 1 + 2 eps, whose neighbour sum rounds (the
  nearer centroid is known only from TwoSum's error term)."""
  rng = np.random.default_rng(3)
  c0 = np.array([3, 1, 1, 0, -2, 5.5, -2, 0, 7, 3, 100, -0.0, 1], np.float64)
  mids = ((c0[:, None] + c0[None, :]) / 2).ravel()
  x0 = np.concatenate([mids, [0.0, -0.0, 250.0, -250.0, 1e-3, -1e-3]])
  x0 = np.concatenate([x0, rng.normal(size=300 - x0.size) * 4])
  c1 = rng.normal(size=13)
  c1[[7, 11]] = c1[[2, 4]]
  eps = float(jnp.finfo(dtype).eps)
  c1[:2] = 1.0, 1.0 + 3 * eps
  x1 = np.concatenate([(c1[:-1] + c1[1:]) / 2, [1 + eps, 1 + 2 * eps],
                       rng.normal(size=300 - 14) * 2])
  x = jnp.asarray(np.stack([x0, x1])[..., None], dtype)
  return x, jnp.asarray(np.stack([c0, c1])[..., None], dtype)


@pytest.mark.parametrize("k", [1, 7, 8])  # padded to 2, 8 (k + 1 exactly) and 16
def test_lower_bound_counts_entries_below(k):
  rng = np.random.default_rng(k)
  s = np.sort(rng.integers(-3, 4, size=(2, k)).astype(np.float32), axis=-1)
  v = np.concatenate([s, s + 0.5, s - 0.5, np.full((2, 1), 9.0)], axis=-1)
  got = np.asarray(sorted_search.lower_bound(jnp.asarray(s), jnp.asarray(v)))
  want = np.stack([np.searchsorted(s[i], v[i], side="left") for i in range(2)])
  np.testing.assert_array_equal(got, want)


# Every metric in float32, the 16-bit types on sqeuclidean (the only metric
# whose arithmetic, a TwoSum, depends on the width).
@pytest.mark.parametrize("dtype,metric", [("float32", m) for m in cases.METRICS] +
                         [("bfloat16", "sqeuclidean"), ("float16", "sqeuclidean")])
def test_d1_search_is_exact(dtype, metric):
  x, c = d1_problem(cases.DTYPES[dtype])
  d = exact_d1(x[..., 0], c[..., 0], metric)
  want = d.argmin(-1)  # first minimum: the lowest index
  ties = (d == d.min(-1, keepdims=True)).sum(-1) > 1
  assert ties.sum() > 50  # the data does hold exact ties
  labels, dist = run(x, c, metric, "xla")  # the same search under every impl
  np.testing.assert_array_equal(np.asarray(labels), want)
  best = np.take_along_axis(d, want[..., None], -1)[..., 0]
  want_dist = best ** 2 if metric == "sqeuclidean" else best
  # Two float32 roundings at most (the difference, its square; the product).
  np.testing.assert_allclose(np.asarray(dist), want_dist, rtol=2.0 ** -22, atol=0)
  if dtype == "float32":
    ref = jax.vmap(functools.partial(reference.assign_small_d_reference, metric=metric))(x, c)
    np.testing.assert_array_equal(np.asarray(ref[0]), want)
    np.testing.assert_array_equal(np.asarray(ref[1]), np.asarray(dist))


def test_d1_k1_and_the_fma_kernel_on_d1():
  x, c = d1_problem(jnp.float32)
  labels, dist = run(x[0], c[0, :1], "sqeuclidean", "xla")
  assert not np.asarray(labels).any()
  np.testing.assert_allclose(np.asarray(dist), (np.asarray(x[0, :, 0]) - 3.0) ** 2, rtol=1e-6)
  labels, dist = run(x, c, "sqeuclidean", "pallas_interpret", KERNEL_D1)
  cases.check_assign_result(x, c, labels, dist, "sqeuclidean")


def integer_problem(d, rng):
  """``x [2, 301, d]``, ``c [2, 37, d]`` of small integers (and half-integer
  midpoints): every float32 product and sum is exact. Duplicate centroids
  (16 and 32 apart: the same column of different 16-wide tiles),
  the centroids themselves and midpoints of centroid pairs among the points."""
  c = rng.integers(-3, 4, size=(2, 37, d)).astype(np.float64)
  # Duplicates 16 and 32 apart: the same column of different 16-wide tiles.
  c[:, [19, 30, 36]] = c[:, [3, 14, 4]]
  pairs = rng.integers(0, 37, size=(2, 120, 2))
  mids = (np.take_along_axis(c, pairs[..., :1], 1) + np.take_along_axis(c, pairs[..., 1:], 1)) / 2
  x = np.concatenate([mids, c, rng.integers(-4, 5, size=(2, 301 - 157, d))], axis=1)
  return x, c


@pytest.mark.parametrize("d,impl,cfg,dtype,metric", [
    (2, "xla", None, "float32", "sqeuclidean"),
    (2, "pallas_interpret", None, "bfloat16", "dot"),
    (15, "xla", "small_tiles", "float16", "sqeuclidean"),
    (15, "pallas_interpret", SMALL_BLOCKS, "float32", "sqeuclidean"),
    (6, "pallas_interpret", SMALL_DEFERRED, "float32", "dot")])
def test_exact_ties_go_to_the_lowest_index(d, impl, cfg, dtype, metric):
  x, c = integer_problem(d, np.random.default_rng(d))
  xj, cj = jnp.asarray(x, cases.DTYPES[dtype]), jnp.asarray(c, jnp.float32)
  if cfg == "small_tiles":  # several point and centroid tiles, the last shifted back
    labels, dist = xla.assign_fma_xla(xj, cj, metric=metric, tile_n=64, tile_k=16)
  else:
    labels, dist = run(xj, cj, metric, impl, cfg)
  if metric == "sqeuclidean":
    want_d = ((x[:, :, None, :] - c[:, None, :, :]) ** 2).sum(-1)
  else:
    want_d = -np.einsum("bnd,bkd->bnk", x, c)
  want = want_d.argmin(-1)
  assert ((want_d == want_d.min(-1, keepdims=True)).sum(-1) > 1).sum() > 30
  np.testing.assert_array_equal(np.asarray(labels), want)
  np.testing.assert_array_equal(np.asarray(dist), want_d.min(-1))


# Each dtype and each metric on each path, D spread over 2..15.
RANDOM_CASES = [("xla", "float32", "cosine", 5), ("xla", "bfloat16", "sqeuclidean", 9),
                ("xla", "float16", "dot", 3), ("pallas_interpret", "float32", "dot", 7),
                ("pallas_interpret", "bfloat16", "cosine", 4),
                ("pallas_interpret", "float16", "sqeuclidean", 12)]


@pytest.mark.parametrize("impl,dtype,metric,d", RANDOM_CASES)
def test_random_data_meets_the_float32_bound(impl, dtype, metric, d):
  rng = np.random.default_rng(d)
  x = jnp.asarray(rng.normal(size=(3, 201, d)), cases.DTYPES[dtype])
  c = jnp.asarray(rng.normal(size=(3, 33, d)), jnp.float32)
  labels, dist = run(x, c, metric, impl)
  cases.check_assign_result(x, c, labels, dist, metric)
  if impl == "xla":  # the dense reference meets the same check
    ref = jax.vmap(functools.partial(reference.assign_small_d_reference, metric=metric))(x, c)
    cases.check_assign_result(x, c, ref[0], ref[1], metric)


@pytest.mark.parametrize("d,impl,metric", [(1, "xla", m) for m in cases.METRICS] + [
    (3, "pallas_interpret", "sqeuclidean"), (3, "pallas_interpret", "cosine"),
    (3, "xla", "dot")])
def test_nonfinite_rows_and_centroids(d, impl, metric):
  check_nonfinite_rows_and_centroids(lambda x, c: run(x, c, metric, impl), 40, d, metric)


def check_nonfinite_rows_and_centroids(assign_fn, n, d, metric, precision=None):
  """Member 0: NaN/Inf in two points and two centroids; member 1: no usable
  centroid. A bad point gets label 0 and NaN, a bad centroid wins nothing.
  ``assign_fn(x, c)`` runs the op on ``x [2, n, d]``, ``c [2, 6, d]``."""
  rng = np.random.default_rng(5)
  x = rng.normal(size=(2, n, d)).astype(np.float32)
  x[:, 7, 0], x[:, 9, -1] = np.nan, np.inf
  c = rng.normal(size=(2, 6, d)).astype(np.float32)
  c[0, 1, 0], c[0, 4, -1] = np.nan, -np.inf
  c[1] = np.inf
  labels, dist = (np.asarray(a) for a in assign_fn(x, c))
  good = np.isfinite(x[0]).all(1)
  assert (labels[:, ~good] == 0).all() and np.isnan(dist[:, ~good]).all()
  assert (labels[1] == 0).all() and np.isposinf(dist[1, good]).all()
  keep = np.array([0, 2, 3, 5])
  got = np.searchsorted(keep, labels[0, good])
  assert (keep[got] == labels[0, good]).all()  # only usable centroids won
  cases.check_assign_result(x[0, good], c[0, keep], got.astype(np.int32), dist[0, good],
                            metric, precision=precision)


def test_vmap_of_the_kernel_matches_its_batch_grid():
  rng = np.random.default_rng(6)
  x = jnp.asarray(rng.normal(size=(3, 50, 4)), jnp.float32)
  c = jnp.asarray(rng.normal(size=(3, 20, 4)), jnp.float32)
  one = functools.partial(api.assign_small_d, metric="sqeuclidean", impl="pallas_interpret")
  batched = one(x, c)
  mapped = jax.jit(jax.vmap(one))(x, c)  # Pallas' batching rule: one more grid axis
  for got, want in zip(mapped, batched):
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
  cases.check_assign_result(x, c, batched[0], batched[1], "sqeuclidean")
  shared = run(x, c[0], "sqeuclidean", "xla")  # [K, D] centroids shared by the batch
  cases.check_assign_result(x, jnp.broadcast_to(c[0], c.shape), shared[0], shared[1],
                            "sqeuclidean")


def test_handles_routes_small_d_only():
  assert api.handles(1) and api.handles(15) and not api.handles(16)
  assert api.handles(4, config.small_d_config(100, 8, 4))
  assert not api.handles(4, object())  # a tensor-core kernel's config keeps its kernel
