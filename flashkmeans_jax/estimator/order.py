"""The inverse map of a labelling computed on the host, for the front ends.

``KMeans.order_``/``offsets_``/``sizes_`` and the CLI's ``--order-out`` need
the points grouped by cluster. When the labels come from an in-memory run
the device already sorted them (``kmeans(..., return_order=True)``); this
module covers labels that live on the host (streamed runs, ``partial_fit``)
and the padded rows of the estimator's row buckets.

The host computation is a counting sort in row blocks: one pass for the
cluster sizes, one that places every block's points at their cluster's
cursor. It is stable (ascending point index inside each cluster, the same
permutation as ``np.argsort(labels, kind="stable")``), takes O(N + K) time,
and its temporaries are one block's, so labels in a memory map are read
block by block instead of whole.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

__all__ = ["HostOrder", "host_cluster_order", "drop_padding", "BLOCK_ROWS"]

# Rows per block of the counting sort: its temporaries (about 24 bytes a
# row) stay near 100 MiB whatever N is.
BLOCK_ROWS = 1 << 22


class HostOrder(NamedTuple):
  """Points grouped by cluster, as NumPy arrays (see
  :class:`flashkmeans_jax.ClusterOrder`).

  Attributes:
    order: ``int32[N]`` (``int64`` when N >= 2**31) stable permutation:
      cluster ``j``'s points are ``order[offsets[j]:offsets[j + 1]]``, in
      ascending index order.
    offsets: ``[K + 1]`` run starts, same dtype as ``order``;
      ``offsets[0] == 0`` and ``offsets[K] == N``.
    sizes: ``[K]`` points per cluster (``np.bincount(labels, minlength=K)``),
      same dtype as ``order``.
  """

  order: np.ndarray
  offsets: np.ndarray
  sizes: np.ndarray


def _index_dtype(n: int) -> np.dtype:
  return np.dtype(np.int32) if n < 2**31 else np.dtype(np.int64)


def _sort_key(lab: np.ndarray, k: int) -> np.ndarray:
  # NumPy's stable sort is a radix sort for 16-bit integers, about five
  # times faster than its merge sort of int32 labels.
  return lab.astype(np.uint16) if k <= 2**16 else lab


def host_cluster_order(labels: Any, k: int, *, block_rows: int = BLOCK_ROWS) -> HostOrder:
  """The inverse map of host ``labels``.

  Args:
    labels: ``int[N]`` labels in ``[0, k)``: a NumPy array, a memory map or
      anything sliceable into NumPy blocks (read ``block_rows`` at a time,
      twice). Trusted: the front ends pass their own results.
    k: number of clusters.
    block_rows: rows per block (memory of the temporaries).

  Returns:
    :class:`HostOrder`.
  """
  n = int(labels.shape[0])
  dt = _index_dtype(n)
  block_rows = max(1, int(block_rows))
  if n <= block_rows:  # one block: its stable sort is the answer
    lab = np.asarray(labels[:n])
    order = np.argsort(_sort_key(lab, k), kind="stable").astype(dt)
    return drop_padding(order, lab, k)
  blocks = range(0, n, block_rows)
  sizes = np.zeros((k,), np.int64)
  for start in blocks:
    sizes += np.bincount(np.asarray(labels[start:start + block_rows]), minlength=k)
  offsets = np.zeros((k + 1,), np.int64)
  np.cumsum(sizes, out=offsets[1:])
  order = np.empty((n,), dt)
  cursor = offsets[:-1].copy()
  for start in blocks:
    lab = np.asarray(labels[start:start + block_rows])
    idx = np.argsort(_sort_key(lab, k), kind="stable")
    sl = lab[idx]
    counts = np.bincount(sl, minlength=k)
    first = np.cumsum(counts) - counts  # where each cluster starts in this block
    # The block's points of cluster j follow the ones earlier blocks placed.
    order[(cursor - first)[sl] + np.arange(sl.size)] = start + idx
    cursor += counts
  return HostOrder(order, offsets.astype(dt), sizes.astype(dt))


def drop_padding(order: Any, labels: np.ndarray, k: int) -> HostOrder:
  """The inverse map of the first ``n = labels.size`` points from ``order``,
  a device-computed stable order of ``n`` points followed by padded rows
  (indices ``>= n``): each cluster's padded rows sit at the end of its run,
  so dropping them keeps every run contiguous and ascending.

  Args:
    order: ``int[M]`` stable order of M >= n labels (host or device array).
    labels: ``int32[n]`` the real points' labels (for the sizes).
    k: number of clusters.
  """
  n = int(labels.shape[0])
  dt = _index_dtype(n)
  order = np.asarray(order)
  if order.shape[0] != n:
    order = order[order < n]
  sizes = np.bincount(labels, minlength=k)
  offsets = np.zeros((k + 1,), np.int64)
  np.cumsum(sizes, out=offsets[1:])
  return HostOrder(order.astype(dt, copy=False), offsets.astype(dt), sizes.astype(dt))
