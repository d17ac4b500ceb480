"""Public data-parallel calls: k-means, assign, update and k-means++ on
row-sharded points over many devices and hosts (``jax.shard_map``).

Points are split along axis 0 over one or more mesh axes (the *data* axes);
centroids are replicated. Every Lloyd iteration each device

1. assigns its own shard with the usual kernels (``assign``),
2. computes per-cluster float32 sums and counts of its shard
   (``cluster_sums``),
3. joins one ``psum`` over the data axes of ``(sums [K, D], counts [K],
   inertia)``, the only collective of the iteration, O(K*D) bytes,
4. finalises the (identical) new centroids (``finalize_centroids``).

Nothing of size O(N) crosses devices inside the loop. The stopping rule is
the single-device one (``tol * mean(var(x, axis=0))``, the variance reduced
with two psums once before the loop).

Uneven N: a ``jax.Array`` sharded over P devices always has P | N. When
:func:`sharded_kmeans` is handed unsharded data (NumPy, one device) whose N is
not a multiple of P, it pads with zero rows of weight 0 before placing them:
padded rows count in no sum, count, tolerance, inertia or seeding draw, and
the returned labels have exactly N entries (then gathered, replicated, since a
sharded array of N rows cannot exist).

Seeding never gathers points: k-means++ samples each candidate from the
global distribution ``w * D^2`` by psum'ing per-shard potentials (a shard is
chosen in proportion to its potential, then a point inside it), broadcasts
the L candidate rows with a psum of one-hot-masked rows (O(L*D)) and psums
the L candidate potentials. ``"random"`` draws Gumbel top-k per shard and
reduces the P*k winning scores globally.

Multi-process (multi-host): call ``jax.distributed.initialize`` in every
process, build the global array with
``jax.make_array_from_process_local_data`` over a mesh of ``jax.devices()``
and call :func:`flashkmeans_jax.kmeans` (or :func:`sharded_kmeans`); every
process gets the same centroids. On CPU the cross-process collectives are
gloo's (``jax_cpu_collectives_implementation``, default ``"gloo"`` in jax
0.11). :func:`allreduce_sums` sums per-process partial sums (for streaming
drivers that each read their own part of the data).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from flashkmeans_jax.core import call_checks
from flashkmeans_jax.core import validation
from flashkmeans_jax.core.types import KMeansResult
from flashkmeans_jax.drivers.sharded import lloyd as sharded_lloyd
from flashkmeans_jax.drivers.sharded import mesh as mesh_mod
from flashkmeans_jax.drivers.sharded import ops as sharded_ops
from flashkmeans_jax.drivers.sharded.mesh import data_mesh, is_row_sharded
from flashkmeans_jax.drivers.sharded.ops import allreduce_sums, psum_sums

__all__ = ["sharded_kmeans", "sharded_assign", "sharded_update", "allreduce_sums",
           "psum_sums", "is_row_sharded", "data_mesh", "sharded_init_kmeans_plusplus"]


def sharded_kmeans(key: jax.Array, x: Any, k: int, *, mesh: Mesh | None = None,
                   axis_name: str | tuple[str, ...] | None = None,
                   init: str | jax.Array = "k-means++", max_iter: int = 300,
                   tol: float = 1e-4, metric: str = "sqeuclidean",
                   weights: Any = None, n_init: int = 1, empty: str = "keep",
                   impl: str | None = None, precision: Any = None,
                   check_finite: bool = True, verbose: bool = False,
                   config: Any = None) -> KMeansResult:
  """Data-parallel :func:`flashkmeans_jax.kmeans` over a mesh axis.

  Same options and result as ``kmeans``; in addition:

  Args:
    x: ``[N, D]`` points: a ``jax.Array`` already split on axis 0 (a
      ``NamedSharding`` whose spec names mesh axes for axis 0; then ``mesh``
      and ``axis_name`` default to it), or any array, which is then padded to
      a multiple of the shard count and placed.
    mesh: the device mesh; default: x's mesh, else a 1-D mesh over all
      devices (:func:`data_mesh`).
    axis_name: mesh axis (or tuple of axes) that splits the points; default:
      x's, else the mesh's only axis. Other mesh axes hold replicas.
    weights: optional ``float[N]``, placed like x.

  Returns:
    :class:`KMeansResult`: centroids, inertia etc. replicated on the mesh;
    ``labels`` split like x (replicated when N had to be padded).

  For the same explicit ``init`` the result equals single-device ``kmeans``
  (labels identical except at float32 near-ties, centroids within float32
  summation-order rounding). Seeding draws from the same distributions, with
  other random numbers.
  """
  validation.check_key(key)
  validation.check_points(x)
  n = x.shape[0]
  # The same checks as kmeans; values of weights split over processes are
  # reduced on the devices, so every process sees the same verdict.
  opts, init_array = validation.lloyd_options(
      x, k, init=init, max_iter=max_iter, tol=tol, metric=metric, weights=weights,
      n_init=n_init, empty=empty, impl=impl, precision=precision, config=config,
      verbose=verbose, check_finite_values=check_finite)
  mesh, axes = mesh_mod.resolve(x, mesh, axis_name)
  xs, ws, _ = mesh_mod.prepare(x, weights, mesh, axes)
  if init_array is not None:
    init_array = jnp.asarray(init_array)
  return sharded_lloyd.kmeans_sharded(key, xs, ws, init_array, mesh=mesh, axes=axes,
                                      n_valid=n, opts=opts)


def sharded_init_kmeans_plusplus(key: jax.Array, x: Any, k: int, *,
                                 mesh: Mesh | None = None,
                                 axis_name: str | tuple[str, ...] | None = None,
                                 weights: Any = None, metric: str = "sqeuclidean",
                                 n_local_trials: int | None = None) -> jax.Array:
  """Greedy k-means++ seeds ``float32[k, D]`` of row-sharded ``x`` without
  gathering points (what ``sharded_kmeans(init="k-means++")`` starts from).

  Candidates are drawn with probability ``weight * D(x)^2`` over all shards,
  as :func:`flashkmeans_jax.init_kmeans_plusplus` draws them; per step the
  collectives are an all-gather of P shard potentials, a psum of the L
  candidate rows (O(L*D)) and a psum of L candidate potentials."""
  k, metric, n_local_trials = call_checks.check_seeding_call(
      key, x, k, weights=weights, metric=metric, n_local_trials=n_local_trials)
  n = x.shape[0]
  mesh, axes = mesh_mod.resolve(x, mesh, axis_name)
  xs, ws, _ = mesh_mod.prepare(x, np.ones((n,), np.float32) if weights is None else weights,
                               mesh, axes)
  return sharded_lloyd.kmeans_plusplus_sharded(key, xs, ws, mesh=mesh, axes=axes, k=k,
                                               metric=metric, n_local_trials=n_local_trials)


def sharded_assign(x: Any, centroids: Any, *, mesh: Mesh | None = None,
                   axis_name: str | tuple[str, ...] | None = None,
                   metric: str = "sqeuclidean", impl: str | None = None,
                   precision: Any = None, config: Any = None,
                   check_finite: bool = True) -> tuple[jax.Array, jax.Array]:
  """:func:`flashkmeans_jax.assign` with every device assigning its own rows
  (no collective). Labels and distances come back split like x (replicated
  when N had to be padded). Not differentiable (use ``assign`` on a shard
  inside your own ``shard_map`` for gradients). The checks are ``assign``'s."""
  validation.check_points(x)
  validation.check_centroids(centroids, x.shape[1])
  metric = validation.check_metric(metric)
  impl = validation.resolve_impl(impl)
  precision = validation.resolve_precision(precision)
  validation.check_finite(centroids, "centroids")
  if check_finite:
    validation.check_finite(x)
  mesh, axes = mesh_mod.resolve(x, mesh, axis_name)
  xs, _, _ = mesh_mod.prepare(x, None, mesh, axes)
  return sharded_ops.assign_sharded(xs, jnp.asarray(centroids), mesh=mesh, axes=axes,
                                    n_valid=x.shape[0], metric=metric, impl=impl,
                                    precision=precision, config=config)


def sharded_update(x: Any, labels: Any, centroids_or_k: Any, *, mesh: Mesh | None = None,
                   axis_name: str | tuple[str, ...] | None = None, weights: Any = None,
                   metric: str = "sqeuclidean", empty: str = "keep", dist: Any = None,
                   impl: str | None = None,
                   check_finite: bool = True) -> tuple[jax.Array, jax.Array]:
  """:func:`flashkmeans_jax.update` on row-sharded points: local sums and
  counts, one psum of O(K*D), identical centroids on every device. The
  checks are ``update``'s."""
  k, previous, metric, empty = call_checks.check_update_call(
      x, labels, centroids_or_k, weights=weights, metric=metric, empty=empty, dist=dist,
      check_finite=check_finite)
  n, d = x.shape
  impl = validation.resolve_impl(impl)
  # An integer k: empty clusters get the zero vector, as update gives them.
  previous = jnp.zeros((k, d), jnp.float32) if previous is None else jnp.asarray(previous)
  mesh, axes = mesh_mod.resolve(x, mesh, axis_name)
  if weights is None:
    weights = np.ones((n,), np.float32)  # pad rows get 0 below
  xs, ws, n_pad = mesh_mod.prepare(x, weights, mesh, axes)
  lab = mesh_mod.place(labels, n_pad, NamedSharding(mesh, P(axes)))
  dst = mesh_mod.place(jnp.zeros((n,), jnp.float32) if dist is None else dist, n_pad,
                       NamedSharding(mesh, P(axes)), fill=-np.inf)
  c, counts = sharded_ops.update_sharded(xs, lab.astype(jnp.int32), ws, previous, dst,
                                         mesh=mesh, axes=axes, k=k, metric=metric,
                                         empty=empty, impl=impl)
  return c.astype(x.dtype), counts
