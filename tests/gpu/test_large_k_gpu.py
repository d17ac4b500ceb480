"""``balanced_kmeans`` and ``hierarchical_kmeans`` through the real Triton
kernels (run on the GPU machine: ``python -m pytest -q
tests/gpu/test_large_k_gpu.py``). The checks of tests/test_balanced.py and
tests/test_hierarchical.py at sizes with many row blocks, several centroid
tiles and a batch of hundreds of fine members."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import flashkmeans_jax as fk
from flashkmeans_jax.core.options import LloydOptions
from flashkmeans_jax.core import precision as precision_mod
from flashkmeans_jax.lloyd import balanced
from tests import cases
from tests.test_balanced import check_balanced_result, check_stable_matching, sizes_of

pytestmark = pytest.mark.gpu


def skewed(n, d, dtype, seed=0):
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(n, d)).astype(np.float32)
  x[: 3 * n // 4] += 2.0
  return jnp.asarray(x, cases.DTYPES[dtype])


@pytest.mark.parametrize("dtype", ["bfloat16", "float32"])
def test_balanced_sizes_on_the_gpu(dtype):
  n, k, d = 1 << 17, 512, 64
  x = skewed(n, d, dtype)
  res = fk.balanced_kmeans(jax.random.key(0), x, k, max_iter=10, impl="pallas")
  cap = n // k
  check_balanced_result(x, res, k, cap)
  np.testing.assert_array_equal(sizes_of(res.labels, k), np.full(k, cap))
  plain = fk.kmeans(jax.random.key(0), x, k, max_iter=10, impl="pallas")
  assert float(res.inertia) <= 1.3 * float(plain.inertia)


def test_capacity_assign_stable_matching_on_the_gpu():
  n, k, d, m = 1 << 16, 1000, 64, 8
  x = skewed(n, d, "bfloat16", seed=1)
  c = x[:k].astype(jnp.float32)
  cap = 80
  opts = LloydOptions(k=k, impl="pallas", precision=precision_mod.resolve_precision(None))
  bal = balanced.BalanceOptions(max_size=cap, n_candidates=m, max_rounds=10_000)
  labels, dist = jax.jit(balanced.capacity_assign, static_argnums=(3, 4))(
      x, c, None, opts, bal)
  assert check_stable_matching(x, c, labels, dist, m, cap, impl="pallas",
                               precision=opts.precision) > 1000


@pytest.mark.parametrize("refine_iter", [0, 2])
def test_hierarchical_on_the_gpu(refine_iter):
  n, k, d = 1 << 17, 4096, 64
  x = jnp.asarray(np.random.default_rng(2).normal(size=(n, d)), jnp.bfloat16)
  res, lv = fk.hierarchical_kmeans(jax.random.key(1), x, k, max_iter=10, impl="pallas",
                                   refine_iter=refine_iter, return_levels=True)
  cases.check_kmeans_result(x, res, impl="pallas")
  assert lv.fine_k.sum() == k and len(lv.fine_k) == 64
  meso, fine, off = np.asarray(lv.meso.labels), np.asarray(lv.fine_labels), lv.fine_offsets
  assert np.all((fine >= off[meso]) & (fine < off[meso + 1]))
  if refine_iter:
    assert res.inertia_history.shape == (refine_iter,)
