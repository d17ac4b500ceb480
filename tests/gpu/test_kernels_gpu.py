"""The kernels through the real Triton lowering (run on the GPU machine:
``python -m pytest -q tests/gpu``). Same checks as the interpret-mode tests."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import flashkmeans_jax as fk
from flashkmeans_jax.ops.assign import config
from flashkmeans_jax.ops.assign import pallas_triton as flash_assign
from flashkmeans_jax.ops.cluster_sums import config as update_config
from tests import cases, helpers

pytestmark = pytest.mark.gpu
IMPL = "pallas"


@pytest.mark.parametrize("n,k,d", cases.ASSIGN_SHAPES + [(70_001, 1000, 128), (4099, 300, 512)])
@pytest.mark.parametrize("metric", cases.METRICS)
@pytest.mark.parametrize("dtype", list(cases.DTYPES))
def test_assign(n, k, d, metric, dtype):
  cases.check_assign(IMPL, n, k, d, cases.DTYPES[dtype], metric, precision="highest")


@pytest.mark.parametrize("metric", cases.METRICS)
def test_assign_float32_default_precision(metric):
  # TF32 by default on the GPU: the check's product error is 2^-9 there.
  cases.check_assign(IMPL, 5000, 257, 64, jnp.float32, metric, precision=None)


def test_exact_mode_labels_equal_float64():
  # "highest" runs the 3-pass TF32 algorithm in the kernel: float32-accurate,
  # so labels are float64's except at float32 near-ties (counted, none beyond).
  rng = np.random.default_rng(11)
  x = jnp.asarray(rng.normal(size=(20000, 128)), jnp.float32)
  c = jnp.asarray(rng.normal(size=(1024, 128)), jnp.float32)
  lab, dist = fk.assign(x, c, impl=IMPL, precision="highest")
  cases.check_assign_result(x, c, lab, dist, "sqeuclidean", precision="highest", impl=IMPL)


@pytest.mark.parametrize("n,k,d", [(1000, 100, 96), (4099, 300, 512), (70_001, 1000, 128)])
@pytest.mark.parametrize("magnitude", [1e-8, 1e8])
@pytest.mark.parametrize("metric", cases.METRICS)
@pytest.mark.parametrize("precision", cases.HALF_PRECISIONS)
def test_assign_half_operands(n, k, d, magnitude, metric, precision):
  # The kernel and the XLA path on the same 16-bit operands, each against
  # float64 on those operands.
  for impl in (IMPL, "xla"):
    cases.check_assign_half(impl, precision, n, k, d, metric, magnitude)


@pytest.mark.parametrize("n,k,d", [(1000, 100, 96), (4099, 300, 512), (70_001, 1000, 128)])
def test_half_prepass_matches_on_chip_scaling(n, k, d):
  import dataclasses
  x, c = cases.half_inputs(n, k, d, 1e8)
  cfg = dataclasses.replace(config.assign_config(n, k, d, jnp.float32,
                                                 operand_dtype=jnp.float16), half_prepass=True)
  for metric in cases.METRICS:
    for use in (cfg, None):  # the XLA pre-pass, and the scaling on chip
      l, dist = flash_assign.flash_assign(x, c, metric=metric, precision="F16_F16_F32",
                                          config=use)
      cases.check_assign_result(x, c, l, dist, metric, precision="F16_F16_F32", impl=IMPL)


def test_half_operands_as_accurate_as_tf32():
  # Random data, K=1024: F16_F16_F32 disagrees with float64 no more often
  # than the default TF32 does (both keep 10 mantissa bits). A comparison of
  # two precisions, not a check of either (each meets its own bound below):
  # the factor 2 and floor of 10 leave room for which near-ties each rounds
  # the other way.
  rng = np.random.default_rng(12)
  x = rng.normal(size=(50000, 128)).astype(np.float32)
  c = rng.normal(size=(1024, 128)).astype(np.float32)
  ref = helpers.np_distances(x, c, "sqeuclidean").argmin(1)
  miss = {}
  for precision in (None, "F16_F16_F32"):
    lab, dist = fk.assign(jnp.asarray(x), jnp.asarray(c), impl=IMPL, precision=precision)
    cases.check_assign_result(x, c, lab, dist, "sqeuclidean", precision=precision, impl=IMPL)
    miss[precision] = int((np.asarray(lab) != ref).sum())
  assert miss["F16_F16_F32"] <= max(2 * miss[None], 10), miss


def test_assign_ties_lowest_index():
  cases.check_assign_ties(IMPL)


@pytest.mark.parametrize("cfg", [
    config.AssignConfig(block_n=64, block_k=32, block_d=32, num_warps=4, num_stages=2),
    config.AssignConfig(block_n=128, block_k=128, block_d=128, num_warps=8, num_stages=3),
])
def test_assign_configs(cfg):
  rng = np.random.default_rng(2)
  x = jnp.asarray(rng.normal(size=(3001, 200)), jnp.float16)
  c = jnp.asarray(rng.normal(size=(999, 200)), jnp.float16)
  l, d = flash_assign.flash_assign(x, c, config=cfg)
  cases.check_assign_result(x, c, l, d, "sqeuclidean", impl=IMPL)


@pytest.mark.parametrize("cfg", [
    config.AssignConfig(block_n=64, block_k=16, block_d=64, num_warps=4, num_stages=2),
    config.AssignConfig(block_n=64, block_k=16, block_d=64, num_warps=4, num_stages=2,
                        deferred_argmin=True),
    config.AssignConfig(block_n=128, block_k=32, block_d=32, num_warps=8, num_stages=3,
                        deferred_argmin=True),
])
def test_assign_config_ties(cfg):
  cases.check_assign_config(cfg, interpret=False)


@pytest.mark.parametrize("cfg", [
    update_config.UpdateConfig(rows_per_item=256, block_rows=32, block_d=64),
    update_config.UpdateConfig(rows_per_item=256, block_rows=256, block_d=64, fold_rows=True),
    update_config.UpdateConfig(rows_per_item=128, block_rows=64, block_d=64, num_warps=4,
                        fold_rows=True),
])
def test_update_configs(cfg):
  cases.check_update_config(cfg, interpret=False)


@pytest.mark.parametrize("cfg,d,weighted", [
    (update_config.UpdateConfig(dense=True, num_warps=4), 1, True),
    (update_config.UpdateConfig(dense=True, dense_rows=512, dense_sub_rows=128,
                                dense_block_k=16, num_warps=4), 3, False),
    (update_config.UpdateConfig(dense=True, dense_rows=2048, dense_sub_rows=256,
                                dense_block_k=32, num_warps=8), 8, True),
])
def test_dense_update_configs(cfg, d, weighted):
  cases.check_update_config(cfg, interpret=False, d=d, weighted=weighted)


def test_dense_update_batched_and_bit_identical():
  # The quantisation shape: many members of tiny D under vmap (a batch grid
  # axis), against float64 per member, same bits on every run.
  from flashkmeans_jax.ops.cluster_sums import api as cluster_sums_op
  rng = np.random.default_rng(8)
  b, n, k, d = 64, 8192, 16, 2
  x = jnp.asarray(rng.normal(size=(b, n, d)), jnp.float32)
  labels = jnp.asarray(np.minimum(rng.geometric(0.2, (b, n)), k) - 1, jnp.int32)
  w = jnp.asarray(rng.random((b, n)), jnp.float32)
  run = jax.jit(jax.vmap(lambda xb, lb, wb: cluster_sums_op.cluster_sums(xb, lb, k, wb, "pallas")))
  a = run(x, labels, w)
  for i in (0, b - 1):
    cases.check_cluster_sums_result(x[i], labels[i], k, w[i], a[0][i], a[1][i])
  for _ in range(3):
    again = run(x, labels, w)
    np.testing.assert_array_equal(np.asarray(a[0]), np.asarray(again[0]))
    np.testing.assert_array_equal(np.asarray(a[1]), np.asarray(again[1]))


@pytest.mark.parametrize("k", [100, 1024, 70_000])
def test_sort_by_label_stable_on_gpu(k):
  # 8-bit, 16-bit and packed 32-bit keys through XLA's GPU sort, alone and
  # batched (one flat sort of member|label|index keys).
  rng = np.random.default_rng(k)
  n = 1 << 14 if k > 1 << 16 else 1 << 20
  labels = rng.integers(0, k, (3, n)).astype(np.int32)
  labels[:, : n // 4] = k // 2
  helpers.check_stable_label_sort(labels[0], k)
  helpers.check_stable_label_sort(labels, k)


def test_sorted_update_bit_identical_across_runs():
  # The reduce kernel replaced XLA's scatter-add (atomics): same bits every run.
  from flashkmeans_jax.ops.cluster_sums import pallas_triton as sorted_update
  rng = np.random.default_rng(7)
  x = jnp.asarray(rng.normal(size=(300_000, 128)), jnp.float32)
  labels = jnp.asarray(np.minimum(rng.geometric(0.01, 300_000), 999), jnp.int32)
  a = sorted_update.sorted_cluster_sums(x, labels, 1000)
  cases.check_cluster_sums_result(x, labels, 1000, None, *a)
  for _ in range(3):
    b = sorted_update.sorted_cluster_sums(x, labels, 1000)
    np.testing.assert_array_equal(np.asarray(a[0]), np.asarray(b[0]))
    np.testing.assert_array_equal(np.asarray(a[1]), np.asarray(b[1]))


@pytest.mark.parametrize("n,k,d", [(1000, 7, 17), (99_999, 1000, 128), (300, 1, 200),
                                   (20_000, 64, 512)])
@pytest.mark.parametrize("dtype", list(cases.DTYPES))
@pytest.mark.parametrize("weighted", [False, True])
def test_update(n, k, d, dtype, weighted):
  cases.check_update(IMPL, n, k, d, cases.DTYPES[dtype], weighted)


def test_update_skewed_clusters_and_empty():
  cases.check_update_skewed(IMPL)


def test_vmap_assign():
  cases.check_vmap_assign(IMPL)


def test_vmap_update():
  cases.check_vmap_update(IMPL)


@pytest.mark.parametrize("metric", cases.METRICS)
def test_grad(metric):
  helpers.check_grad(IMPL, metric)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_kmeans_matches_xla(dtype):
  cases.check_kmeans_matches_xla(IMPL, dtype)


def test_kmeans_default_impl_is_pallas():
  from flashkmeans_jax.core import dispatch
  assert dispatch.resolve_impl(None) == "pallas"


def test_batched_kmeans_one_launch_grid():
  # vmap of the kernel is a single pallas_call with a batch grid axis.
  x = jnp.zeros((4, 256, 16), jnp.float16)
  c = jnp.zeros((4, 8, 16), jnp.float16)
  hlo = jax.jit(jax.vmap(lambda x, c: fk.assign(x, c, impl=IMPL))).lower(x, c).as_text()
  assert hlo.count("__gpu$xla.gpu.triton") == 1, hlo.count("__gpu$xla.gpu.triton")


def test_batch_larger_than_grid_y_limit():
  # 70,000 members: more than the 65,535 a CUDA grid's y/z axis allows; the
  # batched kernels must still cover every member.
  rng = np.random.default_rng(9)
  x = jnp.asarray(rng.normal(size=(70_000, 16, 8)), jnp.float16)
  c = jnp.asarray(rng.normal(size=(70_000, 4, 8)), jnp.float16)
  l, d = jax.jit(jax.vmap(lambda x, c: fk.assign(x, c, impl=IMPL)))(x, c)
  cases.check_assign_result(x, c, l, d, "sqeuclidean", impl=IMPL)  # every member
  lab = jnp.asarray(rng.integers(0, 4, (70_000, 16)), jnp.int32)
  s, n = jax.jit(jax.vmap(lambda x, l: fk.cluster_sums(x, l, 4, impl=IMPL)))(x, lab)
  cases.check_cluster_sums_result(x, lab, 4, None, s, n)


def test_batched_kmeans_equals_loop_on_gpu():
  rng = np.random.default_rng(10)
  x = jnp.asarray(rng.normal(size=(4, 5000, 32)), jnp.bfloat16)
  res = fk.batched_kmeans(jax.random.key(3), x, 64, init="random", max_iter=20,
                          impl=IMPL)
  keys = jax.random.split(jax.random.key(3), 4)
  for b in range(4):
    r = fk.kmeans(keys[b], x[b], 64, init="random", max_iter=20, impl=IMPL)
    np.testing.assert_array_equal(np.asarray(res.labels[b]), np.asarray(r.labels))
    assert int(res.n_iter[b]) == int(r.n_iter)
    np.testing.assert_array_equal(np.asarray(res.centroids[b].astype(jnp.float32)),
                                  np.asarray(r.centroids.astype(jnp.float32)))
    cases.check_kmeans_result(x[b], r, impl=IMPL)
