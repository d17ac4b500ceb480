"""Adversarial data and float64 checks of the certified float32 assignment,
shared by tests/test_certified.py (XLA, interpret) and tests/gpu/.

Exact scores are ``S_k = b_k - x . c_k`` in float64 on the float32 inputs
(:mod:`flashkmeans_jax.ops.assign.bound`): the float64 distances are
``||x||^2 + 2 S_k`` (sqeuclidean), ``1 + S_k / ||x||`` (cosine) and ``S_k``
(dot), so their argmin is the argmin of ``S``.
"""

from __future__ import annotations

import numpy as np

import flashkmeans_jax as fk
from flashkmeans_jax.api import ops as ops_api

MARGINS = (1e-3, 1e-4, 1e-5, 1e-6, 1e-7)
# Per margin: this many points, each between its own pair of centroids.
PER_MARGIN = 3


def exact_scores(x, c, metric: str) -> np.ndarray:
  """float64 ``[N, K]`` exact scores of float32 ``x``, ``c``."""
  x = np.asarray(x, np.float64)
  c = np.asarray(c, np.float64)
  if metric == "sqeuclidean":
    return 0.5 * (c * c).sum(1)[None, :] - x @ c.T
  if metric == "cosine":
    n = np.linalg.norm(c, axis=1)
    u = c / np.where(n > 0, n, 1.0)[:, None]
    return -(x @ u.T)
  return -(x @ c.T)


def _reflect_orthogonal(rng, a, v):
  """``a`` reflected across a random hyperplane containing ``v`` (keeps
  ``a . v`` and ``||a||``; the identity for D = 1)."""
  w = rng.normal(size=a.shape)
  w -= (w @ v) / max(v @ v, 1e-300) * v
  nw = w @ w
  if a.shape[0] == 1 or nw == 0:
    return a.copy()
  return a - 2.0 * (a @ w) / nw * w


def near_ties(rng, d: int, magnitude: float, metric: str, k_extra: int = 2):
  """``(x float32[N, D], c float32[K, D])``: for every margin r in
  :data:`MARGINS`, points with two centroids whose exact distances differ by
  about r relative, plus farther distractors and two zero rows, all of size
  ``magnitude``."""
  xs, cs = [], []
  for r in MARGINS:
    for _ in range(PER_MARGIN):
      x = rng.normal(size=d)
      c1 = x + rng.normal(size=d) * 0.5
      if metric == "sqeuclidean":
        # Point reflection through x, stretched: |x - c2|^2 = (1 + r)|x - c1|^2.
        c2 = x - (c1 - x) * np.sqrt(1.0 + r)
      else:
        # Same dot with x, then moved off by r of it.
        c2 = _reflect_orthogonal(rng, c1, x) - r * (x @ c1) / (x @ x) * x
      order = rng.permutation(2)
      xs.append(x)
      cs.extend([(c1, c2)[order[0]], (c1, c2)[order[1]]])
  x = np.stack(xs + [np.zeros(d), np.zeros(d)])
  far = [rng.normal(size=d) * 4.0 for _ in range(k_extra)]
  if metric == "dot":
    far = [-f for f in far]
  c = np.stack(cs + far)
  return (x * magnitude).astype(np.float32), (c * magnitude).astype(np.float32)


def check_certified_labels(x, c, labels, metric: str, impl: str, tie=None) -> dict:
  """Every label is the float64 argmin unless its exact score is within the
  stated tie width of the best (:func:`flashkmeans_jax.ops.assign.certified.
  tie_bound`, from :func:`flashkmeans_jax.api.ops.certification`). Returns
  counts: ``strict`` points whose float64 gap to the runner-up exceeds the
  tie width (their label must be exact), ``wrong_fast`` of those the fast
  pass got wrong."""
  s = exact_scores(x, c, metric)
  labels = np.asarray(labels)
  best = s.min(1)
  rows = np.arange(len(labels))
  if tie is None:
    tie = np.asarray(ops_api.certification(x, c, metric=metric, impl=impl).tie, np.float64)
  # float64's own rounding of S, far below any float32 width.
  slack = 1e-12 * (np.abs(s).max(1) + 1e-300)
  gap = s[rows, labels] - best
  bad = gap > tie + slack
  assert not bad.any(), (
      f"{bad.sum()} labels off the float64 argmin beyond the tie width: rows "
      f"{np.nonzero(bad)[0][:8]}, gaps {gap[bad][:4]}, ties {tie[bad][:4]}")
  part = np.sort(s, axis=1)
  second = part[:, 1] if s.shape[1] > 1 else np.full(len(s), np.inf)
  strict = (second - best) > tie + slack
  np.testing.assert_array_equal(labels[strict], s.argmin(1)[strict])
  return {"strict": int(strict.sum())}


def fast_wrong(x, c, metric: str, impl: str, precision) -> int:
  """Labels of the plain (uncertified) fast pass off the float64 argmin
  (shows the adversarial data can break an unchecked assignment)."""
  labels = np.asarray(fk.assign(x, c, metric=metric, impl=impl, precision=precision)[0])
  s = exact_scores(x, c, metric)
  return int((s[np.arange(len(labels)), labels] > s.min(1)).sum())


def lloyd_vs_sklearn(x, init, *, impl: str, precision: str = "certified", max_iter: int = 60,
                     chained: bool = False):
  """Lloyd's loop of :func:`flashkmeans_jax.kmeans` against scikit-learn's
  (float64, the same float32 data and initial centroids), one iteration count
  at a time, up to the first iteration whose labels differ or to both runs'
  convergence.

  Where they differ, every differing point must be a proven tie: our
  centroids are float32 means, scikit-learn's float64 ones, at most ``delta``
  apart (checked against the float32 rounding of a mean, a few eps of the
  data's magnitude), and moving a centroid by ``delta`` moves a distance by
  at most ``2 ||x - c|| delta + delta^2``; so a label may differ only where the
  float64 gap between the two clusters' distances (to our centroids) is below
  twice that plus the stated tie width of the assignment (our labels are
  checked to be the float64 argmin of our centroids up to that width).
  Returns ``(iterations compared, labels differing at the end)``.

  ``chained``: iteration count ``it`` is one ``max_iter=1`` call from the
  centroids of count ``it - 1`` (one compiled program instead of one per
  count; the loop body is the same); at the end one ``max_iter=it`` call of
  the loop must give the chain's centroids, labels and per-iteration
  inertias bit for bit, so the comparison is still of the loop's iterates.
  """
  import warnings

  import jax
  import jax.numpy as jnp
  from sklearn.cluster import KMeans

  x64 = np.asarray(x, np.float64)
  k = init.shape[0]
  scale = float(np.abs(x64).max())
  def run(start, n):
    return fk.kmeans(jax.random.key(0), jnp.asarray(x), k, init=jnp.asarray(start),
                     max_iter=n, tol=0.0, impl=impl, precision=precision, empty="farthest")

  def same_as_loop(it, r, history):
    # The chain's iterate `it` is the loop's, bit for bit (centroids, labels
    # and the inertia of every iteration up to where the loop stopped).
    if not chained:
      return
    loop = run(init, it)
    n = int(loop.n_iter)
    np.testing.assert_array_equal(np.asarray(loop.centroids), np.asarray(r.centroids))
    np.testing.assert_array_equal(np.asarray(loop.labels), np.asarray(r.labels))
    np.testing.assert_array_equal(np.asarray(loop.inertia_history)[:n], history[:n])
    assert bool(loop.converged) == fixed, (it, n, fixed)

  start, history, fixed = init, [], False
  for it in range(1, max_iter + 1):
    with warnings.catch_warnings():
      warnings.simplefilter("ignore")  # ConvergenceWarning at small max_iter
      sk = KMeans(k, init=np.asarray(init, np.float64), n_init=1, max_iter=it, tol=0.0,
                  algorithm="lloyd").fit(x64)
    if chained:
      r = run(start, 1)
      start = r.centroids
      history.append(np.asarray(r.inertia_history)[0])
      fixed = fixed or bool(r.converged)  # the loop stops at its first fixed point
      converged = fixed
    else:
      r = run(init, it)
      converged = bool(r.converged)
    ours = np.asarray(r.labels)
    c = np.asarray(r.centroids, np.float64)
    diff = np.flatnonzero(ours != sk.labels_)
    if diff.size:
      # scikit-learn's labels at `it` are from its centroids after `it` updates
      # (its final E-step), as ours are: compare with the final centroids.
      delta = float(np.sqrt(((c - sk.cluster_centers_) ** 2).sum(1)).max())
      assert delta <= 64 * np.finfo(np.float32).eps * scale, (it, delta, scale)
      # Our labels are the float64 argmin of our centroids up to the stated
      # tie width (the expanded distance's float32 resolution).
      cert = ops_api.certification(jnp.asarray(x), jnp.asarray(c, np.float32), impl=impl)
      check_certified_labels(x, c.astype(np.float32), ours, "sqeuclidean", impl,
                             tie=np.asarray(cert.tie, np.float64))
      xd = x64[diff]
      da = np.sqrt(((xd - c[ours[diff]]) ** 2).sum(1))
      db = np.sqrt(((xd - c[sk.labels_[diff]]) ** 2).sum(1))
      gap = np.abs(da ** 2 - db ** 2)
      allowed = (2.0 * (2.0 * np.maximum(da, db) * delta + delta ** 2)
                 + 2.0 * np.asarray(cert.tie, np.float64)[diff])
      assert np.all(gap <= allowed), (it, diff[gap > allowed], gap, allowed)
      same_as_loop(it, r, np.asarray(history))
      return it, diff.size
    if converged and sk.n_iter_ < it:
      same_as_loop(it, r, np.asarray(history))
      return it, 0
  same_as_loop(max_iter, r, np.asarray(history))
  return max_iter, 0
