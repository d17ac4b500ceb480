"""The small-D op through the real Triton lowering (run on the GPU machine:
``python -m pytest -q tests/gpu/test_small_d_gpu.py``). Same checks as the
interpret-mode tests (tests/test_assign_small_d.py), at sizes that need many
programs, several centroid tiles, a large batch grid and the D=1 search on
the device."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flashkmeans_jax.ops.assign_small_d import api, config
from tests import cases
from tests.test_assign_small_d import (check_nonfinite_rows_and_centroids, d1_problem,
                                      exact_d1, integer_problem)

pytestmark = pytest.mark.gpu
KERNEL_D1 = config.SmallDConfig(block_n=128, block_k=32, d1_search=False)


def run(x, c, metric, cfg=None, impl="pallas"):
  return api.assign_small_d(jnp.asarray(x), jnp.asarray(c), metric=metric, impl=impl,
                            config=cfg)


@pytest.mark.parametrize("d,dtype", [(1, "float32"), (2, "bfloat16"), (3, "float16"),
                                     (4, "float32"), (8, "bfloat16"), (15, "float32"),
                                     (15, "float16")])
@pytest.mark.parametrize("metric", cases.METRICS)
def test_kernel_meets_the_float32_bound(d, dtype, metric):
  # True float32 FMAs (16-bit products exact): the checker's "highest" bound.
  rng = np.random.default_rng(d)
  x = jnp.asarray(rng.normal(size=(3, 20001, d)), cases.DTYPES[dtype])
  c = jnp.asarray(rng.normal(size=(3, 1000, d)), jnp.float32)
  labels, dist = run(x, c, metric, KERNEL_D1 if d == 1 else None)
  cases.check_assign_result(x, c, labels, dist, metric, precision="highest")


@pytest.mark.parametrize("cfg", [None, config.SmallDConfig(block_n=64, block_k=16),
                                 config.SmallDConfig(block_n=32, block_k=64,
                                                     deferred_argmin=False, num_warps=2)])
@pytest.mark.parametrize("d", [2, 6, 15])
def test_exact_ties_go_to_the_lowest_index(cfg, d):
  x, c = integer_problem(d, np.random.default_rng(d))
  for metric in ("sqeuclidean", "dot"):
    labels, dist = run(jnp.asarray(x, jnp.float32), jnp.asarray(c, jnp.float32), metric, cfg)
    if metric == "sqeuclidean":
      want_d = ((x[:, :, None, :] - c[:, None, :, :]) ** 2).sum(-1)
    else:
      want_d = -np.einsum("bnd,bkd->bnk", x, c)
    np.testing.assert_array_equal(np.asarray(labels), want_d.argmin(-1), err_msg=metric)
    np.testing.assert_array_equal(np.asarray(dist), want_d.min(-1), err_msg=metric)


@pytest.mark.parametrize("dtype", list(cases.DTYPES))
@pytest.mark.parametrize("metric", cases.METRICS)
def test_d1_search_is_exact_on_the_device(dtype, metric):
  x, c = d1_problem(cases.DTYPES[dtype])
  d = exact_d1(x[..., 0], c[..., 0], metric)
  labels, _ = run(x, c, metric)
  np.testing.assert_array_equal(np.asarray(labels), d.argmin(-1))
  # A quantisation-like batch: 128 problems of 2048 points, K = 300.
  rng = np.random.default_rng(1)
  xb = jnp.asarray(rng.normal(size=(128, 2048, 1)), cases.DTYPES[dtype])
  cb = jnp.asarray(rng.normal(size=(128, 300, 1)), cases.DTYPES[dtype])
  labels, _ = run(xb, cb, metric)
  np.testing.assert_array_equal(np.asarray(labels),
                                exact_d1(xb[..., 0], cb[..., 0], metric).argmin(-1))


def test_batch_grid_beyond_65535_and_vmap():
  # 70,000 problems: the batch axis of the grid exceeds CUDA's y limit and
  # is folded by the lowering; vmap adds a third axis.
  rng = np.random.default_rng(2)
  x = jnp.asarray(rng.normal(size=(70000, 16, 2)), jnp.float32)
  c = jnp.asarray(rng.normal(size=(70000, 8, 2)), jnp.float32)
  labels, dist = run(x, c, "sqeuclidean")
  cases.check_assign_result(x, c, labels, dist, "sqeuclidean", precision="highest")
  one = functools.partial(api.assign_small_d, metric="sqeuclidean", impl="pallas")
  xs, cs = x[:64].reshape(4, 16, 16, 2), c[:64].reshape(4, 16, 8, 2)
  mapped = jax.jit(jax.vmap(one))(xs, cs)
  np.testing.assert_array_equal(np.asarray(mapped[0]).reshape(64, 16), np.asarray(labels[:64]))
  np.testing.assert_array_equal(np.asarray(mapped[1]).reshape(64, 16), np.asarray(dist[:64]))


def test_one_large_problem():
  rng = np.random.default_rng(3)
  x = jnp.asarray(rng.normal(size=(1 << 20, 4)), jnp.float32)
  c = jnp.asarray(rng.normal(size=(256, 4)), jnp.float32)
  labels, dist = run(x, c, "sqeuclidean")
  cases.check_assign_result(x, c, labels, dist, "sqeuclidean", precision="highest")


@pytest.mark.parametrize("d", [1, 3])
@pytest.mark.parametrize("metric", cases.METRICS)
def test_nonfinite_rows_and_centroids(d, metric):
  check_nonfinite_rows_and_centroids(lambda x, c: run(x, c, metric), 300, d, metric,
                                     precision="highest")


@pytest.mark.parametrize("d", [1, 4])
def test_batched_kmeans_dense_update_matches_xla(d):
  # Tiny D runs the dense cluster sums (no sort) inside the batched loop.
  cases.check_batched_small_d_matches_xla("pallas", b=32, n=4096, d=d, k=16, iters=10)
