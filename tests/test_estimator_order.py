"""``KMeans.order_``/``offsets_``/``sizes_`` (issue 21) and the host inverse
map behind them, against ``np.argsort(labels, kind="stable")``/``bincount``."""

import os

import numpy as np
import pytest

from flashkmeans_jax.estimator import KMeans
from flashkmeans_jax.estimator.order import drop_padding, host_cluster_order
from tests import helpers
from tests.test_order import check_order

os.environ.setdefault("FLASHKMEANS_JAX_NO_COMPILE_CACHE", "1")  # see test_estimator.py


@pytest.fixture(scope="module")
def blobs():
  # 601 rows: padded to the 640-row bucket, so the device order holds 39
  # padded rows that order_ must drop.
  x, _, _ = helpers.make_blobs(np.random.default_rng(0), 601, 5, 6, spread=4.0, std=1.0)
  return x


def _check_fitted(est, n):
  assert est.order_.shape == (n,)
  check_order(est.labels_, est.n_clusters, est.order_, est.offsets_, est.sizes_)


def test_fit_order_in_memory_and_streamed(blobs):
  w = np.random.default_rng(1).uniform(0.5, 2.0, blobs.shape[0])
  # max_iter=50 and the 640-row bucket: test_estimator.py's compiled program.
  est = KMeans(6, random_state=0, max_iter=50).fit(blobs, sample_weight=w)
  _check_fitted(est, blobs.shape[0])
  # Streamed (one chunk: one compiled step): labels on the host, sorted
  # there; the same clustering.
  st = KMeans(6, random_state=0, max_iter=50, chunk_size=1024).fit(blobs, sample_weight=w)
  _check_fitted(st, blobs.shape[0])
  np.testing.assert_array_equal(st.labels_, est.labels_)
  np.testing.assert_array_equal(st.order_, est.order_)


def test_partial_fit_order_is_the_batch_s(blobs):
  est = KMeans(6, random_state=0, max_iter=50).fit(blobs)
  est.partial_fit(blobs[:77])
  _check_fitted(est, 77)


def test_host_cluster_order_blocks_empty_clusters_and_wide_k():
  rng = np.random.default_rng(2)
  for k, n in ((9, 1000), (70000, 3000)):  # 70000 > 2**16: the int32 sort path
    labels = rng.integers(0, k, n).astype(np.int32)
    labels[labels == 3] = 4  # cluster 3 empty
    for block in (1, 7, 256, 10**6):  # several blocks, and one
      got = host_cluster_order(labels, k, block_rows=block)
      check_order(labels, k, *got)
    # A memory-map-like input is read by slices.
    check_order(labels, k, *host_cluster_order(np.lib.stride_tricks.as_strided(labels), k))


def test_drop_padding_keeps_runs_contiguous():
  labels = np.array([2, 0, 2, 1, 0, 2], np.int32)
  padded = np.r_[labels, [2, 2, 0]]  # three padded rows after the real ones
  got = drop_padding(np.argsort(padded, kind="stable"), labels, 4)
  check_order(labels, 4, *got)
