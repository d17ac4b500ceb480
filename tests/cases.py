"""Test cases shared by the CPU tests (XLA and Pallas interpret) and the GPU
tests (real Pallas lowering), so every implementation meets the same checks."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

import flashkmeans_jax as fk
from tests import helpers

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}
METRICS = ("sqeuclidean", "cosine", "dot")
# Not powers of two on purpose: masks and padding must be right.
ASSIGN_SHAPES = [(1000, 1, 3), (1537, 7, 17), (1000, 100, 96), (513, 513, 1), (257, 33, 200)]


def rtol_for(dtype, precision=None):
  if jnp.dtype(dtype) == jnp.float32:
    return 2e-6 if precision == "highest" else 1e-3  # TF32 on GPU by default
  return 1e-2  # the 16-bit inputs are exact, but their rounding moves the data


def check_assign(impl, n, k, d, dtype, metric, seed=0, precision=None):
  rng = np.random.default_rng(seed)
  x = jnp.asarray(rng.normal(size=(n, d)), dtype)
  c = jnp.asarray(rng.normal(size=(k, d)), dtype)
  labels, dist = fk.assign(x, c, metric=metric, impl=impl, precision=precision)
  assert labels.dtype == jnp.int32 and dist.dtype == jnp.float32
  assert labels.shape == (n,) and dist.shape == (n,)
  # Reference on the values the kernel actually saw (x and c in dtype).
  xn = np.asarray(x.astype(jnp.float32))
  cn = np.asarray(c.astype(jnp.float32))
  tol = rtol_for(dtype, precision)
  helpers.assert_labels_match(xn, cn, labels, metric, rtol=tol, atol=tol, dist=dist,
                              dist_rtol=tol, dist_atol=tol)


HALF_PRECISIONS = ("F16_F16_F32", "BF16_BF16_F32")


def half_inputs(n, k, d, magnitude, seed=0):
  """float32 ``(x [n, d], c [k, d])`` of the given magnitude, with row 1 of x
  1e-3 of the rest and row 2 zero."""
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(n, d)) * magnitude
  x[1] *= 1e-3
  x[2] = 0.0
  c = rng.normal(size=(k, d)) * magnitude
  return jnp.asarray(x, jnp.float32), jnp.asarray(c, jnp.float32)


def check_assign_half(impl, precision, n, k, d, metric, magnitude, seed=0):
  """float32 points on 16-bit operands (``_half_dot``) against float64.

  ``magnitude`` puts the data where float16 cannot hold it unscaled (1e8
  overflows, 1e-8 underflows); one row is 1e-3 of the rest and one is zero, so
  per-row scaling matters. F16 must meet the TF32 tolerance of
  :func:`rtol_for` (same 10 mantissa bits), BF16 that of 16-bit inputs.
  """
  x, c = (np.asarray(a) for a in half_inputs(n, k, d, magnitude, seed))
  labels, dist = fk.assign(jnp.asarray(x), jnp.asarray(c), metric=metric, impl=impl,
                           precision=precision)
  tol = rtol_for(jnp.float32) if precision.startswith("F16") else rtol_for(jnp.bfloat16)
  helpers.assert_labels_match(x, c, labels, metric, rtol=tol, atol=tol, dist=dist,
                              dist_rtol=tol, dist_atol=tol)
  return labels, dist


def check_assign_ties(impl):
  # Duplicate centroids: every point must take the lowest index of equals.
  rng = np.random.default_rng(1)
  base = rng.normal(size=(5, 8)).astype(np.float32)
  c = np.concatenate([base, base, base])  # index j, j+5, j+10 are equal
  x = (base[rng.integers(0, 5, 300)] + 0.01 * rng.normal(size=(300, 8))).astype(np.float32)
  labels, _ = fk.assign(jnp.asarray(x), jnp.asarray(c), impl=impl, precision="highest")
  ref, _, _ = helpers.np_assign(x, base, "sqeuclidean")
  np.testing.assert_array_equal(np.asarray(labels), ref)


def check_assign_config(cfg, interpret):
  """One tiling of the FlashAssign kernel against float64: duplicate centroids
  in the same tile (other columns) and in other tiles (same column), so both
  tie rules of the kernel are exercised, plus a partial last row tile."""
  from flashkmeans_jax.ops.assign import pallas_triton as flash_assign
  rng = np.random.default_rng(5)
  base = rng.normal(size=(5, 40)).astype(np.float32)
  # Copy i of centroid j sits at index 16*i + j (the other rows of each block
  # of 16 are far away): with 16-wide tiles a copy is in the same column of a
  # later tile, with wider tiles also in another column of the same tile.
  blocks = [np.concatenate([base, rng.normal(size=(11, 40)).astype(np.float32) + 5])
            for _ in range(6)]
  c = np.concatenate(blocks + [rng.normal(size=(3, 40)).astype(np.float32) + 5])
  x = np.concatenate([base[rng.integers(0, 5, 150)] + 0.05 * rng.normal(size=(150, 40)),
                      rng.normal(size=(51, 40)) + 5]).astype(np.float32)
  for metric in METRICS:
    labels, dist = flash_assign.flash_assign(jnp.asarray(x), jnp.asarray(c), metric=metric,
                                             config=cfg, interpret=interpret,
                                             precision="highest")
    ref, ref_dist, _ = helpers.np_assign(x, c, metric)
    np.testing.assert_array_equal(np.asarray(labels), ref)
    np.testing.assert_allclose(np.asarray(dist), ref_dist, rtol=1e-4, atol=1e-4)


def check_update_config(cfg, interpret):
  """One tiling of the sort-inverse update against float64: a cluster larger
  than many items, empty clusters, weights and a NaN row (weight 0)."""
  from flashkmeans_jax.ops.cluster_sums import pallas_triton as sorted_update
  from flashkmeans_jax.ops.cluster_sums import sort as label_sort
  rng = np.random.default_rng(6)
  n, d, k = 2500, 40, 30
  x = rng.normal(size=(n, d)).astype(np.float32)
  x[17, 3] = np.nan
  labels = rng.integers(0, 10, n).astype(np.int32)
  labels[: n // 2] = 4
  w = rng.random(n).astype(np.float32)
  sums, counts = sorted_update.sorted_cluster_sums(jnp.asarray(x), jnp.asarray(labels), k,
                                                   weights=jnp.asarray(w), config=cfg,
                                                   interpret=interpret)
  ok = np.isfinite(x).all(1)
  wn = np.where(ok, w, 0.0).astype(np.float64)
  ref = np.zeros((k, d))
  np.add.at(ref, labels[ok], x[ok].astype(np.float64) * wn[ok, None])
  np.testing.assert_allclose(np.asarray(sums), ref, rtol=1e-5, atol=1e-4)
  np.testing.assert_allclose(np.asarray(counts), np.bincount(labels, wn, k), rtol=1e-5,
                             atol=1e-4)


def check_stable_label_sort(labels, k):
  """``sort_by_label`` against NumPy's stable argsort, for ``labels [N]``, or
  under ``vmap`` for ``labels [B, N]``."""
  from flashkmeans_jax.ops.cluster_sums import pallas_triton as sorted_update
  from flashkmeans_jax.ops.cluster_sums import sort as label_sort
  labels = np.asarray(labels, np.int32)
  sort = lambda l: label_sort.sort_by_label(l, k)  # noqa: E731
  perm, sorted_labels = (sort if labels.ndim == 1 else jax.vmap(sort))(jnp.asarray(labels))
  assert perm.dtype == jnp.int32 and sorted_labels.dtype == jnp.int32
  for row, p, sl in zip(labels.reshape(-1, labels.shape[-1]),
                        np.asarray(perm).reshape(-1, labels.shape[-1]),
                        np.asarray(sorted_labels).reshape(-1, labels.shape[-1])):
    expect = np.argsort(row, kind="stable")
    np.testing.assert_array_equal(p, expect)
    np.testing.assert_array_equal(sl, row[expect])


def check_update(impl, n, k, d, dtype, weighted, seed=0):
  rng = np.random.default_rng(seed)
  x = jnp.asarray(rng.normal(size=(n, d)), dtype)
  labels = jnp.asarray(rng.integers(0, k, n), jnp.int32)
  w = jnp.asarray(rng.random(n), jnp.float32) if weighted else None
  sums, counts = fk.cluster_sums(x, labels, k, weights=w, impl=impl)
  xf = np.asarray(x.astype(jnp.float32), np.float64)
  wn = np.ones(n) if w is None else np.asarray(w, np.float64)
  ref_sums = np.zeros((k, d))
  np.add.at(ref_sums, np.asarray(labels), xf * wn[:, None])
  ref_counts = np.bincount(np.asarray(labels), weights=wn, minlength=k)
  np.testing.assert_allclose(np.asarray(sums), ref_sums, rtol=1e-5, atol=1e-4)
  np.testing.assert_allclose(np.asarray(counts), ref_counts, rtol=1e-5, atol=1e-4)
  prev = jnp.asarray(rng.normal(size=(k, d)), dtype)
  cent, cnt = fk.update(x, labels, prev, weights=w, impl=impl)
  has = ref_counts > 0
  expect = np.where(has[:, None], ref_sums / np.where(has, ref_counts, 1)[:, None],
                    np.asarray(prev.astype(jnp.float32)))
  tol = 1e-5 if jnp.dtype(dtype) == jnp.float32 else 1e-2
  np.testing.assert_allclose(np.asarray(cent.astype(jnp.float32)), expect, rtol=tol, atol=tol)


def check_update_skewed(impl):
  # One cluster holds almost every point (it spans many work items) and most
  # clusters are empty: the work list and the keep policy must both hold.
  rng = np.random.default_rng(3)
  n, d, k = 3000, 24, 50
  x = jnp.asarray(rng.normal(size=(n, d)), jnp.float32)
  labels = np.full(n, 7, np.int32)
  labels[:10] = 3
  labels[10:12] = 49
  prev = jnp.asarray(rng.normal(size=(k, d)), jnp.float32)
  cent, counts = fk.update(x, jnp.asarray(labels), prev, impl=impl)
  xn = np.asarray(x)
  np.testing.assert_allclose(np.asarray(cent)[7], xn[12:].mean(0), rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(np.asarray(cent)[3], xn[:10].mean(0), rtol=1e-5, atol=1e-6)
  empty = np.setdiff1d(np.arange(k), [3, 7, 49])
  np.testing.assert_array_equal(np.asarray(cent)[empty], np.asarray(prev)[empty])
  assert float(counts[7]) == n - 12 and float(counts[0]) == 0


def check_vmap_assign(impl):
  rng = np.random.default_rng(4)
  x = jnp.asarray(rng.normal(size=(3, 300, 20)), jnp.float32)
  c = jnp.asarray(rng.normal(size=(3, 9, 20)), jnp.float32)
  f = lambda x, c: fk.assign(x, c, impl=impl, precision="highest")
  lb, db = jax.jit(jax.vmap(f))(x, c)
  for b in range(3):
    l1, d1 = f(x[b], c[b])
    np.testing.assert_array_equal(np.asarray(lb[b]), np.asarray(l1))
    np.testing.assert_allclose(np.asarray(db[b]), np.asarray(d1), rtol=1e-6, atol=1e-5)
  # vmap over centroids only (x shared), as n_init does.
  lc, _ = jax.vmap(lambda c: f(x[0], c))(c)
  for b in range(3):
    np.testing.assert_array_equal(np.asarray(lc[b]), np.asarray(f(x[0], c[b])[0]))


def check_vmap_update(impl):
  rng = np.random.default_rng(5)
  x = jnp.asarray(rng.normal(size=(3, 400, 12)), jnp.float32)
  lab = jnp.asarray(rng.integers(0, 6, (3, 400)), jnp.int32)
  s, c = jax.jit(jax.vmap(lambda x, l: fk.cluster_sums(x, l, 6, impl=impl)))(x, lab)
  for b in range(3):
    s1, c1 = fk.cluster_sums(x[b], lab[b], 6, impl="xla")
    np.testing.assert_allclose(np.asarray(s[b]), np.asarray(s1), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(c[b]), np.asarray(c1))


def check_grad(impl, metric):
  rng = np.random.default_rng(6)
  x = jnp.asarray(rng.normal(size=(64, 5)), jnp.float32)
  c = jnp.asarray(rng.normal(size=(4, 5)), jnp.float32)
  loss = lambda x, c, impl: jnp.sum(fk.assign(x, c, metric=metric, impl=impl,
                                              precision="highest")[1] ** 2)
  gx, gc = jax.grad(loss, argnums=(0, 1))(x, c, impl)
  # Against the XLA path and against finite differences of the distances to
  # the (fixed) chosen centroids.
  gx_ref, gc_ref = jax.grad(loss, argnums=(0, 1))(x, c, "xla")
  np.testing.assert_allclose(np.asarray(gx), np.asarray(gx_ref), rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(np.asarray(gc), np.asarray(gc_ref), rtol=1e-5, atol=1e-5)
  labels = np.asarray(fk.assign(x, c, impl=impl, metric=metric, precision="highest")[0])
  x64, c64 = np.asarray(x, np.float64), np.asarray(c, np.float64)

  def f(x64, c64):
    return float((helpers.np_distances(x64, c64, metric)[np.arange(64), labels] ** 2).sum())

  eps = 1e-5
  for (i, j) in [(0, 0), (10, 3), (63, 4)]:
    xp, xm = x64.copy(), x64.copy()
    xp[i, j] += eps
    xm[i, j] -= eps
    np.testing.assert_allclose(float(gx[i, j]), (f(xp, c64) - f(xm, c64)) / (2 * eps),
                               rtol=1e-3, atol=1e-3)
  for (i, j) in [(0, 0), (3, 2)]:
    cp, cm = c64.copy(), c64.copy()
    cp[i, j] += eps
    cm[i, j] -= eps
    np.testing.assert_allclose(float(gc[i, j]), (f(x64, cp) - f(x64, cm)) / (2 * eps),
                               rtol=1e-3, atol=1e-3)


def check_kmeans_matches_xla(impl, dtype=jnp.float32):
  rng = np.random.default_rng(7)
  x, centers, _ = helpers.make_blobs(rng, 2000, 16, 10)
  x = jnp.asarray(x, dtype)
  init = x[:10]
  a = fk.kmeans(jax.random.key(0), x, 10, init=init, impl=impl, precision="highest",
                max_iter=50)
  b = fk.kmeans(jax.random.key(0), x, 10, init=init, impl="xla", precision="highest",
                max_iter=50)
  np.testing.assert_array_equal(np.asarray(a.labels), np.asarray(b.labels))
  np.testing.assert_allclose(np.asarray(a.centroids.astype(jnp.float32)),
                             np.asarray(b.centroids.astype(jnp.float32)), rtol=1e-4, atol=1e-4)
  assert int(a.n_iter) == int(b.n_iter)
  np.testing.assert_allclose(float(a.inertia), float(b.inertia), rtol=1e-5)
