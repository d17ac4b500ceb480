"""The Pallas kernels in interpret mode on the CPU (the GPU lowering's own rules
are checked by tests/gpu/)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import flashkmeans_jax as fk
from flashkmeans_jax.ops.assign import config
from flashkmeans_jax.ops.assign import pallas_triton as flash_assign
from flashkmeans_jax.ops.cluster_sums import config as update_config
from flashkmeans_jax.ops.cluster_sums import pallas_triton as sorted_update
from tests import cases, helpers

IMPL = "pallas_interpret"


# Every shape in float32; the 16-bit dtypes on two shapes by default (one with
# D tiled in the kernel) and on the rest with -m slow (the XLA path and the
# GPU run the whole grid).
ASSIGN_16BIT_FAST = [(1537, 7, 17), (257, 33, 200)]
ASSIGN_CASES = [
    pytest.param(shape, dtype, marks=[] if dtype == "float32" or shape in ASSIGN_16BIT_FAST
                 else [pytest.mark.slow])
    for shape in cases.ASSIGN_SHAPES for dtype in cases.DTYPES]


@pytest.mark.parametrize("shape,dtype", ASSIGN_CASES)
@pytest.mark.parametrize("metric", cases.METRICS)
def test_assign(shape, dtype, metric):
  cases.check_assign(IMPL, *shape, cases.DTYPES[dtype], metric, precision="highest")


@pytest.mark.parametrize("n,k,d", [(1000, 100, 96), (257, 33, 200)])
@pytest.mark.parametrize("magnitude", [1e-8, 1e8])
@pytest.mark.parametrize("precision", cases.HALF_PRECISIONS)
def test_assign_half_operands(n, k, d, magnitude, precision):
  # D=200 pads to 256 and runs the in-kernel loop over D on the CPU tiling.
  # (The XLA path meets the same check in test_assign.py.)
  for metric in cases.METRICS:
    cases.check_assign_half(IMPL, precision, n, k, d, metric, magnitude)


def test_assign_ties_lowest_index():
  cases.check_assign_ties(IMPL)


@pytest.mark.parametrize("cfg", [
    config.AssignConfig(block_n=16, block_k=16, block_d=16),   # many tiles, D tiled
    config.AssignConfig(block_n=32, block_k=64, block_d=32),
])
@pytest.mark.parametrize("precision,magnitude", [("highest", 1.0), ("F16_F16_F32", 1e6)])
def test_assign_small_tiles_and_d_tiling(cfg, precision, magnitude):
  # Tiny blocks force several centroid tiles, a partial last row tile and the
  # in-kernel loop over D (block_d < padded D); with F16_F16_F32 the row
  # maxima span several D tiles before the row's scale is known.
  x, c = cases.half_inputs(101, 45, 70, magnitude, seed=2)
  for metric in cases.METRICS:
    l, d = flash_assign.flash_assign(x, c, metric=metric, config=cfg, interpret=True,
                                     precision=precision)
    cases.check_assign_result(x, c, l, d, metric, precision=precision, impl=IMPL)


@pytest.mark.parametrize("cfg", [
    config.AssignConfig(block_n=16, block_k=16, block_d=16),
    config.AssignConfig(block_n=16, block_k=16, block_d=64, deferred_argmin=True),
    config.AssignConfig(block_n=32, block_k=32, block_d=16, deferred_argmin=True),
])
def test_assign_config_ties(cfg):
  cases.check_assign_config(cfg, interpret=True)


@pytest.mark.parametrize("cfg", [
    update_config.UpdateConfig(rows_per_item=64, block_rows=16, block_d=16),
    update_config.UpdateConfig(rows_per_item=64, block_rows=64, block_d=64, fold_rows=True),
    update_config.UpdateConfig(rows_per_item=128, block_rows=32, block_d=16, fold_rows=True),
])
def test_update_configs(cfg):
  cases.check_update_config(cfg, interpret=True)


@pytest.mark.parametrize("cfg,d,weighted", [
    # several blocks and steps, clusters over two chunks, a ragged last block
    (update_config.UpdateConfig(dense=True, dense_rows=512, dense_sub_rows=128,
                                dense_block_k=16), 1, True),
    (update_config.UpdateConfig(dense=True, dense_rows=256, dense_sub_rows=256,
                                dense_block_k=32), 3, False),
])
def test_dense_update_configs(cfg, d, weighted):
  cases.check_update_config(cfg, interpret=True, d=d, weighted=weighted)


def test_update_config_picks_dense_for_tiny_problems():
  assert update_config.update_config(1 << 20, 16, 1, jnp.float32, kind="NVIDIA H200").dense
  assert update_config.update_config(1 << 20, 16, 4, jnp.float32, kind="NVIDIA H200").dense
  assert update_config.update_config(1 << 20, 32, 1, jnp.float32, kind="NVIDIA H200").dense
  assert not update_config.update_config(1 << 20, 16, 8, jnp.float32, kind="NVIDIA H200").dense
  assert not update_config.update_config(1 << 20, 64, 1, jnp.float32, kind="NVIDIA H200").dense
  assert not update_config.update_config(1 << 20, 1024, 1, jnp.float32, kind="NVIDIA H200").dense
  assert not update_config.update_config(1 << 20, 16, 64, jnp.float32, kind="NVIDIA H200").dense


def test_assign_never_picks_padded_centroid():
  # K=3 padded to a 16-wide tile: the zero padding rows would win for points
  # near the origin under "dot" and "sqeuclidean" if they were not masked.
  x = jnp.zeros((20, 4), jnp.float32).at[:, 0].set(-1.0)
  c = jnp.asarray([[5.0, 0, 0, 0], [6.0, 0, 0, 0], [7.0, 0, 0, 0]], jnp.float32)
  # sqeuclidean: the nearest is (5, 0, 0, 0), at 36 (a zero padding row would
  # be at 1); dot: -x.c = c_0 is 5, 6, 7, the first is smallest (a zero row
  # would give 0); cosine: all at distance 2, the lowest index wins.
  want = {"sqeuclidean": (0, 36.0), "dot": (0, 5.0), "cosine": (0, 2.0)}
  for metric in cases.METRICS:
    l, d = fk.assign(x, c, metric=metric, impl=IMPL)
    np.testing.assert_array_equal(np.asarray(l), want[metric][0])
    np.testing.assert_array_equal(np.asarray(d), np.float32(want[metric][1]))


def test_assign_float16_norm_does_not_overflow():
  # ||x||^2 = 128 * 1e4^2 overflows float16; the kernel keeps it in float32.
  x = jnp.full((32, 128), 1e4, jnp.float16)
  c = jnp.concatenate([jnp.full((1, 128), 1e4, jnp.float16),
                       jnp.zeros((1, 128), jnp.float16)])
  l, d = fk.assign(x, c, impl=IMPL)
  np.testing.assert_array_equal(np.asarray(l), 0)
  np.testing.assert_array_equal(np.asarray(d), 0.0)  # exact: 2 (||c||^2/2 - x.c) + ||x||^2


# One dtype and weighting per shape by default, each shape and each of the two
# once; the rest of the grid with -m slow (XLA and GPU run all of it).
UPDATE_FAST = {((1000, 7, 17), "float32", False), ((999, 100, 96), "bfloat16", True),
               ((300, 1, 200), "float32", True), ((50, 64, 3), "bfloat16", False)}
UPDATE_CASES = [
    pytest.param(shape, dtype, weighted,
                 marks=[] if (shape, dtype, weighted) in UPDATE_FAST else [pytest.mark.slow])
    for shape in [(1000, 7, 17), (999, 100, 96), (300, 1, 200), (50, 64, 3)]
    for dtype in ["float32", "bfloat16"] for weighted in [False, True]]


@pytest.mark.parametrize("shape,dtype,weighted", UPDATE_CASES)
def test_update(shape, dtype, weighted):
  cases.check_update(IMPL, *shape, cases.DTYPES[dtype], weighted)


def test_update_skewed_clusters_and_empty():
  cases.check_update_skewed(IMPL)


def test_work_items_partition_every_point():
  rng = np.random.default_rng(0)
  labels = jnp.asarray(np.sort(rng.integers(0, 9, 1000))[::-1].copy(), jnp.int32)
  wl = sorted_update.work_items(labels, 9, 64)
  perm, start, end, cluster = wl.perm, wl.start, wl.end, wl.cluster
  for c in range(9):  # each cluster's items are the contiguous range it reports
    f, m = int(wl.first_item[c]), int(wl.n_items[c])
    assert np.all(np.asarray(cluster)[f:f + m] == c)
    assert np.all(np.asarray(end)[f:f + m] > np.asarray(start)[f:f + m])
  seen = np.zeros(1000, int)
  lab = np.asarray(labels)
  for s, e, c in zip(np.asarray(start), np.asarray(end), np.asarray(cluster)):
    assert e - s <= 64
    idx = np.asarray(perm)[s:e]
    seen[idx] += 1
    assert np.all(lab[idx] == c)
  np.testing.assert_array_equal(seen, 1)


@pytest.mark.parametrize("n,k", [
    (1000, 5),        # 8-bit keys
    (3000, 300),      # 16-bit keys
    (20_000, 70_000), # packed 32-bit keys: 15 + 17 bits
    (40_000, 70_000), # 16 + 17 bits > 32: argsort
])
def test_sort_by_label_is_a_stable_sort(n, k):
  rng = np.random.default_rng(n)
  labels = rng.integers(0, min(k, 50), n).astype(np.int32) * (k // min(k, 50))
  helpers.check_stable_label_sort(labels, k)


@pytest.mark.parametrize("b,n,k", [(5, 1000, 300), (3, 40_000, 70_000)])
def test_sort_by_label_under_vmap(b, n, k):
  # (5, 1000, 300): one flat sort of member|label|index keys; (3, 40000,
  # 70000): too wide for 32 bits, sorted member by member.
  rng = np.random.default_rng(b)
  labels = rng.integers(0, k, (b, n)).astype(np.int32)
  labels[:, : n // 3] = k - 1  # a big cluster in every member
  helpers.check_stable_label_sort(labels, k)


def test_update_skips_non_finite_rows():
  x = jnp.asarray([[1.0, 2.0], [jnp.nan, 0.0], [3.0, 4.0], [jnp.inf, 1.0]], jnp.float32)
  lab = jnp.asarray([0, 0, 0, 1], jnp.int32)
  s, c = fk.cluster_sums(x, lab, 2, impl=IMPL)
  np.testing.assert_allclose(np.asarray(s), [[4.0, 6.0], [0.0, 0.0]])
  np.testing.assert_allclose(np.asarray(c), [2.0, 0.0])


def test_vmap_assign():
  cases.check_vmap_assign(IMPL)


def test_vmap_update():
  cases.check_vmap_update(IMPL)


@pytest.mark.parametrize("metric", cases.METRICS)
def test_grad(metric):
  helpers.check_grad(IMPL, metric)


def test_kmeans_matches_xla():
  cases.check_kmeans_matches_xla(IMPL)


def test_batched_small_d_matches_xla():
  cases.check_batched_small_d_matches_xla(IMPL, b=2, n=300, d=2, k=5, iters=3)


def test_half_prepass_config_and_result():
  # K >= 4096 on float16 operands prepares them in an XLA pass; the result is
  # that of the on-chip scaling.
  f16 = jnp.float16
  assert config.assign_config(1000, 4096, 64, jnp.float32, operand_dtype=f16).half_prepass
  assert not config.assign_config(1000, 1024, 64, jnp.float32, operand_dtype=f16).half_prepass
  assert not config.assign_config(1000, 8192, 64, jnp.float32,
                                  operand_dtype=jnp.bfloat16).half_prepass
  assert not config.assign_config(1000, 8192, 64, f16).half_prepass
  x, c = cases.half_inputs(100, 70, 40, 1e8)
  for block_d in (16, 64):  # D tiled in the kernel, and not
    on_chip = config.AssignConfig(block_n=32, block_k=32, block_d=block_d)
    pre = config.AssignConfig(block_n=32, block_k=32, block_d=block_d, half_prepass=True)
    for metric in cases.METRICS:
      for cfg in (pre, on_chip):
        l, d = flash_assign.flash_assign(x, c, metric=metric, config=cfg, interpret=True,
                                         precision="F16_F16_F32")
        cases.check_assign_result(x, c, l, d, metric, precision="F16_F16_F32", impl=IMPL)


def test_half_operands_under_vmap():
  pre = config.AssignConfig(block_n=32, block_k=32, block_d=64, half_prepass=True)
  on_chip = config.AssignConfig(block_n=32, block_k=32, block_d=64)
  xs, cs = zip(*(cases.half_inputs(100, 20, 24, 1e8, seed=s) for s in range(3)))
  x, c = jnp.stack(xs), jnp.stack(cs)
  for cfg in (pre, on_chip):
    f = lambda x, c, cfg=cfg: flash_assign.flash_assign(  # noqa: E731
        x, c, config=cfg, interpret=True, precision="F16_F16_F32")
    lb, db = jax.vmap(f)(x, c)
    cases.check_assign_result(x, c, lb, db, "sqeuclidean", precision="F16_F16_F32", impl=IMPL)
    for b in range(3):
      l1, d1 = f(x[b], c[b])
      np.testing.assert_array_equal(np.asarray(lb[b]), np.asarray(l1))
      np.testing.assert_allclose(np.asarray(db[b]), np.asarray(d1), rtol=1e-6)
