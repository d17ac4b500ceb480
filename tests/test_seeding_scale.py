"""Seeding that scales: greedy k-means++ and k-means|| against their
published definitions (as exact distributions on tiny data), and the
training sample of ``max_points_per_centroid``."""


import jax
import jax.numpy as jnp
import numpy as np
import pytest

import flashkmeans_jax as fk
from flashkmeans_jax.lloyd import recluster
from flashkmeans_jax.lloyd import seeding
from tests import helpers

HI = jax.lax.Precision.HIGHEST
X5 = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0], [3.0, 3.0], [-2.0, 1.0]], np.float32)
W5 = np.array([1.0, 2.0, 0.5, 1.0, 1.5], np.float32)
N_KEYS = 4000


def _chi2_ok(counts, probs, n):
  """Pearson's statistic below the 0.999 quantile bound (Wilson-Hilferty)."""
  keep = probs > 0
  assert counts[~keep].sum() == 0, counts  # impossible outcomes never drawn
  e = n * probs[keep]
  stat = ((counts[keep] - e) ** 2 / e).sum()
  dof = keep.sum() - 1
  bound = dof * (1 - 2 / (9 * dof) + 3.09 * np.sqrt(2 / (9 * dof))) ** 3
  return stat <= bound, (stat, bound)


def _pair_probs(trials, replacement=True):
  """Exact P(first = i, second = j) of greedy k-means++ with k=2 on X5/W5:
  first ~ w; then ``trials`` draws ~ w * D^2 (with or, for two trials,
  without replacement) and the one of lowest potential (the earlier draw on
  ties)."""
  x, w = X5.astype(np.float64), W5.astype(np.float64)
  n = len(x)
  d2 = ((x[:, None] - x[None]) ** 2).sum(-1)
  out = np.zeros((n, n))
  for i in range(n):
    p = w * d2[i] / (w * d2[i]).sum()
    pot = np.array([(w * np.minimum(d2[i], d2[j])).sum() for j in range(n)])
    if trials == 1:
      out[i] = w[i] / w.sum() * p
      continue
    for a in range(n):
      for b in range(n):
        if replacement:
          pab = p[a] * p[b]
        elif a != b and p[a] < 1:
          pab = p[a] * p[b] / (1 - p[a])
        else:
          continue
        best = a if pot[a] <= pot[b] else b
        out[i, best] += w[i] / w.sum() * pab
  return out


def _pair_counts(seeds):
  """Counts of (first, second) seed over the keys' ``[keys, 2, D]`` seeds."""
  idx = (np.asarray(seeds)[:, :, None, :] == X5[None, None]).all(-1).argmax(-1)
  counts = np.zeros((5, 5))
  np.add.at(counts, (idx[:, 0], idx[:, 1]), 1)
  return counts


@pytest.mark.parametrize("trials", [pytest.param(1, marks=pytest.mark.slow), 2])
def test_greedy_kmeans_plusplus_draws_match_the_definition(trials):
  seeds = jax.jit(jax.vmap(lambda key: seeding.init_kmeans_plusplus(
      key, jnp.asarray(X5), 2, jnp.asarray(W5), n_local_trials=trials, precision=HI)))(
          jax.random.split(jax.random.key(0), N_KEYS))
  ok, detail = _chi2_ok(_pair_counts(seeds).ravel(), _pair_probs(trials).ravel(), N_KEYS)
  assert ok, detail


def test_kmeans_parallel_round_sizes_and_weights():
  # One round from a known first centre: point i joins with probability
  # min(1, l * w_i D_i^2 / phi); the expected candidate count is their sum.
  x, w = jnp.asarray(X5), jnp.asarray(W5)
  fn = jax.jit(jax.vmap(lambda key: seeding.parallel_candidates(
      key, x, 1, w, oversampling_factor=1.5, rounds=1, precision=HI)))
  cand, cw = fn(jax.random.split(jax.random.key(2), N_KEYS))
  cand, cw = np.asarray(cand), np.asarray(cw)
  assert cand.shape[1] == 1 + seeding.round_capacity(1.5, 5)
  held = cw > 0
  first = (cand[:, 0][:, None] == X5[None]).all(-1).argmax(-1)
  xd, wd = X5.astype(np.float64), W5.astype(np.float64)
  d2 = ((xd[:, None] - xd[None]) ** 2).sum(-1)
  expect = []
  for i in range(5):
    p = np.minimum(1.0, 1.5 * wd * d2[i] / (wd * d2[i]).sum())
    expect.append(p.sum())
  got = held.sum(1) - 1  # drawn in the round
  mean_expect = np.array(expect)[first]
  # Sum of Bernoullis: variance <= mean; 5 standard errors.
  assert abs(got.mean() - mean_expect.mean()) <= 5 * np.sqrt(mean_expect.mean() / N_KEYS)
  # Every candidate weighs what its nearest points weigh; the total is sum(w).
  np.testing.assert_allclose(cw.sum(1), W5.sum(), rtol=1e-5)


@pytest.fixture(scope="module")
def blobs():
  x, centers, _ = helpers.make_blobs(np.random.default_rng(4), 600, 4, 12, spread=40.0)
  return jnp.asarray(x), centers


def test_kmeans_parallel_finds_every_blob(blobs):
  x, centers = blobs
  r = fk.kmeans(jax.random.key(0), x, 12, init="k-means||", max_iter=20, tol=0.0,
                impl="xla", precision="highest")
  nearest = ((np.asarray(r.centroids)[:, None] - centers[None]) ** 2).sum(-1).argmin(1)
  assert sorted(nearest.tolist()) == list(range(12))


def test_kmeans_parallel_lloyd_recluster(blobs, monkeypatch):
  """The recluster used when greedy k-means++ on the candidates would be too
  much work (large k): forced here by a zero work limit. The seeds alone
  sit one per blob (12 seeds in 32 rounds: one seed per round, so greedy
  k-means++ on the candidates here; at large k each round chooses k / 32)."""
  x, centers = blobs
  assert recluster.greedy_recluster(12, 500, 4, None)
  monkeypatch.setattr(recluster, "GREEDY_RECLUSTER_MAX_WORK", 0)
  assert not recluster.greedy_recluster(12, 500, 4, None)
  seed = jax.jit(lambda key: seeding.init_kmeans_parallel(key, x, 12, precision=HI))
  for s in range(3):
    c = seed(jax.random.key(s))
    assert c.shape == (12, 4) and bool(jnp.all(jnp.isfinite(c)))
    nearest = ((np.asarray(c)[:, None] - centers[None]) ** 2).sum(-1).argmin(1)
    assert sorted(nearest.tolist()) == list(range(12)), nearest
  # Distinct candidates: the first batch is a weighted draw without
  # replacement, later ones never draw a candidate sitting on a seed.
  cand = jnp.asarray(np.random.default_rng(0).normal(size=(40, 3)), jnp.float32)
  seeds = recluster.recluster_batched(jax.random.key(1), cand, jnp.ones(40), 40,
                                    precision=HI)
  assert len({tuple(r) for r in np.asarray(seeds).tolist()}) == 40


def test_recluster_batched_one_seed_per_round_is_greedy_kmeans_plusplus():
  """With one slot per round there is no rejection: each round is a step of
  greedy k-means++ whose trials are drawn without replacement."""
  seeds = jax.jit(jax.vmap(lambda key: recluster.recluster_batched(
      key, jnp.asarray(X5), jnp.asarray(W5), 2, rounds=2, n_local_trials=2,
      precision=HI)))(jax.random.split(jax.random.key(3), N_KEYS))
  ok, detail = _chi2_ok(_pair_counts(seeds).ravel(),
                        _pair_probs(2, replacement=False).ravel(), N_KEYS)
  assert ok, detail


def test_recluster_batched_rounds_of_many_seeds_find_every_blob():
  """12 seeds per round on 48 separated blobs: the gains and the rejection
  keep two seeds of one round out of one blob (plain batched D^2 draws
  found 36-40 of the 48 here)."""
  x, centers, _ = helpers.make_blobs(np.random.default_rng(5), 48 * 30, 4, 48, spread=40.0)
  x = jnp.asarray(x)
  @jax.jit
  def seed(kc, kr):
    cand, cw = seeding.parallel_candidates(kc, x, 48, precision=HI)
    return cand, cw, recluster.recluster_batched(kr, cand, cw, 48, rounds=4, precision=HI)

  for s in range(4):
    cand, cw, c = seed(jax.random.key(s), jax.random.key(100 + s))
    assert bool(jnp.all(jnp.isfinite(c)))
    # Every seed is a candidate (as greedy k-means++ leaves them): averaging
    # candidates afterwards cost inertia on structureless data.
    held = np.asarray(cand)[np.asarray(cw) > 0]
    assert (np.asarray(c)[:, None] == held[None]).all(-1).any(1).all()
    nearest = ((np.asarray(c)[:, None] - centers[None]) ** 2).sum(-1).argmin(1)
    assert len(set(nearest.tolist())) >= 47, (s, sorted(nearest.tolist()))


def test_recluster_batched_fewer_candidates_than_seeds():
  cand = jnp.asarray(np.random.default_rng(1).normal(size=(5, 3)), jnp.float32)
  seeds = jax.jit(lambda key: recluster.recluster_batched(key, cand, jnp.ones(5), 8,
                                                          precision=HI))(jax.random.key(0))
  assert seeds.shape == (8, 3) and bool(jnp.all(jnp.isfinite(seeds)))
  # Every candidate becomes a seed; the open slots are zero rows.
  got = {tuple(r) for r in np.asarray(seeds).round(6).tolist()}
  assert {tuple(r) for r in np.asarray(cand).round(6).tolist()} <= got


@pytest.mark.slow
def test_kmeans_parallel_no_worse_than_kmeans_plusplus(blobs):
  x, _ = blobs
  kw = dict(max_iter=20, tol=0.0, impl="xla", precision="highest")
  par = fk.kmeans(jax.random.key(0), x, 12, init="k-means||", **kw)
  pp = fk.kmeans(jax.random.key(0), x, 12, init="k-means++", **kw)
  assert float(par.inertia) <= float(pp.inertia) * (1 + 1e-5), (par.inertia, pp.inertia)


def test_max_points_per_centroid_trains_on_a_sample(blobs):
  x, centers = blobs
  kw = dict(max_iter=20, impl="xla", precision="highest")
  r = fk.kmeans(jax.random.key(0), x, 12, max_points_per_centroid=20, **kw)
  # Labels and inertia are of all 600 points for the returned centroids.
  xd, c = np.asarray(x, np.float64), np.asarray(r.centroids, np.float64)
  d2 = ((xd[:, None] - c[None]) ** 2).sum(-1)
  np.testing.assert_array_equal(d2.argmin(1), np.asarray(r.labels))
  np.testing.assert_allclose(float(r.inertia), d2.min(1).sum(), rtol=1e-4)
  nearest = ((np.asarray(r.centroids)[:, None] - centers[None]) ** 2).sum(-1).argmin(1)
  assert sorted(nearest.tolist()) == list(range(12))
  # The history is of the 240-point sample: about 240/600 of the inertia of
  # all points (the same centroids' cost over 40 % of the points).
  hist = np.asarray(r.inertia_history)
  last = hist[np.isfinite(hist)][-1]
  assert 0.25 * float(r.inertia) < last < 0.6 * float(r.inertia), (last, r.inertia)
  with pytest.raises(ValueError, match="max_points_per_centroid must be >= 1"):
    fk.kmeans(jax.random.key(0), x, 12, max_points_per_centroid=0)
  with pytest.raises(ValueError, match="oversampling_factor must be a finite number > 0"):
    fk.kmeans(jax.random.key(0), x, 12, init="k-means||", oversampling_factor=-1.0)
