"""Row buckets: a new number of rows in a seen bucket reuses the compiled
programs, and the padded rows change no result; no growth of memory maps or
resident memory over a thousand eager calls."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import flashkmeans_jax as fk
from flashkmeans_jax.estimator import KMeans, bucket_rows, rows
from tests.test_compile_cache import count_compiles

os.environ.setdefault("FLASHKMEANS_JAX_NO_COMPILE_CACHE", "1")  # see test_estimator.py


def test_bucket_rows():
  table = {1: 16, 16: 16, 17: 20, 600: 640, 640: 640, 641: 768, 769: 896, 1024: 1024,
           1025: 1280, 10**6: 1048576}
  assert {n: bucket_rows(n) for n in table} == table
  for n in range(17, 5000):
    b = bucket_rows(n)
    assert n <= b <= 1.25 * n and bucket_rows(b) == b  # at most 25 % padding; stable
  # Arrays beyond the size limit keep their shape (no copy of a large X).
  big = rows.MAX_BUCKET_BYTES // 512 + 1
  assert bucket_rows(big, 512) == big and bucket_rows(big - 1000, 1) > big - 1000


@pytest.fixture(scope="module")
def fitted():
  rng = np.random.default_rng(0)
  means = rng.normal(size=(5, 4)) * 6
  x = (means[rng.integers(0, 5, 700)] + rng.normal(size=(700, 4))).astype(np.float32)
  return KMeans(5, random_state=0, max_iter=20).fit(x[:640]), x


def test_bucketed_predict_equals_unbucketed(fitted):
  est, x = fitted
  c = jnp.asarray(est.cluster_centers_)
  full_labels, full_dist = fk.assign(jnp.asarray(x[:640]), c)  # 640 is its own bucket
  np.testing.assert_array_equal(est.predict(x[:640]), np.asarray(full_labels))
  assert est.score(x[:640]) == -float(np.sum(np.asarray(full_dist, np.float64)))
  for m in (601, 613, 639):
    assert bucket_rows(m) == 640
    # Exactly the rows of the padded call, whatever m in the bucket ...
    np.testing.assert_array_equal(est.predict(x[:m]), np.asarray(full_labels)[:m])
    assert est.score(x[:m]) == -float(np.sum(np.asarray(full_dist, np.float64)[:m]))
    np.testing.assert_array_equal(est.predict(jnp.asarray(x[:m])), est.predict(x[:m]))
    # ... and the unpadded call's labels (no near-ties in these blobs).
    np.testing.assert_array_equal(est.predict(x[:m]),
                                  np.asarray(fk.assign(jnp.asarray(x[:m]), c)[0]))
    t = est.transform(x[:m])
    np.testing.assert_array_equal(t, est.transform(x[:640])[:m])
    np.testing.assert_array_equal(est.transform(jnp.asarray(x[:m])), t)
  np.testing.assert_array_equal(est.predict(x[:640]), est.labels_)


def test_new_n_in_a_seen_bucket_does_not_recompile(fitted):
  est, x = fitted
  w = np.ones(700, np.float32)

  def calls(m):
    est.predict(x[:m])
    est.score(x[:m], sample_weight=w[:m])
    est.transform(x[:m])
    KMeans(5, random_state=1, max_iter=20).fit(x[:m])
    KMeans(5, init=est.cluster_centers_).partial_fit(x[:m])

  calls(620)  # warm: compiles the 640-row programs
  with count_compiles() as compiles:
    calls(605)
    calls(633)
  assert compiles == []
  # A JAX X is padded on its device by one small program per new N.
  est.predict(jnp.asarray(x[:611]))
  x612 = jnp.asarray(x[:612])
  with count_compiles() as compiles:
    est.predict(x612)
  assert len(compiles) <= 1
  # The count is live: another bucket compiles.
  with count_compiles() as compiles:
    est.predict(x[:650])
  assert compiles


def _maps_and_rss():
  with open("/proc/self/maps") as f:
    maps = sum(1 for _ in f)
  with open("/proc/self/statm") as f:
    rss = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
  return maps, rss


@pytest.mark.skipif(not os.path.exists("/proc/self/maps"), reason="needs Linux /proc")
def test_no_growth_of_memory_maps_or_rss_over_a_thousand_calls(fitted):
  """Issue 16: eager init_kmeans_plusplus kept ~89 maps and 2.8 MiB per call
  (a new compilation each time) until the process hit the map limit."""
  est, x = fitted
  xs = jnp.asarray(x[:32])
  c = xs[:3]
  key = jax.random.key(0)
  calls = {
      "assign": lambda: fk.assign(xs, c)[0],
      "init_kmeans_plusplus": lambda: fk.init_kmeans_plusplus(key, xs, 3),
      "predict": lambda: est.predict(x[:20]),
  }
  for name, call in calls.items():
    for _ in range(20):  # warm: compilations, allocator pools
      jax.block_until_ready(call())
    maps0, rss0 = _maps_and_rss()
    for _ in range(1000):
      jax.block_until_ready(call())
    maps1, rss1 = _maps_and_rss()
    # One leaked compilation per call would add ~1000 x tens of maps.
    assert maps1 - maps0 <= 20, (name, maps0, maps1)
    assert rss1 - rss0 <= 32 * 2**20, (name, rss0, rss1)
