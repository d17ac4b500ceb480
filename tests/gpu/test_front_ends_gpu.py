"""The front ends' issue-21 outputs through the real kernels: ``KMeans.order_``
(from the in-memory fit's Pallas sort, padded rows dropped), the CLI's
``--order-out`` in both modes and streamed ``init="k-means||"``. Run on the
GPU machine: ``python -m pytest -q tests/gpu/test_front_ends_gpu.py``."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import flashkmeans_jax as fk
from flashkmeans_jax import cli
from tests import helpers
from tests.test_order import check_order

pytestmark = pytest.mark.gpu
os.environ.setdefault("FLASHKMEANS_JAX_NO_COMPILE_CACHE", "1")


@pytest.fixture(scope="module")
def blobs():
  # 50,001 rows: padded to the 57,344-row bucket (padded rows in the sort).
  x, _, _ = helpers.make_blobs(np.random.default_rng(0), 50_001, 32, 64, spread=6.0, std=1.0)
  return x


def test_estimator_order_pallas(blobs):
  km = fk.KMeans(64, random_state=0, max_iter=20).fit(blobs)
  assert km.order_.shape == (blobs.shape[0],)
  check_order(km.labels_, 64, km.order_, km.offsets_, km.sizes_)
  st = fk.KMeans(64, random_state=0, max_iter=20, chunk_size=8192).fit(blobs)
  check_order(st.labels_, 64, st.order_, st.offsets_, st.sizes_)


def test_cli_order_out_both_modes(tmp_path, blobs):
  np.save(tmp_path / "x.npy", blobs)
  for name, extra in (("mem", []), ("stream", ["--stream-above", "1K", "--chunk-size", "8192"])):
    o, lab = tmp_path / f"{name}.npz", tmp_path / f"{name}.npy"
    assert cli.main([str(tmp_path / "x.npy"), "-k", "64", "--max-iter", "20", "--quiet",
                     "--init", "k-means||", "--order-out", str(o), "--labels-out", str(lab),
                     *extra]) == 0
    labels = np.load(lab)
    with np.load(o) as z:
      check_order(labels, 64, z["order"], z["offsets"], z["sizes"])


def test_streamed_kmeans_parallel_matches_in_memory(blobs):
  """N below the subsample size: the streamed k-means|| seeds are the
  in-memory ones (same kernels for the rounds), so the runs agree."""
  x = blobs[:20_000]
  key = jax.random.key(2)
  kw = dict(init="k-means||", max_iter=20, tol=0.0, precision="highest")
  got = fk.kmeans_streaming(key, x, 64, chunk_size=4096, init_sample_size=20_000, **kw)
  ref = fk.kmeans(key, jnp.asarray(x), 64, **kw)
  np.testing.assert_array_equal(got.labels, np.asarray(ref.labels))
  np.testing.assert_allclose(np.asarray(got.centroids), np.asarray(ref.centroids),
                             rtol=1e-4, atol=1e-4)
