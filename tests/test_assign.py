"""``assign`` on the XLA path (``impl="xla"``) against float64 NumPy.

The Pallas kernels meet the same shared checks in test_kernels_interpret.py
(interpret mode) and tests/gpu/ (real lowering).
"""


import jax
import jax.numpy as jnp
from jax import lax
import numpy as np
import pytest

import flashkmeans_jax as fk
from flashkmeans_jax.core import metric as metric_mod
from flashkmeans_jax.ops.assign import reference as assign_reference
from flashkmeans_jax.ops.assign import xla as assign_xla
from tests import cases, helpers

IMPL = "xla"

# cases.ASSIGN_SHAPES plus a few more non-powers of two (N in {1000, 1537},
# K in {1, 7, 100, 513}, D in {1, 3, 17, 96, 200}).
SHAPES = sorted(set(cases.ASSIGN_SHAPES) | {(1537, 513, 3), (1000, 7, 1), (1537, 100, 200)})


@pytest.mark.parametrize("n,k,d", SHAPES)
@pytest.mark.parametrize("metric", cases.METRICS)
@pytest.mark.parametrize("dtype", list(cases.DTYPES))
def test_assign_matches_float64(n, k, d, metric, dtype):
  cases.check_assign(IMPL, n, k, d, cases.DTYPES[dtype], metric, precision="highest")


@pytest.mark.parametrize("n,k,d", [(1000, 100, 96), (1537, 7, 17)])
@pytest.mark.parametrize("magnitude", [1e-8, 1e8])
@pytest.mark.parametrize("metric", cases.METRICS)
@pytest.mark.parametrize("precision", cases.HALF_PRECISIONS)
def test_assign_half_operands_match_float64(n, k, d, magnitude, metric, precision):
  cases.check_assign_half(IMPL, precision, n, k, d, metric, magnitude)


@pytest.mark.parametrize("metric", cases.METRICS)
def test_assign_default_precision_matches_float64(metric):
  # precision=None (JAX's default); on the CPU float32 dots are exact anyway.
  cases.check_assign(IMPL, 1537, 100, 17, jnp.float32, metric)


@pytest.mark.parametrize("metric", cases.METRICS)
@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float16"])
def test_tiled_path_matches_dense_reference(metric, dtype):
  # N=1000 in tiles of 64 (16 tiles, the last one clamped to start at 936 and
  # overlapping its predecessor) and K=100 in tiles of 16 (7 tiles, the last
  # starting at 84): both loops and both overlaps run. Tiled and dense paths
  # both meet the float64 check (they may differ only at float32 near-ties).
  rng = np.random.default_rng(11)
  x = jnp.asarray(rng.normal(size=(1000, 24)), cases.DTYPES[dtype])
  c = jnp.asarray(rng.normal(size=(100, 24)), cases.DTYPES[dtype])
  lt, dt = assign_xla.assign_xla(x, c, metric=metric, precision="highest", tile_n=64,
                                 tile_k=16)
  lr, dr = assign_reference.assign_reference(x, c, metric=metric, precision="highest")
  for labels, dist in ((lt, dt), (lr, dr)):
    cases.check_assign_result(x, c, labels, dist, metric, precision="highest")


@pytest.mark.parametrize("tile_n,tile_k", [(64, 16), (999, 99), (1000, 1), (1, 100),
                                           (250, 25)])
def test_tiled_path_any_tile_sizes(tile_n, tile_k):
  # Exact divisors (250, 25), a tile one short of the whole (999: the second
  # tile overlaps all but one row), single-row and single-centroid tiles.
  rng = np.random.default_rng(12)
  x = jnp.asarray(rng.normal(size=(1000, 5)), jnp.float32)
  c = jnp.asarray(rng.normal(size=(100, 5)), jnp.float32)
  lt, dt = assign_xla.assign_xla(x, c, precision="highest", tile_n=tile_n, tile_k=tile_k)
  cases.check_assign_result(x, c, lt, dt, "sqeuclidean", precision="highest")


def test_tiled_ties_across_centroid_tiles_take_lowest_index():
  # Centroid j and j + 50 are equal; with tile_k=16 the copies sit in
  # different tiles (and 84..95 are visited twice by the clamped last tile):
  # the running minimum must keep the first (lowest) index.
  rng = np.random.default_rng(13)
  base = rng.normal(size=(50, 6)).astype(np.float32)
  c = jnp.asarray(np.concatenate([base, base]))
  x = jnp.asarray(base[rng.integers(0, 50, 700)] + 0.01 * rng.normal(size=(700, 6)),
                  jnp.float32)
  for tile_k in (16, 30, 100):
    labels, _ = assign_xla.assign_xla(x, c, precision="highest", tile_n=64, tile_k=tile_k)
    ref, _, _ = helpers.np_assign(np.asarray(x), base, "sqeuclidean")
    np.testing.assert_array_equal(np.asarray(labels), ref)


def test_default_tiles_bound_the_score_tile():
  default = assign_xla.XLA_CPU_TILE_BYTES if jax.default_backend() == "cpu" else (
      assign_xla.XLA_TILE_BYTES)
  for tile_bytes in (None, assign_xla.XLA_TILE_BYTES, assign_xla.XLA_CPU_TILE_BYTES, 1 << 20):
    for n, k in [(10**6, 1024), (10**7, 4096), (5000, 10**5), (300, 7), (10**6, 1)]:
      tn, tk = assign_xla.xla_tiles(n, k, tile_bytes)
      assert 1 <= tn <= n and 1 <= tk <= k
      if tn > 256:  # 256 rows is the floor
        assert 4 * tn * tk <= (tile_bytes or default)
  # Large K is tiled too, not only N.
  assert assign_xla.xla_tiles(5000, 10**5)[1] < 10**5


@pytest.mark.parametrize("dtype", list(cases.DTYPES))
def test_cosine_centroid_operand_is_the_rounded_unit_vector(dtype):
  # The float64 references take the unit rows of cosine centroids from
  # prepare_centroids (tests/helpers.py): they must be the unit vectors
  # rounded to the points' dtype, within one rounding of the float32 quotient
  # (2^-23 relative, plus the dtype's own half ulp), and zero rows stay zero.
  rng = np.random.default_rng(16)
  c = rng.normal(size=(50, 33)) * np.logspace(-3, 3, 50)[:, None]
  c[7] = 0.0
  c = jnp.asarray(c, cases.DTYPES[dtype])
  unit, bias = metric_mod.prepare_centroids(c, "cosine", cases.DTYPES[dtype])
  assert unit.dtype == cases.DTYPES[dtype]
  np.testing.assert_array_equal(np.asarray(bias), 0.0)
  c64 = np.asarray(c.astype(jnp.float32), np.float64)
  norm = np.linalg.norm(c64, axis=1, keepdims=True)
  want = c64 / np.where(norm > 0, norm, 1.0)
  got = np.asarray(unit.astype(jnp.float32), np.float64)
  u = float(jnp.finfo(cases.DTYPES[dtype]).eps) / 2
  bound = (u + cases.gamma(33 + 3)) * np.abs(want) * cases.SAFETY
  assert (np.abs(got - want) <= bound).all()
  np.testing.assert_array_equal(got[7], 0.0)


def test_ties_lowest_index():
  cases.check_assign_ties(IMPL)


@pytest.mark.parametrize("metric", cases.METRICS)
def test_grad(metric):
  helpers.check_grad(IMPL, metric)


@pytest.mark.parametrize("metric", cases.METRICS)
def test_grad_matches_autodiff_of_direct_distance(metric):
  # The custom VJP against plain autodiff of the direct distance to the
  # chosen (fixed) centroid, with a weighted loss.
  rng = np.random.default_rng(14)
  x = jnp.asarray(rng.normal(size=(200, 7)), jnp.float32)
  c = jnp.asarray(rng.normal(size=(9, 7)), jnp.float32)
  w = jnp.asarray(rng.random(200), jnp.float32)
  labels = fk.assign(x, c, metric=metric, impl=IMPL, precision="highest")[0]

  def loss(x, c):
    return jnp.sum(w * fk.assign(x, c, metric=metric, impl=IMPL, precision="highest")[1])

  def loss_ref(x, c):
    return jnp.sum(w * metric_mod.distance_to(x, c[labels], metric))

  np.testing.assert_allclose(float(loss(x, c)), float(loss_ref(x, c)), rtol=1e-5)
  for g, gr in zip(jax.grad(loss, (0, 1))(x, c), jax.grad(loss_ref, (0, 1))(x, c)):
    np.testing.assert_allclose(np.asarray(g), np.asarray(gr), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("metric", cases.METRICS)
def test_jit_equals_eager(metric):
  rng = np.random.default_rng(15)
  x = jnp.asarray(rng.normal(size=(1537, 17)), jnp.float32)
  c = jnp.asarray(rng.normal(size=(100, 17)), jnp.float32)
  f = lambda x, c: fk.assign(x, c, metric=metric, impl=IMPL, precision="highest")
  le, de = f(x, c)
  lj, dj = jax.jit(f)(x, c)
  np.testing.assert_array_equal(np.asarray(lj), np.asarray(le))
  np.testing.assert_allclose(np.asarray(dj), np.asarray(de), rtol=1e-6, atol=1e-6)


def test_vmap_equals_loop():
  cases.check_vmap_assign(IMPL)


def test_two_pass_argmin_is_argmin():
  # The CPU's two-reduction argmin against jnp.argmin: ties to the lowest
  # column, +-inf, a row of NaN (its first NaN wins) and a lone NaN column.
  from flashkmeans_jax.ops.assign import reference as assign_reference
  rng = np.random.default_rng(5)
  s = rng.integers(0, 4, (12, 37)).astype(np.float32)  # many exact ties
  s[1] = np.inf
  s[2, 5] = -np.inf
  s[3] = np.nan
  s[4, 9] = np.nan
  s[5, 0] = np.nan
  s[6, 36] = -np.inf
  for two_pass in (False, True):
    # scores() is bias - x . c; with x = 0 it is the bias row: feed each row
    # of s as the bias of a one-point tile.
    got = [assign_reference.argmin_tile(jnp.zeros((1, 1), jnp.float32),
                                        jnp.zeros((37, 1), jnp.float32), jnp.asarray(row),
                                        lax.Precision.HIGHEST, two_pass=two_pass)
           for row in s]
    arg = np.array([int(g[1][0]) for g in got])
    best = np.array([float(g[0][0]) for g in got])
    np.testing.assert_array_equal(arg, np.argmin(s, axis=1))
    np.testing.assert_array_equal(best, s[np.arange(12), np.argmin(s, axis=1)])
