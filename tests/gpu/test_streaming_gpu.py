"""Out-of-core and estimator paths on the real GPU (kernels + transfers)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import flashkmeans_jax as fk
from tests import helpers

pytestmark = pytest.mark.gpu


@pytest.mark.parametrize("method", ["auto", "device_put", "pinned_cache", "io_callback"])
def test_streaming_equals_in_memory(method):
  # Clustered data: labels are then stable under the float32 summation-order
  # differences between chunked and in-memory sums (unstructured random
  # data has near-ties that such rounding may flip).
  rng = np.random.default_rng(0)
  centers = rng.normal(size=(256, 64)) * 4
  x = (centers[rng.integers(0, 256, 300_000)] + rng.normal(size=(300_000, 64))).astype(np.float16)
  init = x[:256].astype(np.float32)
  mem = fk.kmeans(jax.random.key(0), jnp.asarray(x), 256, init=jnp.asarray(init), max_iter=5,
                  tol=0.0)
  half = x.nbytes // 2
  st = fk.kmeans_streaming(jax.random.key(0), x, 256, init=init, max_iter=5, tol=0.0,
                           chunk_size=40_000, device_budget_bytes=half, method=method)
  np.testing.assert_array_equal(np.asarray(st.labels), np.asarray(mem.labels))
  np.testing.assert_allclose(np.asarray(st.centroids, np.float32),
                             np.asarray(mem.centroids, np.float32), rtol=1e-3, atol=1e-3)
  assert int(st.n_iter) == int(mem.n_iter) == 5


@pytest.mark.parametrize("k", [256, 4096])  # the on-chip cast, and the XLA pre-pass
def test_streaming_float32_half_operands_equals_in_memory(k):
  # float32 data at 1e6 (beyond float16's range unscaled), F16_F16_F32 in
  # both drivers; interleaved resident and streamed chunks; twice in a row
  # to check the streamed order is fixed (same bits).
  rng = np.random.default_rng(3)
  centers = rng.normal(size=(k, 64)) * 4e6
  x = (centers[rng.integers(0, k, 200_000)] + rng.normal(size=(200_000, 64)) * 1e6)
  x = x.astype(np.float32)
  # One start near each true center: no cluster is split between two
  # centroids, so no labels sit on near-ties that summation order could flip.
  init = (centers + rng.normal(size=centers.shape) * 1e5).astype(np.float32)
  kw = dict(init=init, max_iter=4, tol=0.0, precision="F16_F16_F32")
  mem = fk.kmeans(jax.random.key(0), jnp.asarray(x), k, **{**kw, "init": jnp.asarray(init)})
  runs = [fk.kmeans_streaming(jax.random.key(0), x, k, chunk_size=30_000,
                              device_budget_bytes=x.nbytes // 2, **kw) for _ in range(2)]
  np.testing.assert_array_equal(np.asarray(runs[0].labels), np.asarray(mem.labels))
  np.testing.assert_allclose(np.asarray(runs[0].centroids), np.asarray(mem.centroids),
                             rtol=1e-4, atol=1e-4 * 4e6)
  np.testing.assert_array_equal(np.asarray(runs[0].centroids), np.asarray(runs[1].centroids))


def test_kmeans_bit_identical_across_runs():
  # No atomics anywhere in the default GPU path: two runs agree to the bit.
  rng = np.random.default_rng(2)
  x = jnp.asarray(rng.normal(size=(200_000, 128)), jnp.bfloat16)
  a = fk.kmeans(jax.random.key(0), x, 1000, init="random", max_iter=8, tol=0.0)
  b = fk.kmeans(jax.random.key(0), x, 1000, init="random", max_iter=8, tol=0.0)
  np.testing.assert_array_equal(np.asarray(a.labels), np.asarray(b.labels))
  np.testing.assert_array_equal(np.asarray(a.centroids, np.float32),
                                np.asarray(b.centroids, np.float32))
  assert float(a.inertia) == float(b.inertia)


@pytest.mark.parametrize("method", ["device_put", "io_callback"])
def test_streaming_n_init_keeps_the_lowest_inertia(method):
  # Restarts use jax.random.split(key, n_init): each equals a single run from
  # its split key (the GPU path has no atomics, so to the bit), and the
  # winner comes back with its own labels, written by the final pass.
  rng = np.random.default_rng(4)
  x = rng.normal(size=(120_000, 32)).astype(np.float16)
  key = jax.random.key(1)
  kw = dict(init="random", max_iter=4, tol=0.0, chunk_size=25_000,
            device_budget_bytes=x.nbytes // 2, method=method)
  singles = [fk.kmeans_streaming(sub, x, 512, **kw) for sub in jax.random.split(key, 3)]
  inertias = [float(r.inertia) for r in singles]
  assert len(set(inertias)) == 3
  win = singles[int(np.argmin(inertias))]
  labels_out = np.full(x.shape[0], -1, np.int32)
  got = fk.kmeans_streaming(key, x, 512, n_init=3, labels_out=labels_out, **kw)
  assert float(got.inertia) == min(inertias)
  np.testing.assert_array_equal(np.asarray(got.centroids), np.asarray(win.centroids))
  np.testing.assert_array_equal(labels_out, win.labels)


def test_estimator_on_gpu():
  rng = np.random.default_rng(1)
  x, _, _ = helpers.make_blobs(rng, 20_000, 32, 50, spread=5.0, std=1.0)
  km = fk.KMeans(n_clusters=50, random_state=0, max_iter=30, precision="highest").fit(x)
  c = km.cluster_centers_
  # Training labels and inertia belong to the returned centroids (float64
  # check, near-ties accepted only within float32 rounding).
  helpers.assert_labels_match(x, c, km.labels_, "sqeuclidean")
  d = helpers.np_distances(x, c, "sqeuclidean")
  np.testing.assert_allclose(km.inertia_, d[np.arange(len(x)), km.labels_].sum(), rtol=1e-4)
  np.testing.assert_array_equal(km.predict(x[:1000]), km.labels_[:1000])
  np.testing.assert_allclose(km.transform(x[:10]), np.sqrt(np.maximum(d[:10], 0.0)),
                             rtol=1e-3, atol=1e-3)


def test_auto_measures_and_picks_the_fastest_estimate():
  from flashkmeans_jax.api import streaming as streaming_api
  from flashkmeans_jax.drivers.streaming import plan, probe
  rates = streaming_api.transfer_rates()
  assert rates.pageable_gbs > 0 and rates.pinned_gbs > 0 and rates.pin_gbs > 0
  p = plan.plan_chunks(2**25, 128, 256, 2**22, 0)
  dev = jax.devices()[0]
  for passes in (1, 3, 9, 41):
    c = plan.choose_method("auto", p, 256, dev, passes=passes)
    assert c.rates == rates  # measured once per process
    assert c.estimates_s[c.method] <= min(c.estimates_s.values()) * probe.PINNED_MARGIN


def test_one_device_list_equals_device_and_interrupt_frees_pinned_memory(monkeypatch):
  from flashkmeans_jax.api import streaming as streaming_api
  from flashkmeans_jax.drivers.streaming.progress import Progress
  rng = np.random.default_rng(5)
  x = rng.normal(size=(100_000, 32)).astype(np.float16)
  init = x[:64].astype(np.float32)
  kw = dict(init=init, max_iter=3, tol=0.0, chunk_size=20_000, device_budget_bytes=0,
            method="pinned_cache")
  a = fk.kmeans_streaming(jax.random.key(0), x, 64, **kw)
  b = fk.kmeans_streaming(jax.random.key(0), x, 64, devices=jax.devices()[:1], **kw)
  np.testing.assert_array_equal(a.labels, b.labels)
  np.testing.assert_array_equal(np.asarray(a.centroids), np.asarray(b.centroids))
  labels = np.full(x.shape[0], -3, np.int32)
  seen = {"rows": 0}
  original = Progress.update

  def update(self, rows):
    seen["rows"] += rows
    if seen["rows"] > 250_000:  # in the third Lloyd pass... or the labelling pass
      raise KeyboardInterrupt
    original(self, rows)

  monkeypatch.setattr(Progress, "update", update)
  with pytest.raises(KeyboardInterrupt):
    fk.kmeans_streaming(jax.random.key(0), x, 64, labels_out=labels, **kw)
  assert np.all(labels == -3) and streaming_api.pinned_memory_held() == 0
