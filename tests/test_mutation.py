"""Mutation tests: the shared checks of tests/cases.py must fail on wrong code.

Each mutant is the real code path with one plausible bug patched in: dot
products rounded to bfloat16, a mask one centroid too wide in the last tile
(the last centroid is never considered), and a cluster sum that loses the last
point of every cluster. The suite's own check functions must pass on the real
code and raise ``AssertionError`` on every mutant, on the XLA path and on the
Pallas kernels (interpret mode).

That the checks pass on the real code, for exactly these cases, is asserted
where those cases live (same check, same arguments): tests/test_assign.py
(XLA assign grid), tests/test_kernels_interpret.py (interpret assign grid,
update cases and configs) and tests/test_update.py (XLA update). Repeating
it here only compiled every case twice (``patch`` clears JAX's caches), so
this module runs the mutants alone.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental.pallas import triton as plgpu

from flashkmeans_jax.core import metric as metric_mod
from flashkmeans_jax.ops.assign import reference as assign_reference
from flashkmeans_jax.ops.cluster_sums import config as update_config
from flashkmeans_jax.ops.cluster_sums import pallas_dense
from flashkmeans_jax.ops.cluster_sums import pallas_triton as sorted_update
from flashkmeans_jax.ops.cluster_sums import reference as sums_reference
from tests import cases, helpers

IMPLS = ("xla", "pallas_interpret")


@pytest.fixture
def patch(monkeypatch):
  """``patch(module, name, value)``: monkeypatch with no stale compiled
  program around (the kernels and ``update`` are jitted, and a cached trace
  would run the code as it was when it was traced)."""

  def setattr_fresh(module, name, value):
    monkeypatch.setattr(module, name, value)
    jax.clear_caches()

  yield setattr_fresh
  monkeypatch.undo()
  jax.clear_caches()


def round_to_bfloat16(a):
  return a.astype(jnp.bfloat16).astype(a.dtype)


def expect_failure(check, *args, **kwargs):
  """``check`` must fail, and by one of the shared checks' own assertions
  (not by some other error on the way)."""
  with pytest.raises(AssertionError, match=r"labels beyond a float32 near-tie|sums and \d+ "
                                           r"counts off"):
    check(*args, **kwargs)


# --- (a) dot products rounded to bfloat16 ------------------------------------

# (N, K, D), dtype, metric. (513, 513, 1) is the case that passed the old 1e-2
# tolerance with 345 of 513 labels wrong. Left out: cosine with bfloat16
# points and D=1, where the product of a bfloat16 point and a unit centroid
# (+-1) is a bfloat16 value already, so the mutant computes the right answer.
BF16_CASES = {
    "xla": [((513, 513, 1), dt, m) for dt in ("float32", "bfloat16", "float16")
            for m in cases.METRICS if (dt, m) != ("bfloat16", "cosine")]
           + [((257, 33, 200), "bfloat16", m) for m in cases.METRICS],
    "pallas_interpret": [((513, 513, 1), "float32", "sqeuclidean"),
                         ((513, 513, 1), "bfloat16", "dot"),
                         ((257, 33, 200), "bfloat16", "cosine")],
}


def mutate_bfloat16_dots(impl, patch):
  if impl == "xla":
    real = assign_reference.scores

    def scores(xb, c, bias, precision, row_factor=None):
      dots = -real(xb, c, jnp.zeros_like(bias), precision, row_factor)
      return bias.astype(dots.dtype)[None, :] - round_to_bfloat16(dots)

    patch(assign_reference, "scores", scores)
  else:
    real = plgpu.dot
    patch(plgpu, "dot", lambda *a, **kw: round_to_bfloat16(real(*a, **kw)))


@pytest.mark.parametrize("impl", IMPLS)
def test_bfloat16_rounded_dots_fail_the_assign_check(impl, patch):
  # The real code passes these cases: test_assign.py::test_assign_matches_float64
  # (xla) and test_kernels_interpret.py::test_assign (pallas_interpret).
  mutate_bfloat16_dots(impl, patch)
  for (n, k, d), dtype, metric in BF16_CASES[impl]:
    expect_failure(cases.check_assign, impl, n, k, d, cases.DTYPES[dtype], metric,
                   precision="highest")


def test_bfloat16_rounded_dots_fail_at_the_old_blind_spot(patch):
  # Counted: at (513, 513, 1) most labels are wrong, not a few near-ties.
  mutate_bfloat16_dots("xla", patch)
  with pytest.raises(AssertionError, match=r"sqeuclidean: [1-9]\d\d labels beyond"):
    cases.check_assign("xla", 513, 513, 1, jnp.bfloat16, "sqeuclidean", precision="highest")


# --- (b) the last centroid never considered ----------------------------------

# (N, K, D), dtype, metrics. With D=1 the cosine nearest centroid is the first
# of each sign and the dot nearest the largest or smallest: the last one is
# nobody's nearest, so (513, 513, 1) runs sqeuclidean only.
LAST_CENTROID_CASES = [((1537, 7, 17), "float32", cases.METRICS),
                       ((513, 513, 1), "float32", ("sqeuclidean",)),
                       ((257, 33, 200), "bfloat16", cases.METRICS)]


def mutate_last_centroid_masked(patch):
  """A mask one centroid too wide: the last real centroid gets the bias
  (+inf) that keeps padded centroids from winning, in the XLA path and in the
  kernel alike (both take their bias from ``prepare_centroids``)."""
  real = metric_mod.prepare_centroids

  def prepare_centroids(centroids, metric, dtype):
    c, bias = real(centroids, metric, dtype)
    return c, bias.at[..., -1].set(jnp.inf)

  patch(metric_mod, "prepare_centroids", prepare_centroids)


@pytest.mark.parametrize("impl", IMPLS)
def test_last_centroid_never_considered_fails_the_assign_check(impl, patch):
  shapes = LAST_CENTROID_CASES if impl == "xla" else LAST_CENTROID_CASES[:2]
  for (n, k, d), dtype, metrics in shapes:
    # The data really has points whose nearest centroid is the last one, so a
    # correct check must notice (same generator as cases.check_assign).
    rng = np.random.default_rng(0)
    x = np.asarray(jnp.asarray(rng.normal(size=(n, d)), dtype).astype(jnp.float32))
    c = np.asarray(jnp.asarray(rng.normal(size=(k, d)), dtype).astype(jnp.float32))
    for metric in metrics:
      assert (helpers.np_assign(x, c, metric)[0] == k - 1).any()
  # The real code passes these cases: test_assign.py::test_assign_matches_float64
  # (xla) and test_kernels_interpret.py::test_assign (pallas_interpret).
  mutate_last_centroid_masked(patch)
  for (n, k, d), dtype, metrics in shapes:
    for metric in metrics:
      expect_failure(cases.check_assign, impl, n, k, d, cases.DTYPES[dtype], metric,
                     precision="highest")


# --- (c) cluster sums that drop the last point of each cluster ---------------

def mutate_drop_last_point(patch):
  """XLA path: the chunk sums zero the weight of each cluster's last row.
  Kernel: the work list ends each cluster's last item one row early."""
  real_chunk = sums_reference.chunk_sums

  def chunk_sums(xb, lb, wb, k):
    idx = jnp.arange(lb.shape[0])
    last = jax.ops.segment_max(idx, lb, num_segments=k)
    return real_chunk(xb, lb, jnp.where(last[lb] == idx, 0.0, wb), k)

  real_items = sorted_update.work_items

  def work_items(labels, k, rows_per_item):
    wl = real_items(labels, k, rows_per_item)
    last_item = wl.first_item + wl.n_items - 1
    end = wl.end.at[last_item].add(jnp.where(wl.n_items > 0, -1, 0))
    return wl._replace(end=end)

  patch(sums_reference, "chunk_sums", chunk_sums)
  patch(sorted_update, "work_items", work_items)


@pytest.mark.parametrize("impl", IMPLS)
def test_dropped_last_point_fails_the_update_check(impl, patch):
  # Unweighted: the counts are off by one; weighted (XLA; the kernel's
  # weighted case is the config test below): the sums by a whole row.
  # The real code passes these cases: test_update.py::test_update_matches_float64
  # (xla, both weightings) and test_kernels_interpret.py::test_update.
  weightings = (False, True) if impl == "xla" else (False,)
  mutate_drop_last_point(patch)
  for weighted in weightings:
    expect_failure(cases.check_update, impl, 1000, 7, 17, jnp.float32, weighted)


def test_dropped_last_point_fails_the_kernel_config_check(patch):
  # The real code passes this config: test_kernels_interpret.py::test_update_configs.
  cfg = update_config.UpdateConfig(rows_per_item=64, block_rows=16, block_d=16)
  mutate_drop_last_point(patch)
  expect_failure(cases.check_update_config, cfg, interpret=True)


def test_dense_kernel_losing_the_last_row_fails_the_config_check(patch):
  # The dense kernel's row mask one short (the last point never counts). The
  # real code passes this config: test_kernels_interpret.py::test_dense_update_configs.
  real_kernel = pallas_dense.dense_kernel

  def kernel(*refs, n, **kw):
    return real_kernel(*refs, n=n - 1, **kw)

  cfg = update_config.UpdateConfig(dense=True, dense_rows=512, dense_sub_rows=128,
                                   dense_block_k=16)
  patch(pallas_dense, "dense_kernel", kernel)
  expect_failure(cases.check_update_config, cfg, interpret=True, d=1, weighted=True)
