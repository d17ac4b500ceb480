"""The two ops on row-sharded points, and partial-sum reductions.

``assign`` needs no collective (every device assigns its own rows);
``update`` is the statistics core with one ``psum`` of O(K * D) and the
relocation candidates gathered over shards.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.sharding import NamedSharding, PartitionSpec as P

from flashkmeans_jax.drivers.sharded import mesh as mesh_mod
from flashkmeans_jax.lloyd import centroids as centroids_mod
from flashkmeans_jax.lloyd import stats
from flashkmeans_jax.lloyd.combine import across
from flashkmeans_jax.ops.assign import api as assign_op

__all__ = ["assign_sharded", "update_sharded", "psum_sums", "allreduce_sums"]


@functools.partial(jax.jit, static_argnames=("mesh", "axes", "n_valid", "metric", "impl",
                                             "precision", "config"))
def assign_sharded(x, centroids, *, mesh, axes, n_valid, metric, impl, precision, config):
  """Labels and distances of row-sharded ``x [N_pad, D]``, split like x (or
  replicated, ``n_valid`` entries, when padded)."""
  padded = x.shape[0] != n_valid

  def per_shard(x, c):
    labels, dist = assign_op.assign(x, c, metric, impl, precision, config)
    if padded:
      labels = lax.all_gather(labels, axes, tiled=True)
      dist = lax.all_gather(dist, axes, tiled=True)
    return labels, dist

  spec = P() if padded else P(axes)
  labels, dist = jax.shard_map(per_shard, mesh=mesh, in_specs=(P(axes, None), P()),
                               out_specs=(spec, spec), check_vma=False)(x, centroids)
  return labels[:n_valid], dist[:n_valid]


@functools.partial(jax.jit, static_argnames=("mesh", "axes", "k", "metric", "empty", "impl"))
def update_sharded(x, labels, weights, previous, dist, *, mesh, axes, k, metric, empty,
                   impl):
  """New centroids ``float32[K, D]`` (replicated) and counts of row-sharded x."""
  combine = across(axes, mesh_mod.n_shards(mesh, axes))

  def per_shard(x, labels, w, previous, dist):
    total = stats.combine_stats(stats.accumulate(x, labels, dist, w, k, impl), combine)

    def candidates():
      return stats.combine_farthest(stats.farthest(x, labels, dist, w, k), combine)

    return centroids_mod.finalize(total, previous, metric=metric, empty=empty,
                                  candidates=candidates)

  return jax.shard_map(per_shard, mesh=mesh,
                       in_specs=(P(axes, None), P(axes), P(axes), P(), P(axes)),
                       out_specs=(P(), P()), check_vma=False)(x, labels, weights, previous,
                                                              dist)


def psum_sums(sums: jax.Array, counts: jax.Array,
              axis_name: str | tuple[str, ...]) -> tuple[jax.Array, jax.Array]:
  """Inside ``shard_map``/``pmap``: per-cluster partial sums and counts summed
  over ``axis_name`` in one collective."""
  return lax.psum((sums.astype(jnp.float32), counts.astype(jnp.float32)), axis_name)


@functools.partial(jax.jit, static_argnames=("mesh",))
def _allreduce_jit(sums, counts, *, mesh):
  def per_device(s, c):
    s, c = lax.psum((s[0], c[0]), mesh.axis_names[0])
    return s, c
  return jax.shard_map(per_device, mesh=mesh, in_specs=(P(mesh.axis_names[0]),) * 2,
                       out_specs=(P(), P()), check_vma=False)(sums, counts)


def allreduce_sums(sums, counts) -> tuple[jax.Array, jax.Array]:
  """Sums per-process partial ``(sums [K, D], counts [K])`` over all processes.

  Outside any ``jit``: every process passes its own partial sums (e.g. of
  the chunks it streamed) and gets the global totals, float32, on its first
  local device. One all-reduce of O(K*D) over a mesh of all devices (each
  process contributes through its first local device, zeros elsewhere). With
  one process this returns the inputs (as float32). Inside ``shard_map`` use
  :func:`psum_sums` instead.
  """
  sums = np.asarray(sums, np.float32)
  counts = np.asarray(counts, np.float32)
  if jax.process_count() == 1:
    return jnp.asarray(sums), jnp.asarray(counts)
  mesh = mesh_mod.data_mesh(axis_name="procs")
  n_local = jax.local_device_count()
  local_s = np.zeros((n_local,) + sums.shape, np.float32)
  local_c = np.zeros((n_local,) + counts.shape, np.float32)
  local_s[0], local_c[0] = sums, counts
  gs = jax.make_array_from_process_local_data(NamedSharding(mesh, P("procs")), local_s)
  gc = jax.make_array_from_process_local_data(NamedSharding(mesh, P("procs")), local_c)
  s, c = _allreduce_jit(gs, gc, mesh=mesh)
  return s.addressable_data(0), c.addressable_data(0)
