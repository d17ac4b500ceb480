"""``assign_topk`` through the real Triton lowering (run on the GPU machine:
``python -m pytest -q tests/gpu/test_topk_gpu.py``). The checks of the
interpret-mode tests (tests/topk_checks.py) at sizes with many programs and
centroid tiles, the default tilings, and k=8 at K=65536, D=128."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import flashkmeans_jax as fk
from flashkmeans_jax.ops.assign_topk.config import TopKConfig
from tests import cases, topk_checks

pytestmark = pytest.mark.gpu


@pytest.mark.parametrize("metric", cases.METRICS)
@pytest.mark.parametrize("dtype", list(cases.DTYPES))
@pytest.mark.parametrize("k", [1, 2, 8, 32])
def test_kernel_matches_float64_sort(metric, dtype, k):
  # K=1000 (a partial last tile), D=96 (padded to 128), N not a multiple of
  # the row block; float32 at "highest" (the 3-pass TF32 dot).
  topk_checks.check_topk("pallas", 20001, 1000, 96, cases.DTYPES[dtype], metric, k, seed=k)


@pytest.mark.parametrize("precision", [None, "F16_F16_F32", "BF16_BF16_F32"])
@pytest.mark.parametrize("n,kk,d", [(30000, 5000, 128), (9000, 700, 300)])
def test_kernel_float32_precisions(precision, n, kk, d):
  # TF32 (default), 16-bit operands (the XLA pre-pass from K=4096 on), and
  # D=300 (the D loop of 128-column dots).
  topk_checks.check_topk("pallas", n, kk, d, jnp.float32, "sqeuclidean", 8,
                         precision=precision)


@pytest.mark.parametrize("cfg", [None, TopKConfig(block_n=16, block_k=16, block_d=16),
                                 TopKConfig(block_n=128, block_k=128, block_d=128,
                                            num_warps=8, num_stages=3)])
def test_kernel_ties_lower_index_first(cfg):
  topk_checks.check_topk_ties("pallas", config=cfg)
  topk_checks.check_topk_ties("pallas", k=12, config=cfg)


def test_kernel_d1_unusable_and_nonfinite_rows():
  topk_checks.check_topk("pallas", 5000, 300, 1, jnp.float32, "sqeuclidean", 16)
  topk_checks.check_unusable_and_nonfinite("pallas", n=4001)

def test_kernel_vmap():
  rng = np.random.default_rng(4)
  x = jnp.asarray(rng.normal(size=(4, 6000, 64)), jnp.bfloat16)
  c = jnp.asarray(rng.normal(size=(4, 900, 64)), jnp.bfloat16)
  f = lambda x, c: fk.assign_topk(x, c, 8, impl="pallas")  # noqa: E731
  ib, db = jax.jit(jax.vmap(f))(x, c)
  topk_checks.check_topk_result(x, c, ib, db, 8, "sqeuclidean", impl="pallas")
  for b in range(4):
    np.testing.assert_array_equal(np.asarray(ib[b]), np.asarray(f(x[b], c[b])[0]))


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_k8_at_k65536_d128(dtype):
  # The shape: N=65536 points, K=65536 centroids, D=128, k=8. Every
  # point is computed; 4096 of them (every 16th: each program's rows are
  # independent of the others') are checked against float64, which over all
  # 2^32 pairs would take minutes of host time.
  x, c = topk_checks.topk_inputs(65536, 65536, 128, cases.DTYPES[dtype], seed=7)
  idx, dist = fk.assign_topk(x, c, 8, impl="pallas")
  rows = np.arange(0, 65536, 16)
  topk_checks.check_topk_result(x[rows], c, np.asarray(idx)[rows], np.asarray(dist)[rows], 8,
                                "sqeuclidean", impl="pallas")


def test_first_column_is_assign():
  x, c = topk_checks.topk_inputs(50000, 4096, 128, jnp.float16, seed=2)
  idx, dist = fk.assign_topk(x, c, 4, impl="pallas")
  lab, d1 = fk.assign(x, c, impl="pallas")
  # Same scores (same dot on the same tiles up to accumulation order): the
  # labels agree except at float32 near-ties, which the shared check allows.
  cases.check_assign_result(x, c, idx[:, 0], dist[:, 0], "sqeuclidean", impl="pallas")
  assert float(jnp.mean((idx[:, 0] == lab).astype(jnp.float32))) > 0.999
  del d1
