"""The top-k assignment check, shared by the CPU tests (XLA and Pallas
interpret, tests/test_assign_topk.py) and the GPU tests
(tests/gpu/test_topk_gpu.py).

Against a float64 NumPy sort of the distances of the operands the dot really
sees (:func:`tests.helpers.assign_operands`), under the float32 bounds of
:func:`tests.cases.assign_bound`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

import flashkmeans_jax as fk
from tests import cases, helpers


def _smallest_k(d, k):
  """The first k of ``argsort(d, kind="stable")`` along the last axis; for
  k < K by a partition, then a (value, index) sort of the k (the partition
  may pick another of several exactly equal k-th values, a gap of 0 that
  the check's near-tie rule accepts anyway)."""
  if k >= d.shape[-1]:
    return np.argsort(d, axis=-1, kind="stable")[..., :k]
  part = np.argpartition(d, k - 1, axis=-1)[..., :k]
  part = np.sort(part, axis=-1)  # index order first, so the stable sort breaks ties by index
  vals = np.take_along_axis(d, part, -1)
  return np.take_along_axis(part, np.argsort(vals, axis=-1, kind="stable"), -1)


def check_topk_result(x, c, idx, dist, k: int, metric: str, *, precision=None,
                      impl: str = "xla") -> None:
  """Raises ``AssertionError`` unless ``idx [..., N, k]`` / ``dist [..., N, k]``
  are what a correct top-k can return for ``x [..., N, D]``, ``c [..., K, D]``.

  * every row holds k distinct centroids in ``[0, K)``, ``dist`` is
    non-decreasing along it and each entry is within the float32 bound of
    the float64 distance to its centroid;
  * slot j holds the float64 sort's j-th centroid (``argsort``, stable: ties
    to the lower index; :func:`_smallest_k`), or a centroid whose float64 distance differs from
    the j-th smallest by no more than twice the row's largest bound: any
    perturbation of every distance by at most B moves each order statistic
    by at most B, so only such near-ties may be ordered otherwise.
  """
  x = jnp.asarray(x)
  idx = np.asarray(idx)
  dist = np.asarray(dist)
  n, d, kk = x.shape[-2], x.shape[-1], np.shape(c)[-2]
  assert idx.dtype == np.int32 and dist.dtype == np.float32, (idx.dtype, dist.dtype)
  assert idx.shape == x.shape[:-1] + (k,) and dist.shape == idx.shape, (idx.shape, dist.shape)
  assert idx.min() >= 0 and idx.max() < kk, (idx.min(), idx.max(), kk)
  srt = np.sort(idx, axis=-1)
  assert np.all(srt[..., 1:] != srt[..., :-1]), "a centroid appears twice in a row"
  assert np.all(np.diff(dist, axis=-1) >= 0), "distances not ascending"
  accuracy = cases.dot_accuracy(x.dtype, precision, impl)
  xd, cd, xsq, csq = helpers.assign_operands(x, c, metric, precision)
  take = lambda a, i: np.take_along_axis(a, i, -1)  # noqa: E731
  bad_idx = bad_dist = 0
  examples = []
  for rows in helpers.row_blocks(n, kk):
    dref, terms = helpers.assign_terms(xd[..., rows, :], cd, xsq[..., rows], csq, metric)
    bound = cases.assign_bound(terms, d, accuracy)
    order = _smallest_k(dref, k)
    got = idx[..., rows, :]
    got_d = take(dref, got)
    want_d = take(dref, order)
    row_bound = bound.max(-1, keepdims=True)
    wrong = (got != order) & ~(np.abs(got_d - want_d) <= 2 * row_bound)
    off = ~(np.abs(dist[..., rows, :].astype(np.float64) - got_d) <= take(bound, got))
    bad_idx += int(wrong.sum())
    bad_dist += int(off.sum())
    for i in np.argwhere(wrong | off)[:3]:
      i = tuple(i)
      examples.append(f"point {i[:-1]} slot {i[-1]}: centroid {got[i]} (float64 sort "
                      f"{order[i]}, gap {got_d[i] - want_d[i]:.3g}), dist "
                      f"{dist[..., rows, :][i]!r} vs {got_d[i]!r}")
  assert bad_idx == 0 and bad_dist == 0, (
      f"{metric} k={k}: {bad_idx} entries beyond a float32 near-tie and {bad_dist} "
      f"distances beyond the bound, of {idx.size}; " + "; ".join(examples[:5]))


def topk_inputs(n, kk, d, dtype, seed=0):
  rng = np.random.default_rng(seed)
  x = jnp.asarray(rng.normal(size=(n, d)), dtype)
  c = jnp.asarray(rng.normal(size=(kk, d)), dtype)
  return x, c


def check_topk(impl, n, kk, d, dtype, metric, k, *, precision="highest", seed=0, config=None):
  x, c = topk_inputs(n, kk, d, dtype, seed)
  idx, dist = fk.assign_topk(x, c, k, metric=metric, impl=impl, precision=precision,
                             config=config)
  check_topk_result(x, c, idx, dist, k, metric, precision=precision, impl=impl)
  return idx, dist


def check_topk_ties(impl, k=8, config=None, fn=None):
  """Duplicated centroids (35 of them, 5 copies of 7, each 7 apart: with
  tiles of 8 or 16 centroids equal ones sit in one tile and across tiles):
  every group of equals must come out in increasing index, exactly. ``fn(x,
  c, k)`` replaces the public call (e.g. the XLA path with small tiles)."""
  rng = np.random.default_rng(1)
  base = rng.normal(size=(7, 8)).astype(np.float32)
  c = np.concatenate([base] * 5)  # centroid j, j+7, j+14, ... are equal
  x = (base[rng.integers(0, 7, 200)] + 0.01 * rng.normal(size=(200, 8))).astype(np.float32)
  if fn is None:
    fn = lambda x, c, k: fk.assign_topk(x, c, k, impl=impl, precision="highest",  # noqa: E731
                                        config=config)
  idx, dist = fn(jnp.asarray(x), jnp.asarray(c), k)
  idx = np.asarray(idx)
  d64 = helpers.np_distances(x, c, "sqeuclidean")
  want = np.argsort(d64, axis=1, kind="stable")[:, :k]
  # The five copies of one centroid are at one float64 distance: exactly the
  # stable sort's order, whatever the float32 rounding (equal operands).
  np.testing.assert_array_equal(idx, want)
  check_topk_result(x, c, idx, dist, k, "sqeuclidean", precision="highest", impl=impl)
  # All 35 centroids equal: ties inside every tile and at the k-th place of
  # every list; the answer is 0..k-1 for every point.
  same, _ = fn(jnp.asarray(x), jnp.broadcast_to(jnp.asarray(base[:1]), c.shape), k)
  np.testing.assert_array_equal(np.asarray(same), np.broadcast_to(np.arange(k), (len(x), k)))


def check_unusable_and_nonfinite(impl, n=41):
  """Inside jit non-finite centroids are not refused: with fewer usable
  centroids than k they fill the end of every list, lowest index first, at
  distance +inf. A non-finite point (the last) gets centroids 0..k-1 at
  distance NaN."""
  x, c = topk_inputs(n, 6, 5, jnp.float32)
  c = c.at[1, 2].set(jnp.nan).at[4, 0].set(jnp.inf)
  x = x.at[n - 1, 3].set(jnp.nan)
  idx, dist = jax.jit(lambda x, c: fk.assign_topk(x, c, 6, impl=impl))(x, c)
  np.testing.assert_array_equal(np.asarray(idx[n - 1]), np.arange(6))
  assert np.isnan(np.asarray(dist)[n - 1]).all()
  idx, dist, x = np.asarray(idx)[:n - 1], dist[:n - 1], x[:n - 1]
  np.testing.assert_array_equal(idx[:, 4:], np.broadcast_to([1, 4], (n - 1, 2)))
  assert np.isinf(np.asarray(dist)[:, 4:]).all()
  ok = np.array([0, 2, 3, 5])
  check_topk_result(x, c[ok], np.searchsorted(ok, idx[:, :4]).astype(np.int32), dist[:, :4],
                    4, "sqeuclidean", impl=impl)
