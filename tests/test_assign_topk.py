"""``assign_topk`` (XLA path and the Pallas kernel in interpret mode) against
a float64 NumPy sort (tests/topk_checks.py). The real kernel meets the same
checks in tests/gpu/test_topk_gpu.py."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import flashkmeans_jax as fk
from flashkmeans_jax.ops.assign_topk import reference as topk_reference
from tests import cases, topk_checks


# Each case is one compile: every metric, dtype and k ({1, 2, 8, 32}) appears
# in these rows; the full metric x dtype grid runs on the real kernel and the
# XLA path in tests/gpu/test_topk_gpu.py.
GRID = [("sqeuclidean", "float32", 32), ("cosine", "bfloat16", 8), ("dot", "float16", 2),
        ("sqeuclidean", "float16", 1)]


@pytest.mark.parametrize("metric,dtype,k", GRID)
def test_xla_matches_float64_sort(metric, dtype, k):
  # K=300 over tiles of 64 (a partial last tile), D=17.
  x, c = topk_checks.topk_inputs(257, 300, 17, cases.DTYPES[dtype], seed=k)
  from flashkmeans_jax.ops.assign_topk import xla
  idx, dist = xla.assign_topk_xla(x, c, k, metric=metric, precision="highest", tile_k=64,
                                  tile_n=100)
  topk_checks.check_topk_result(x, c, idx, dist, k, metric, precision="highest")


@pytest.mark.parametrize("n,kk,d", [(300, 40, 1),
                                    pytest.param(1000, 100, 96, marks=pytest.mark.slow)])
def test_public_xla_shapes(n, kk, d):
  topk_checks.check_topk("xla", n, kk, d, jnp.float32, "sqeuclidean", 8)


@pytest.mark.parametrize("tile_k", [8, pytest.param(None, marks=pytest.mark.slow)])
def test_xla_ties_lower_index_first(tile_k):
  from flashkmeans_jax.ops.assign_topk import xla
  fn = lambda x, c, k: xla.assign_topk_xla(x, c, k, precision="highest", tile_k=tile_k)  # noqa: E731
  topk_checks.check_topk_ties("xla", fn=fn)
  topk_checks.check_topk_ties("xla", k=12, fn=fn)


def test_reference_is_a_float64_sort():
  x, c = topk_checks.topk_inputs(200, 50, 9, jnp.float32)
  idx, dist = topk_reference.topk_reference(x, c, 5, precision="highest")
  topk_checks.check_topk_result(x, c, idx, dist, 5, "sqeuclidean", precision="highest")


def test_first_column_is_assign():
  x, c = topk_checks.topk_inputs(500, 70, 12, jnp.float32, seed=3)
  idx, dist = fk.assign_topk(x, c, 4, impl="xla")
  lab, d1 = fk.assign(x, c, impl="xla")
  np.testing.assert_array_equal(np.asarray(idx[:, 0]), np.asarray(lab))
  np.testing.assert_array_equal(np.asarray(dist[:, 0]), np.asarray(d1))


@pytest.mark.parametrize("bad,exc,msg", [
    (0, ValueError, "k must be >= 1, got 0"),
    (3.0, TypeError, "k must be a Python int, got float (3.0)"),
    (33, ValueError, "k must be <= 32 (assign_topk keeps each point's list on chip), got 33"),
    (11, ValueError, "k=11 exceeds the number of centroids K=10"),
])
def test_bad_k_same_error_everywhere(bad, exc, msg):
  # The first two are the messages every other entry point gives for k
  # (tests/test_reliability.py SAME_ERRORS "k-zero", "k-float").
  x, c = topk_checks.topk_inputs(20, 10, 3, jnp.float32)
  for impl in ("xla", "pallas_interpret", None):
    with pytest.raises(exc) as e:
      fk.assign_topk(x, c, bad, impl=impl)
    assert str(e.value) == msg
    with pytest.raises(exc) as e:
      jax.jit(lambda x, c: fk.assign_topk(x, c, bad, impl=impl))(x, c)
    assert str(e.value) == msg


def test_same_errors_as_assign():
  # x, centroids, metric, impl and precision go through assign's checks.
  x, c = topk_checks.topk_inputs(20, 10, 3, jnp.float32)
  for kwargs in ({"x": x[0]}, {"centroids": c[:, :2]}, {"metric": "l1"}, {"impl": "cuda"},
                 {"precision": "fast"}, {"x": x.at[2, 1].set(jnp.nan)}):
    args = {"x": x, "centroids": c, **kwargs}
    rest = {k: v for k, v in kwargs.items() if k not in ("x", "centroids")}
    with pytest.raises((ValueError, TypeError)) as want:
      fk.assign(args["x"], args["centroids"], **rest)
    with pytest.raises(type(want.value)) as got:
      fk.assign_topk(args["x"], args["centroids"], 3, **rest)
    assert str(got.value) == str(want.value)


def test_nonfinite_rows_inside_jit():
  x, c = topk_checks.topk_inputs(50, 10, 3, jnp.float32)
  x = x.at[4, 1].set(jnp.nan).at[7, 0].set(jnp.inf)
  idx, dist = jax.jit(lambda x: fk.assign_topk(x, c, 3, impl="xla"))(x)
  np.testing.assert_array_equal(np.asarray(idx[4]), [0, 1, 2])
  assert np.isnan(np.asarray(dist)[[4, 7]]).all()
  keep = np.setdiff1d(np.arange(50), [4, 7])
  topk_checks.check_topk_result(x[keep], c, idx[keep], dist[keep], 3, "sqeuclidean")


def test_vmap_and_jit_xla():
  rng = np.random.default_rng(4)
  x = jnp.asarray(rng.normal(size=(3, 200, 11)), jnp.float32)
  c = jnp.asarray(rng.normal(size=(3, 40, 11)), jnp.float32)
  f = lambda x, c: fk.assign_topk(x, c, 6, impl="xla", precision="highest")  # noqa: E731
  ib, db = jax.jit(jax.vmap(f))(x, c)
  topk_checks.check_topk_result(x, c, ib, db, 6, "sqeuclidean", precision="highest")
  for b in range(3):
    i1, _ = f(x[b], c[b])
    np.testing.assert_array_equal(np.asarray(ib[b]), np.asarray(i1))


# --- The Pallas kernel in interpret mode (small tiles: several row blocks,
# centroid tiles and a partial last one; power-of-two blocks as on the GPU).
from flashkmeans_jax.ops.assign_topk.config import TopKConfig  # noqa: E402

SMALL = TopKConfig(block_n=32, block_k=16, block_d=32)
# Every metric, dtype and k in three compiles (the full grid: tests/gpu).
KERNEL_GRID = [("sqeuclidean", "float32", 8), ("cosine", "bfloat16", 32), ("dot", "float16", 1)]


@pytest.mark.parametrize("metric,dtype,k", KERNEL_GRID)
def test_kernel_matches_float64_sort(metric, dtype, k):
  # N=100 (a partial row block), K=70 (a partial centroid tile), D=20.
  topk_checks.check_topk("pallas_interpret", 100, 70, 20, cases.DTYPES[dtype], metric, k,
                         config=SMALL, seed=k)


@pytest.mark.parametrize("precision,prepass", [
    ("F16_F16_F32", False), pytest.param("F16_F16_F32", True, marks=pytest.mark.slow),
    pytest.param("BF16_BF16_F32", False, marks=pytest.mark.slow)])
def test_kernel_half_operands_and_d_tiles(precision, prepass):
  # D=40 over 16-column dots (the D loop), 16-bit operands scaled on chip or
  # by the XLA pre-pass (the dot metric: the fast rows above hold the others).
  cfg = TopKConfig(block_n=32, block_k=16, block_d=16, half_prepass=prepass)
  topk_checks.check_topk("pallas_interpret", 90, 50, 40, jnp.float32, "dot", 8,
                         config=cfg, precision=precision)


@pytest.mark.slow
def test_kernel_d1_and_default_config():
  topk_checks.check_topk("pallas_interpret", 300, 40, 1, jnp.float32, "sqeuclidean", 4)
  topk_checks.check_topk("pallas_interpret", 64, 20, 3, jnp.bfloat16, "cosine", 20)


def test_kernel_ties_lower_index_first():
  topk_checks.check_topk_ties("pallas_interpret", k=12, config=TopKConfig(
      block_n=16, block_k=8, block_d=16))


@pytest.mark.parametrize("impl", ["xla", "pallas_interpret"])
def test_unusable_centroids_last_in_index_order(impl):
  topk_checks.check_unusable_and_nonfinite(impl)


def test_kernel_vmap_and_jit():
  rng = np.random.default_rng(4)
  x = jnp.asarray(rng.normal(size=(3, 70, 11)), jnp.float32)
  c = jnp.asarray(rng.normal(size=(3, 40, 11)), jnp.float32)
  f = lambda x, c: fk.assign_topk(x, c, 6, impl="pallas_interpret",  # noqa: E731
                                  precision="highest", config=SMALL)
  ib, db = jax.jit(jax.vmap(f))(x, c)
  topk_checks.check_topk_result(x, c, ib, db, 6, "sqeuclidean", precision="highest",
                                impl="pallas_interpret")
  for b in range(3):
    i1, _ = f(x[b], c[b])
    np.testing.assert_array_equal(np.asarray(ib[b]), np.asarray(i1))


@pytest.mark.slow
def test_kernel_vmap_centroids_only():
  rng = np.random.default_rng(4)
  x = jnp.asarray(rng.normal(size=(70, 11)), jnp.float32)
  c = jnp.asarray(rng.normal(size=(3, 40, 11)), jnp.float32)
  f = lambda x, c: fk.assign_topk(x, c, 6, impl="pallas_interpret",  # noqa: E731
                                  precision="highest", config=SMALL)
  ic, dc = jax.vmap(lambda c: f(x, c))(c)
  topk_checks.check_topk_result(jnp.broadcast_to(x, (3,) + x.shape), c, ic, dc, 6, "sqeuclidean",
                                precision="highest", impl="pallas_interpret")



def test_kernel_lowers_to_triton_ir(monkeypatch):
  # Interpret mode accepts primitives the GPU lowering lacks (a sort, say):
  # lower the kernel to Triton IR here, with no GPU, by telling JAX's Triton
  # registration it targets an sm_90 card (Triton's own passes do not run).
  # Skipped where that JAX-internal hook moved.
  import types
  try:
    from jax._src.pallas.triton import pallas_call_registration as reg
    reg.gpu_info_lib.get_gpu_info  # noqa: B018
  except (ImportError, AttributeError):
    pytest.skip("JAX's Triton registration has no gpu_info hook here")
  monkeypatch.setattr(reg.gpu_info_lib, "get_gpu_info",
                      lambda: types.SimpleNamespace(compute_capability="9.0"))
  from flashkmeans_jax.ops.assign_topk import pallas_triton
  x = jax.ShapeDtypeStruct((5000, 40), jnp.float32)
  c = jax.ShapeDtypeStruct((700, 40), jnp.float32)
  f = lambda x, c: pallas_triton.flash_assign_topk(  # noqa: E731
      x, c, 8, metric="cosine", precision="F16_F16_F32")
  text = jax.jit(f).trace(x, c).lower(lowering_platforms=("cuda",)).as_text()
  assert "flash_assign_topk" in text
