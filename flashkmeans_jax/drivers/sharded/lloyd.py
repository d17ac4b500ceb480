"""Data-parallel Lloyd over a mesh: the in-memory loop on every shard.

Inside one ``shard_map`` every device runs :func:`flashkmeans_jax.lloyd.loop.run`
on its own rows with :func:`~flashkmeans_jax.lloyd.combine.across` the data
axes, so each iteration's only collective is one ``psum`` of ``(sums [K, D],
counts [K], inertia)``; the tolerance, seeding, relocation and ``n_init``
are the single-device code. Nothing of size O(N) crosses devices inside the
loop; labels are gathered once at the end only when N had to be padded.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.sharding import Mesh, PartitionSpec as P

from flashkmeans_jax.core.options import LloydOptions
from flashkmeans_jax.core.precision import resolve_precision
from flashkmeans_jax.core.types import KMeansResult
from flashkmeans_jax.drivers.sharded import mesh as mesh_mod
from flashkmeans_jax.lloyd import loop
from flashkmeans_jax.lloyd import seeding
from flashkmeans_jax.lloyd.combine import across

__all__ = ["kmeans_sharded", "kmeans_plusplus_sharded"]


def _valid_rows(axes, n_loc, n_valid, padded):
  if not padded:
    return None
  return lax.axis_index(axes) * n_loc + jnp.arange(n_loc) < n_valid


@functools.partial(jax.jit, static_argnames=("mesh", "axes", "n_valid", "opts"))
def kmeans_sharded(key: jax.Array, x: jax.Array, weights: jax.Array | None,
                   init_array: jax.Array | None, *, mesh: Mesh, axes: tuple[str, ...],
                   n_valid: int, opts: LloydOptions) -> KMeansResult:
  """k-means of row-sharded ``x [N_pad, D]`` (rows past ``n_valid`` are padding
  of weight 0). Centroids etc. come back replicated; labels split like x, or
  replicated with ``n_valid`` entries when padded."""
  combine = across(axes, mesh_mod.n_shards(mesh, axes))
  padded = x.shape[0] != n_valid
  args = [key, x] + [a for a in (weights, init_array) if a is not None]
  in_specs = [P(), P(axes, None)] + ([P(axes)] if weights is not None else []) + (
      [P()] if init_array is not None else [])

  def per_shard(key, x, *rest):
    rest = list(rest)
    w = rest.pop(0).astype(jnp.float32) if weights is not None else None
    c_init = rest.pop(0) if init_array is not None else None
    valid = _valid_rows(axes, x.shape[0], n_valid, padded)
    res = loop.run(key, x, w, c_init, opts, valid=valid, combine=combine)
    if padded:  # labels of N rows cannot stay sharded: gather them (once, at the end)
      res = KMeansResult(res.centroids, lax.all_gather(res.labels, axes, tiled=True),
                         res.inertia, res.n_iter, res.converged, res.inertia_history)
    return res

  lab_spec = P() if padded else P(axes)
  out_specs = KMeansResult(P(), lab_spec, P(), P(), P(), P())
  res = jax.shard_map(per_shard, mesh=mesh, in_specs=tuple(in_specs), out_specs=out_specs,
                      check_vma=False)(*args)
  if padded:
    res = KMeansResult(res.centroids, res.labels[:n_valid], res.inertia, res.n_iter,
                       res.converged, res.inertia_history)
  return res


@functools.partial(jax.jit, static_argnames=("mesh", "axes", "k", "metric",
                                             "n_local_trials"))
def kmeans_plusplus_sharded(key: jax.Array, x: jax.Array, w: jax.Array, *, mesh: Mesh,
                            axes: tuple[str, ...], k: int, metric: str,
                            n_local_trials: int | None) -> jax.Array:
  """Greedy k-means++ seeds ``float32[k, D]`` of row-sharded ``x`` (padding rows
  must have weight 0 in ``w``)."""
  combine = across(axes, mesh_mod.n_shards(mesh, axes))

  def per_shard(key, x, w):
    return seeding.init_kmeans_plusplus(key, x, k, w.astype(jnp.float32), metric=metric,
                                        n_local_trials=n_local_trials,
                                        precision=resolve_precision("highest"),
                                        combine=combine)

  return jax.shard_map(per_shard, mesh=mesh, in_specs=(P(), P(axes, None), P(axes)),
                       out_specs=P(), check_vma=False)(key, x, w)
