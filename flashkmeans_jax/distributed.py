"""Data-parallel k-means over many devices and hosts (``jax.shard_map``).

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

import functools
import math
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from flashkmeans_jax import _checks
from flashkmeans_jax import _dispatch
from flashkmeans_jax import assignment as assign_mod
from flashkmeans_jax import centroid_update as update_mod
from flashkmeans_jax import seeding as seed_mod
from flashkmeans_jax._types import KMeansResult

__all__ = ["sharded_kmeans", "sharded_assign", "sharded_update", "allreduce_sums",
           "psum_sums", "is_row_sharded", "data_mesh",
           "sharded_init_kmeans_plusplus"]

DEFAULT_AXIS = "data"


# ----------------------------------------------------------------------------
# Mesh and placement
# ----------------------------------------------------------------------------

def _as_axes(axis_name) -> tuple[str, ...]:
  return tuple(axis_name) if isinstance(axis_name, (tuple, list)) else (axis_name,)


def _n_shards(mesh: Mesh, axes: tuple[str, ...]) -> int:
  return int(math.prod(mesh.shape[a] for a in axes))


def _row_split(x) -> tuple[Mesh, tuple[str, ...]] | None:
  """(mesh, data axes) when x is a concrete jax.Array whose axis 0 is split."""
  if isinstance(x, jax.core.Tracer) or not isinstance(x, jax.Array):
    return None
  sh = getattr(x, "sharding", None)
  if not isinstance(sh, NamedSharding) or len(sh.spec) == 0 or sh.spec[0] is None:
    return None
  axes = _as_axes(sh.spec[0])
  if _n_shards(sh.mesh, axes) <= 1:
    return None
  return sh.mesh, axes


def is_row_sharded(x: Any) -> bool:
  """Whether ``x`` is a concrete ``jax.Array`` with a ``NamedSharding`` that
  splits axis 0 over more than one device (what makes :func:`kmeans`,
  :func:`assign` and :func:`update` take the data-parallel path)."""
  return _row_split(x) is not None


def data_mesh(devices: Sequence[jax.Device] | None = None,
              axis_name: str = DEFAULT_AXIS) -> Mesh:
  """A 1-D mesh over ``devices`` (default: all of ``jax.devices()``, every
  process's) with one data axis."""
  devices = jax.devices() if devices is None else list(devices)
  return Mesh(np.asarray(devices), (axis_name,))


def _resolve(x, mesh, axis_name) -> tuple[Mesh, tuple[str, ...]]:
  split = _row_split(x)
  if mesh is None and axis_name is None and split is not None:
    return split
  if mesh is None:
    if split is not None and (axis_name is None or _as_axes(axis_name) == split[1]):
      return split
    mesh = data_mesh(axis_name=axis_name or DEFAULT_AXIS)
    return mesh, (axis_name or DEFAULT_AXIS,)
  if axis_name is None:
    if split is not None and split[0] == mesh:
      return mesh, split[1]
    if len(mesh.axis_names) != 1:
      raise ValueError(
          f"mesh has axes {mesh.axis_names}: pass axis_name= to say which split the points")
    axis_name = mesh.axis_names[0]
  axes = _as_axes(axis_name)
  for a in axes:
    if a not in mesh.axis_names:
      raise ValueError(f"axis_name {a!r} is not an axis of the mesh {mesh.axis_names}")
  return mesh, axes


def _place(a, n_pad, sharding, fill=0):
  """``a`` padded on axis 0 to ``n_pad`` rows and put in ``sharding``."""
  if a is None:
    return None
  n = a.shape[0]
  if n_pad != n:
    widths = ((0, n_pad - n),) + ((0, 0),) * (a.ndim - 1)
    a = (np.pad(a, widths, constant_values=fill) if isinstance(a, np.ndarray)
         else jnp.pad(a, widths, constant_values=fill))
  if isinstance(a, jax.Array) and a.sharding.is_equivalent_to(sharding, a.ndim):
    return a
  return jax.device_put(a, sharding)


def _prepare(x, weights, mesh, axes):
  """Places x (and weights) row-sharded; pads with weight-0 rows if needed."""
  n = x.shape[0]
  p = _n_shards(mesh, axes)
  n_pad = -(-n // p) * p
  if n_pad != n and weights is None:
    weights = np.ones((n,), np.float32)
  xs = _place(x, n_pad, NamedSharding(mesh, P(axes, None)))
  ws = _place(weights, n_pad, NamedSharding(mesh, P(axes)))
  return xs, ws, n_pad


def _check_weights(weights, n):
  if weights is None:
    return
  if isinstance(weights, jax.Array) and not weights.is_fully_addressable:
    if tuple(weights.shape) != (n,):
      raise ValueError(f"weights must have shape {(n,)}, got {tuple(weights.shape)}")
    return  # values live on other processes: checked by their owners
  _checks.check_weights(weights, n)


# ----------------------------------------------------------------------------
# Per-shard building blocks (run inside shard_map; `axes` are the data axes)
# ----------------------------------------------------------------------------

def _shard_index(axes):
  return lax.axis_index(axes)


def _data_tolerance_sharded(x, rows, tol, axes):
  """``tol * mean(var(x, axis=0))`` over the rows of all shards that
  ``lloyd._data_tolerance`` counts: real (not padding), finite and of
  positive weight (``rows``: bool[n_local] of real, positive-weight rows)."""
  if tol == 0:
    return jnp.float32(0.0)
  xf = x.astype(jnp.float32)
  m = (rows & jnp.all(jnp.isfinite(xf), axis=-1))[:, None]
  cnt = jnp.maximum(lax.psum(jnp.sum(m, dtype=jnp.float32), axes), 1.0)
  xf = jnp.where(m, xf, 0.0)
  mean = lax.psum(jnp.sum(xf, axis=0), axes) / cnt
  sq = lax.psum(jnp.sum(jnp.where(m, jnp.square(xf - mean), 0.0), axis=0), axes)
  return jnp.float32(tol) * jnp.mean(sq / cnt)


def _gathered_rows(owner_shard, local_idx, x, axes, scale=None):
  """``float32 [L, D]``: row ``local_idx[l]`` of shard ``owner_shard[l]``,
  broadcast to every shard by a psum of one-hot-masked rows."""
  mine = owner_shard == _shard_index(axes)
  rows = x[local_idx].astype(jnp.float32)
  if scale is not None:
    rows = rows * scale[:, None]
  return lax.psum(jnp.where(mine[:, None], rows, 0.0), axes)


def _draw_proportional(key, wd, num, axes, n_shards):
  """``num`` independent draws, P(point) = wd / sum(wd) over all shards.

  Returns (owner shard, local index) per draw. Mirrors the single-device
  ``searchsorted`` on the global cumulative sum: the shard is found on the
  gathered per-shard totals, the point on the shard's own cumulative sum.
  """
  n = wd.shape[0]
  cum = jnp.cumsum(wd)
  tots = lax.all_gather(cum[-1], axes)  # [P] scalars
  incl = jnp.cumsum(tots)
  excl = incl - tots
  r = jax.random.uniform(key, (num,)) * incl[-1]
  s = jnp.searchsorted(incl, r, side="right")
  last_shard = n_shards - 1 - jnp.argmax((tots > 0)[::-1])
  s = jnp.where(s >= n_shards, last_shard, s)  # float rounding at the top end
  idx = jnp.searchsorted(cum, r - excl[_shard_index(axes)])
  last_local = n - 1 - jnp.argmax((wd > 0)[::-1])
  return s, jnp.minimum(idx, last_local)


def _kmeanspp_sharded(key, x, w, k, metric, axes, n_shards, precision, n_local_trials=None):
  """Greedy k-means++ on row-sharded data (same distribution as
  :func:`flashkmeans_jax.init_kmeans_plusplus`, not the same draws)."""
  seed_metric = "cosine" if metric == "cosine" else "sqeuclidean"
  trials = n_local_trials or 2 + int(math.log(k))
  w, xsq, x_safe = seed_mod._finite_rows(x, w)
  key0, key_loop = jax.random.split(key)

  s0, i0 = _draw_proportional(key0, w, 1, axes, n_shards)
  first = _gathered_rows(s0, i0, x_safe, axes)  # [1, D]
  centers = jnp.zeros((k, x.shape[1]), jnp.float32).at[0].set(first[0])
  closest = seed_mod._dist_to_candidates(x_safe, xsq, first, seed_metric, precision)[:, 0]

  def body(c, carry):
    centers, closest = carry
    s, idx = _draw_proportional(jax.random.fold_in(key_loop, c), w * closest, trials,
                                axes, n_shards)
    cand = _gathered_rows(s, idx, x_safe, axes)  # [L, D], O(L*D) collective
    d = jnp.minimum(closest[:, None],
                    seed_mod._dist_to_candidates(x_safe, xsq, cand, seed_metric, precision))
    cand_pot = lax.psum(jnp.sum(w[:, None] * d, axis=0), axes)
    best = jnp.argmin(cand_pot)
    return centers.at[c].set(cand[best]), d[:, best]

  centers, _ = lax.fori_loop(1, k, body, (centers, closest))
  return centers


def _random_sharded(key, x, w, k, axes):
  """k distinct points, weighted, by Gumbel top-k per shard then a global
  top-k of the P * min(k, n_shard) winners."""
  n = x.shape[0]
  me = _shard_index(axes)
  g = jax.random.gumbel(jax.random.fold_in(key, me), (n,), jnp.float32)
  score = jnp.where(w > 0, jnp.log(jnp.where(w > 0, w, 1.0)) + g, -1e30 + g)
  kl = min(k, n)
  vals, idx = lax.top_k(score, kl)
  _, win = lax.top_k(lax.all_gather(vals, axes).reshape(-1), k)
  return _gathered_rows(win // kl, idx[win % kl], x, axes)


def _relocate_empty_sharded(sums, counts, x, labels, dist, w, axes):
  """Sharded twin of ``centroid_update._relocate_empty``: the j-th empty
  cluster takes the j-th farthest point of all shards (gathered per-shard
  top-K scores, O(P*K)), the point broadcast by a masked psum (O(K*D))."""
  k = counts.shape[0]
  n = x.shape[0]
  empty = counts <= 0
  score = jnp.where((w > 0) & jnp.isfinite(dist), dist, -jnp.inf)
  kl = min(k, n)
  lv, li = lax.top_k(score, kl)
  allv = lax.all_gather(lv, axes).reshape(-1)
  n_cand = min(k, allv.shape[0])
  gv, gpos = lax.top_k(allv, n_cand)
  rank = jnp.clip(jnp.cumsum(empty) - 1, 0, n_cand - 1)
  valid = empty & (jnp.cumsum(empty) - 1 < n_cand) & jnp.isfinite(gv[rank])
  owner = jnp.where(valid, gpos[rank] // kl, -1)
  lidx = li[gpos[rank] % kl]
  mine = owner == _shard_index(axes)
  wc = jnp.where(mine, w[lidx], 0.0)
  pts = jnp.where(mine[:, None], x[lidx].astype(jnp.float32) * wc[:, None], 0.0)
  old = jnp.where(mine, labels[lidx], 0)
  pts, wc, old = lax.psum((pts, wc, old), axes)
  sums = sums.at[old].add(-pts)
  counts = counts.at[old].add(-wc)
  return jnp.where(valid[:, None], pts, sums), jnp.where(valid, wc, counts)


def _finalize_sharded(sums, counts, previous, *, metric, empty, x, labels, dist, w, axes):
  if empty == "farthest":
    sums, counts = lax.cond(
        jnp.any(counts <= 0),
        lambda sc: _relocate_empty_sharded(*sc, x, labels, dist, w, axes),
        lambda sc: sc, (sums, counts))
  return update_mod.finalize_centroids(sums, counts, previous, metric=metric, empty="keep")


def _print_progress(i, inertia, shift, converged):
  print(f"[flashkmeans_jax] iter {int(i):4d}  inertia {float(inertia):.6g}  "
        f"shift {float(shift):.3g}{'  converged' if bool(converged) else ''}  (sharded)",
        flush=True)


def _lloyd_sharded(x, w, c0, tol_abs, *, k, max_iter, metric, empty, impl, precision,
                   verbose, config, axes):
  """Per-shard body of data-parallel Lloyd: the single-device loop with one
  psum of O(K*D) per iteration and a sharding-aware finalisation."""
  from flashkmeans_jax import lloyd
  w_full = jnp.ones((x.shape[0],), jnp.float32) if w is None else w

  def finalize(sums, counts, c, labels, dist):
    return _finalize_sharded(sums, counts, c, metric=metric, empty=empty, x=x,
                             labels=labels, dist=dist, w=w_full, axes=axes)[0]

  def report(i, inertia, shift, converged):
    lax.cond(_shard_index(axes) == 0,
             lambda: jax.debug.callback(_print_progress, i, inertia, shift, converged),
             lambda: None)

  return lloyd._lloyd(x, c0, w, tol_abs, k=k, max_iter=max_iter, metric=metric,
                      empty=empty, impl=impl, precision=precision, verbose=verbose,
                      config=config, combine=lambda t: lax.psum(t, axes),
                      finalize=finalize, report=report)


# ----------------------------------------------------------------------------
# sharded_kmeans
# ----------------------------------------------------------------------------

@functools.partial(
    jax.jit,
    static_argnames=("mesh", "axes", "n_valid", "k", "init_mode", "max_iter", "tol",
                     "metric", "n_init", "empty", "impl", "precision", "verbose",
                     "config"))
def _sharded_kmeans_jit(key, x, weights, init_array, *, mesh, axes, n_valid, k, init_mode,
                        max_iter, tol, metric, n_init, empty, impl, precision, verbose,
                        config):
  n_shards = _n_shards(mesh, axes)
  padded = x.shape[0] != n_valid
  args = [key, x] + [a for a in (weights, init_array) if a is not None]
  in_specs = [P(), P(axes, None)] + ([P(axes)] if weights is not None else []) + (
      [P()] if init_array is not None else [])

  def per_shard(key, x, *rest):
    rest = list(rest)
    w = rest.pop(0).astype(jnp.float32) if weights is not None else None
    c_init = rest.pop(0) if init_array is not None else None
    n_loc = x.shape[0]
    if padded:
      valid = _shard_index(axes) * n_loc + jnp.arange(n_loc) < n_valid
    else:
      valid = jnp.ones((n_loc,), bool)
    tol_abs = _data_tolerance_sharded(x, valid if w is None else valid & (w > 0), tol, axes)
    w_seed = jnp.ones((n_loc,), jnp.float32) if w is None else w
    run = functools.partial(_lloyd_sharded, k=k, max_iter=max_iter, metric=metric,
                            empty=empty, impl=impl, precision=precision, verbose=verbose,
                            config=config, axes=axes)

    def one(key):
      if init_mode == "array":
        c0 = c_init.astype(jnp.float32)
      elif init_mode == "random":
        c0 = _random_sharded(key, x, w_seed, k, axes)
      else:
        c0 = _kmeanspp_sharded(key, x, w_seed, k, metric, axes, n_shards,
                               _dispatch.resolve_precision("highest"))
      return run(x, w, c0, tol_abs)

    if n_init == 1:
      res = one(key)
    else:
      results = jax.vmap(one)(jax.random.split(key, n_init))
      inertia = jnp.where(jnp.isnan(results.inertia), jnp.inf, results.inertia)
      res = jax.tree.map(lambda a: a[jnp.argmin(inertia)], results)
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
  from flashkmeans_jax import lloyd  # lazy: lloyd dispatches here
  _checks.check_points(x)
  n = x.shape[0]
  _check_weights(weights, n)
  static, init_array = lloyd._normalise_args(x, k, init, max_iter, tol, metric, None,
                                             n_init, empty, impl, precision)
  if check_finite:
    _checks.check_finite(x)
  mesh, axes = _resolve(x, mesh, axis_name)
  xs, ws, _ = _prepare(x, weights, mesh, axes)
  if init_array is not None:
    init_array = jnp.asarray(init_array)
  return _sharded_kmeans_jit(key, xs, ws, init_array, mesh=mesh, axes=axes, n_valid=n,
                             verbose=verbose, config=config, **static)


@functools.partial(jax.jit, static_argnames=("mesh", "axes", "k", "metric",
                                             "n_local_trials"))
def _sharded_pp_jit(key, x, w, *, mesh, axes, k, metric, n_local_trials):
  n_shards = _n_shards(mesh, axes)

  def per_shard(key, x, w):
    return _kmeanspp_sharded(key, x, w.astype(jnp.float32), k, metric, axes, n_shards,
                             _dispatch.resolve_precision("highest"), n_local_trials)

  return jax.shard_map(per_shard, mesh=mesh, in_specs=(P(), P(axes, None), P(axes)),
                       out_specs=P(), check_vma=False)(key, x, w)


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
  _checks.check_points(x)
  n = x.shape[0]
  k = _checks.check_k(k, n)
  metric = _checks.check_metric(metric)
  _check_weights(weights, n)
  mesh, axes = _resolve(x, mesh, axis_name)
  xs, ws, n_pad = _prepare(x, np.ones((n,), np.float32) if weights is None else weights,
                           mesh, axes)
  return _sharded_pp_jit(key, xs, ws, mesh=mesh, axes=axes, k=k, metric=metric,
                         n_local_trials=n_local_trials)


# ----------------------------------------------------------------------------
# sharded_assign / sharded_update
# ----------------------------------------------------------------------------

@functools.partial(jax.jit, static_argnames=("mesh", "axes", "n_valid", "metric", "impl",
                                             "precision", "config"))
def _sharded_assign_jit(x, centroids, *, mesh, axes, n_valid, metric, impl, precision,
                        config):
  padded = x.shape[0] != n_valid

  def per_shard(x, c):
    labels, dist = assign_mod._assign_diff(x, c, metric, impl, precision, config)
    if padded:
      labels = lax.all_gather(labels, axes, tiled=True)
      dist = lax.all_gather(dist, axes, tiled=True)
    return labels, dist

  spec = P() if padded else P(axes)
  labels, dist = jax.shard_map(per_shard, mesh=mesh, in_specs=(P(axes, None), P()),
                               out_specs=(spec, spec), check_vma=False)(x, centroids)
  return labels[:n_valid], dist[:n_valid]


def sharded_assign(x: Any, centroids: Any, *, mesh: Mesh | None = None,
                   axis_name: str | tuple[str, ...] | None = None,
                   metric: str = "sqeuclidean", impl: str | None = None,
                   precision: Any = None, config: Any = None) -> tuple[jax.Array, jax.Array]:
  """:func:`flashkmeans_jax.assign` with every device assigning its own rows
  (no collective). Labels and distances come back split like x (replicated
  when N had to be padded). Not differentiable (use ``assign`` on a shard
  inside your own ``shard_map`` for gradients)."""
  _checks.check_points(x)
  _checks.check_centroids(centroids, x.shape[1])
  metric = _checks.check_metric(metric)
  impl = _dispatch.resolve_impl(impl)
  precision = _dispatch.resolve_precision(precision)
  mesh, axes = _resolve(x, mesh, axis_name)
  xs, _, _ = _prepare(x, None, mesh, axes)
  return _sharded_assign_jit(xs, jnp.asarray(centroids), mesh=mesh, axes=axes,
                             n_valid=x.shape[0], metric=metric, impl=impl,
                             precision=precision, config=config)


@functools.partial(jax.jit, static_argnames=("mesh", "axes", "k", "metric", "empty", "impl"))
def _sharded_update_jit(x, labels, weights, previous, dist, *, mesh, axes, k, metric, empty,
                        impl):
  def per_shard(x, labels, w, previous, dist):
    sums, counts = update_mod._cluster_sums(x, labels, k, w, impl)
    sums, counts = lax.psum((sums, counts), axes)
    return _finalize_sharded(sums, counts, previous, metric=metric, empty=empty, x=x,
                             labels=labels, dist=dist, w=w, axes=axes)

  return jax.shard_map(per_shard, mesh=mesh,
                       in_specs=(P(axes, None), P(axes), P(axes), P(), P(axes)),
                       out_specs=(P(), P()), check_vma=False)(x, labels, weights, previous,
                                                              dist)


def sharded_update(x: Any, labels: Any, centroids_or_k: Any, *, mesh: Mesh | None = None,
                   axis_name: str | tuple[str, ...] | None = None, weights: Any = None,
                   metric: str = "sqeuclidean", empty: str = "keep", dist: Any = None,
                   impl: str | None = None) -> tuple[jax.Array, jax.Array]:
  """:func:`flashkmeans_jax.update` on row-sharded points: local sums and
  counts, one psum of O(K*D), identical centroids on every device."""
  _checks.check_points(x)
  n, d = x.shape
  _checks.check_labels(labels, n)
  _check_weights(weights, n)
  metric = _checks.check_metric(metric)
  empty = _checks.check_empty(empty)
  impl = _dispatch.resolve_impl(impl)
  if isinstance(centroids_or_k, int) and not isinstance(centroids_or_k, bool):
    k = _checks.check_k(centroids_or_k)
    previous = jnp.zeros((k, d), jnp.float32)
  else:
    _checks.check_centroids(centroids_or_k, d)
    previous = jnp.asarray(centroids_or_k)
    k = previous.shape[0]
  if empty == "farthest" and dist is None:
    raise ValueError('empty="farthest" needs dist (from assign)')
  mesh, axes = _resolve(x, mesh, axis_name)
  if weights is None:
    weights = np.ones((n,), np.float32)  # pad rows get 0 below
  xs, ws, n_pad = _prepare(x, weights, mesh, axes)
  lab = _place(labels, n_pad, NamedSharding(mesh, P(axes)))
  dst = _place(jnp.zeros((n,), jnp.float32) if dist is None else dist, n_pad,
               NamedSharding(mesh, P(axes)), fill=-np.inf)
  c, counts = _sharded_update_jit(xs, lab.astype(jnp.int32), ws, previous, dst, mesh=mesh,
                                  axes=axes, k=k, metric=metric, empty=empty, impl=impl)
  return c.astype(x.dtype), counts


# ----------------------------------------------------------------------------
# Partial-sum combiners (for streaming drivers)
# ----------------------------------------------------------------------------

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


def allreduce_sums(sums: Any, counts: Any) -> tuple[jax.Array, jax.Array]:
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
  mesh = data_mesh(axis_name="procs")
  n_local = jax.local_device_count()
  local_s = np.zeros((n_local,) + sums.shape, np.float32)
  local_c = np.zeros((n_local,) + counts.shape, np.float32)
  local_s[0], local_c[0] = sums, counts
  gs = jax.make_array_from_process_local_data(NamedSharding(mesh, P("procs")), local_s)
  gc = jax.make_array_from_process_local_data(NamedSharding(mesh, P("procs")), local_c)
  s, c = _allreduce_jit(gs, gc, mesh=mesh)
  return s.addressable_data(0), c.addressable_data(0)
