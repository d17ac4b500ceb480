"""Stable sort of the labels: the points in cluster order.

The sort-inverse update (and the gradient of the assignment w.r.t. the
centroids) reads each cluster's points as one contiguous run of this
permutation.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

__all__ = ["sort_by_label", "cluster_segments"]


def _bits(v: int) -> int:
  return max(1, (int(v) - 1).bit_length())


def _narrow_key_dtype(k: int):
  """Narrowest unsigned dtype that holds a label below ``k`` (None: >16 bits)."""
  if k <= 1 << 8:
    return jnp.uint8
  if k <= 1 << 16:
    return jnp.uint16
  return None


def _sort_one(labels: jax.Array, k: int) -> tuple[jax.Array, jax.Array]:
  """``(perm, labels[perm])`` for one ``int32[N]`` label vector, stable.

  Up to 2^16 clusters the labels are narrowed to 8 or 16 bits and sorted
  together with their indices: a radix sort needs one pass per key byte, so
  this runs 1-2 passes instead of the 4 of a 32-bit key (measured on an H200
  at N=2^20, K=1024: 0.066 ms against 0.091 ms for the packed 32-bit keys
  below and 0.120 ms for ``argsort``). Otherwise ``label << bits(N) | index``
  is sorted as one 32-bit key when it fits, else ``argsort``.
  """
  n = labels.shape[-1]
  narrow = _narrow_key_dtype(k)
  if narrow is not None:
    keys, perm = lax.sort((labels.astype(narrow), jnp.arange(n, dtype=jnp.int32)),
                          num_keys=1, is_stable=True)
    return perm, keys.astype(jnp.int32)
  shift = _bits(n)
  if shift + _bits(k) <= 32:
    keys = jnp.sort((labels.astype(jnp.uint32) << shift) | jnp.arange(n, dtype=jnp.uint32))
    return ((keys & np.uint32((1 << shift) - 1)).astype(jnp.int32),
            (keys >> shift).astype(jnp.int32))
  perm = jnp.argsort(labels).astype(jnp.int32)
  return perm, labels[perm]


@functools.lru_cache(maxsize=None)
def _label_sorter(k: int):
  """:func:`_sort_one` whose batching stays one flat sort.

  Under ``vmap`` a plain sort becomes a batched (segmented) sort, which XLA
  runs as a comparison network, several times slower than a one-dimensional
  radix sort. When ``member | label | index`` fits in 32 bits the batch is
  sorted as one flat array of such keys instead: members never mix (the
  member index is the most significant part) and each member's points come
  back in its own row, in the same stable order as :func:`_sort_one`.
  """

  @jax.custom_batching.custom_vmap
  def sort_labels(labels):
    return _sort_one(labels, k)

  @sort_labels.def_vmap
  def _sort_labels_batched(axis_size, in_batched, labels):
    if not in_batched[0]:
      return sort_labels(labels), (False, False)
    n = labels.shape[-1]
    shift, kbits = _bits(n), _bits(k)
    if shift + kbits + _bits(axis_size) > 32:
      return jax.vmap(lambda l: _sort_one(l, k))(labels), (True, True)
    member = jnp.arange(axis_size, dtype=jnp.uint32).reshape(
        (axis_size,) + (1,) * (labels.ndim - 1)) << (shift + kbits)
    keys = member | (labels.astype(jnp.uint32) << shift) | jnp.arange(n, dtype=jnp.uint32)
    keys = jnp.sort(keys.reshape(-1)).reshape(labels.shape)
    perm = (keys & np.uint32((1 << shift) - 1)).astype(jnp.int32)
    sorted_labels = ((keys >> shift) & np.uint32((1 << kbits) - 1)).astype(jnp.int32)
    return (perm, sorted_labels), (True, True)

  return sort_labels


def sort_by_label(labels: jax.Array, k: int) -> tuple[jax.Array, jax.Array]:
  """``(perm, labels[perm])``: the points in cluster order (stable: within a
  cluster, points keep their index order).

  Args:
    labels: ``int32[N]`` in ``[0, k)``.
    k: number of clusters.

  Returns:
    ``perm int32[N]`` and the sorted labels ``int32[N]``.
  """
  return _label_sorter(int(k))(labels.astype(jnp.int32))


def cluster_segments(labels: jax.Array, k: int) -> tuple[jax.Array, jax.Array, jax.Array]:
  """``(order, offsets, sizes)``: the inverse map of a labelling, from one
  stable sort (:func:`sort_by_label`; batches through its flat sort).

  Args:
    labels: ``int32[N]`` in ``[0, k)``.
    k: number of clusters.

  Returns:
    ``order int32[N]`` (cluster ``j``'s points are ``order[offsets[j]:
    offsets[j + 1]]``, ascending), ``offsets int32[k + 1]`` (``offsets[k] ==
    N``) and ``sizes int32[k]``. The offsets are binary searches of the sorted
    labels (O(k log N)), so nothing but the sort touches all N labels.
  """
  order, sorted_labels = sort_by_label(labels, k)
  offsets = jnp.searchsorted(sorted_labels, jnp.arange(k + 1, dtype=jnp.int32),
                             side="left").astype(jnp.int32)
  return order, offsets, offsets[1:] - offsets[:-1]
