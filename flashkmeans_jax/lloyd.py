"""``kmeans``: Lloyd's algorithm as one jit-compiled ``lax.while_loop``.

One iteration is ``assign`` (labels and distances for the current centroids)
then ``update`` (means of the new clusters); the loop stops when the squared
centroid shift summed over clusters is at most ``tol * mean(var(x, axis=0))``
(scikit-learn's criterion) or after ``max_iter`` iterations. After the loop
one more ``assign`` computes labels and inertia for the returned centroids,
so the three always belong together. No value leaves the device inside the
loop (the while predicate is a device scalar).

``kmeans`` is not differentiated (the argmin has no useful gradient); for a
loss on distances use :func:`flashkmeans_jax.assign`, whose distances are
differentiable.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from flashkmeans_jax import _checks
from flashkmeans_jax import _dispatch
from flashkmeans_jax import assignment as assign_mod
from flashkmeans_jax import seeding as init_mod
from flashkmeans_jax import centroid_update as update_mod
from flashkmeans_jax._types import KMeansResult

__all__ = ["kmeans", "batched_kmeans"]


def _inertia(dist, weights):
  return jnp.sum(dist) if weights is None else jnp.sum(weights.astype(jnp.float32) * dist)


def _print_progress(i, inertia, shift, converged):
  print(f"[flashkmeans_jax] iter {int(i):4d}  inertia {float(inertia):.6g}  "
        f"shift {float(shift):.3g}{'  converged' if bool(converged) else ''}", flush=True)


def _data_tolerance(x, tol, weights=None):
  """``tol`` times the mean per-feature variance of x, in float32.

  Rows holding NaN/Inf are left out (as they are from the updates): one bad
  point would otherwise make the tolerance NaN and the loop never converge.
  Rows of weight 0 (padding of ragged batches) are left out too, so padding
  cannot change when a member stops; positive weights do not weigh the
  variance (scikit-learn's rule).
  """
  if tol == 0:
    return jnp.float32(0.0)
  xf = x.astype(jnp.float32)
  ok = jnp.all(jnp.isfinite(xf), axis=-1, keepdims=True)
  if weights is not None:
    ok = ok & (weights > 0)[:, None]
  cnt = jnp.maximum(jnp.sum(ok, dtype=jnp.float32), 1.0)
  xf = jnp.where(ok, xf, 0.0)
  mean = jnp.sum(xf, axis=0) / cnt
  var = jnp.sum(jnp.where(ok, jnp.square(xf - mean), 0.0), axis=0) / cnt
  return jnp.float32(tol) * jnp.mean(var)


def _lloyd(x, c0, weights, tol_abs, *, k, max_iter, metric, empty, impl, precision,
           verbose, config, combine=None, finalize=None, report=None):
  """The Lloyd while_loop on the points it is given.

  The hooks let the data-parallel driver reuse it on one shard: ``combine``
  reduces ``(sums, counts, inertia)`` across shards (default: nothing to
  combine), ``finalize(sums, counts, c, labels, dist)`` makes the new
  centroids (default: :func:`finalize_centroids` with this call's options)
  and ``report(i, inertia, shift, converged)`` prints progress when
  ``verbose``.
  """
  combine = combine or (lambda t: t)
  if finalize is None:
    def finalize(sums, counts, c, labels, dist):
      return update_mod.finalize_centroids(
          sums, counts, c, metric=metric, empty=empty, x=x, labels=labels, dist=dist,
          weights=weights)[0]
  if report is None:
    def report(i, inertia, shift, converged):
      jax.debug.callback(_print_progress, i, inertia, shift, converged)

  def assign_(c):
    return assign_mod._assign_diff(x, c, metric, impl, precision, config)

  def cond(state):
    i, _, converged, _ = state
    return (i < max_iter) & jnp.logical_not(converged)

  def body(state):
    i, c, _, hist = state
    labels, dist = assign_(c)
    sums, counts = update_mod._cluster_sums(x, labels, k, weights, impl)
    sums, counts, inertia = combine((sums, counts, _inertia(dist, weights)))
    # One materialised new_c for both the carry and the shift: under vmap XLA
    # otherwise recomputes it in two fusions that round differently, so a
    # fixed point shows a ~1e-14 shift and tol=0 never converges.
    new_c = lax.optimization_barrier(finalize(sums, counts, c, labels, dist))
    shift = jnp.sum(jnp.square(new_c - c))
    converged = shift <= tol_abs
    if verbose:
      report(i, inertia, shift, converged)
    return i + 1, new_c, converged, hist.at[i].set(inertia)

  state = (jnp.int32(0), c0.astype(jnp.float32), jnp.bool_(False),
           jnp.full((max_iter,), jnp.nan, jnp.float32))
  n_iter, c, converged, hist = lax.while_loop(cond, body, state)
  labels, dist = assign_(c)
  return KMeansResult(centroids=c.astype(x.dtype), labels=labels,
                      inertia=combine((None, None, _inertia(dist, weights)))[2],
                      n_iter=n_iter, converged=converged, inertia_history=hist)


@functools.partial(
    jax.jit,
    static_argnames=("k", "init_mode", "max_iter", "tol", "metric", "n_init", "empty",
                     "impl", "precision", "verbose", "config"))
def _kmeans_jit(key, x, weights, init_array, *, k, init_mode, max_iter, tol, metric,
                n_init, empty, impl, precision, verbose, config):
  tol_abs = _data_tolerance(x, tol, weights)
  run = functools.partial(_lloyd, k=k, max_iter=max_iter, metric=metric, empty=empty,
                          impl=impl, precision=precision, verbose=verbose, config=config)

  def one(key):
    if init_mode == "array":
      c0 = init_array.astype(jnp.float32)
    else:
      c0 = init_mod.init_centroids(key, x, k, init_mode, weights, metric=metric)
    return run(x, c0, weights, tol_abs)

  if n_init == 1:
    return one(key)
  results = jax.vmap(one)(jax.random.split(key, n_init))
  inertia = jnp.where(jnp.isnan(results.inertia), jnp.inf, results.inertia)
  best = jnp.argmin(inertia)
  return jax.tree.map(lambda a: a[best], results)


def _normalise_args(x, k, init, max_iter, tol, metric, weights, n_init, empty, impl,
                    precision, batch=()):
  n, d = x.shape[-2:]
  k = _checks.check_k(k, n)
  metric = _checks.check_metric(metric)
  max_iter = _checks.check_positive_int(max_iter, "max_iter")
  n_init = _checks.check_positive_int(n_init, "n_init")
  tol = _checks.check_tol(tol)
  empty = _checks.check_empty(empty)
  # Every member and restart runs in the same launches, so the work that
  # decides between XLA and the kernels is the whole batch's.
  impl = _dispatch.resolve_impl(impl, n, k, batch=math.prod(batch) * n_init)
  precision = _dispatch.resolve_precision(precision)
  _checks.check_weights(weights, n, batch, require_positive=True)
  if isinstance(init, str):
    init_mode, init_array = _checks.check_init_name(init), None
  elif hasattr(init, "shape"):
    init_mode, init_array = "array", init
    if batch and init.ndim not in (2, 3):
      raise ValueError(f"init must have shape [k, D] (shared) or [B, k, D], got "
                       f"shape {tuple(init.shape)}")
    if init.ndim == 2:
      _checks.check_centroids(init, d, "init", k=k)
    else:
      _checks.check_centroids(init, d, "init", k=k, batch=batch)
    n_init = 1  # an explicit start leaves nothing to restart (scikit-learn does the same)
  else:
    raise TypeError(
        f"init must be 'k-means++', 'random' or an array [k, D], got {type(init).__name__}")
  return dict(k=k, init_mode=init_mode, max_iter=max_iter, tol=tol, metric=metric,
              n_init=n_init, empty=empty, impl=impl, precision=precision), init_array


def kmeans(key: jax.Array, x: jax.Array, k: int, *, init: str | jax.Array = "k-means++",
           max_iter: int = 300, tol: float = 1e-4, metric: str = "sqeuclidean",
           weights: jax.Array | None = None, n_init: int = 1, empty: str = "keep",
           impl: str | None = None, precision: Any = None, check_finite: bool = True,
           verbose: bool = False, config: Any = None) -> KMeansResult:
  """Exact k-means (Lloyd's algorithm) in one compiled loop.

  Args:
    key: a ``jax.random`` key (seeding and ``n_init`` restarts).
    x: ``[N, D]`` points, float16, bfloat16 or float32. Never upcast as a
      whole: distances and sums accumulate in float32 tile by tile.
    k: number of clusters, ``1 <= k <= N`` (a Python int: it fixes shapes).
    init: ``"k-means++"`` (greedy, as scikit-learn), ``"random"`` (k distinct
      points) or an array ``[k, D]`` of starting centroids (then
      ``n_init`` is 1).
    max_iter: most Lloyd iterations.
    tol: stop when ``sum_k ||c_new - c_old||^2 <= tol * mean(var(x, axis=0))``
      (scikit-learn's rule). ``tol=0`` stops only when an iteration changes
      no centroid (a fixed point) or at ``max_iter``.
    metric: ``"sqeuclidean"``, ``"cosine"`` (spherical k-means: unit-norm
      centroids) or ``"dot"`` (see :func:`assign`).
    weights: optional ``float[N]`` sample weights >= 0. Zero-weight points are
      assigned but never move a centroid or get picked as a seed, which is how
      padded (ragged) data is masked.
    n_init: independent runs from different seeds, run as one batch
      (``vmap``); the lowest inertia wins.
    empty: empty-cluster policy, ``"keep"`` or ``"farthest"`` (see
      :func:`update`).
    impl: ``None``/``"auto"``, ``"xla"``, ``"pallas"``, ``"pallas_interpret"``.
      ``None`` runs the Pallas kernels on CUDA GPUs, except for tiny problems
      (``N*K < 2^22``, and below ``2^25`` pairs over all ``n_init`` restarts)
      where XLA is as fast; XLA elsewhere. Under ``jax.vmap`` the choice sees
      one member, so pass ``"pallas"`` for large batches of small problems
      (``batched_kmeans`` counts its members itself).
    precision: float32 matmul precision (see :func:`assign`).
    check_finite: on an eager call, raise ``ValueError`` if x holds NaN/Inf.
      Inside ``jit``/``vmap`` it cannot raise: non-finite points are then left
      out of every update and show up as a NaN inertia.
    verbose: print inertia and centroid shift every iteration (works inside
      ``jit`` through ``jax.debug.callback``).
    config: optional kernel configuration (see :func:`assign`).

  Returns:
    :class:`KMeansResult` with ``centroids [k, D]`` (x's dtype), ``labels
    int32[N]``, ``inertia``, ``n_iter``, ``converged`` and
    ``inertia_history float32[max_iter]``.

  A concrete ``jax.Array`` split over devices on axis 0 runs data-parallel
  (:func:`flashkmeans_jax.distributed.sharded_kmeans`).
  """
  _checks.check_key(key)
  # Data-parallel path (issue #9): x row-sharded over more than one device.
  from flashkmeans_jax import distributed
  if distributed.is_row_sharded(x):
    return distributed.sharded_kmeans(
        key, x, k, init=init, max_iter=max_iter, tol=tol, metric=metric, weights=weights,
        n_init=n_init, empty=empty, impl=impl, precision=precision,
        check_finite=check_finite, verbose=verbose, config=config)
  _checks.check_points(x)
  static, init_array = _normalise_args(x, k, init, max_iter, tol, metric, weights, n_init,
                                       empty, impl, precision)
  if check_finite:
    _checks.check_finite(x)
    if init_array is not None:
      _checks.check_finite(init_array, "init")
  return _kmeans_jit(key, x, weights, init_array, verbose=verbose, config=config, **static)


def batched_kmeans(key: jax.Array, x: jax.Array, k: int, *,
                   init: str | jax.Array = "k-means++", max_iter: int = 300,
                   tol: float = 1e-4, metric: str = "sqeuclidean",
                   weights: jax.Array | None = None, n_init: int = 1,
                   empty: str = "keep", impl: str | None = None, precision: Any = None,
                   check_finite: bool = True, verbose: bool = False,
                   config: Any = None) -> KMeansResult:
  """B independent clusterings of ``x [B, N, D]`` in one compiled call.

  Equivalent to ``jax.vmap(kmeans)`` over the leading axis with keys
  ``jax.random.split(key, B)``: every member converges on its own (a
  converged member stops changing while the others go on) and has its own
  ``n_iter`` and ``converged``. The kernels see the batch as one grid.

  Ragged batches: pad every member to the same N and give padded points
  weight 0 in ``weights [B, N]``; they are assigned but never move a centroid
  nor become a seed. ``init`` may be a name, ``[k, D]`` (shared) or
  ``[B, k, D]``.

  Returns a :class:`KMeansResult` whose fields gain a leading ``B`` axis.
  """
  _checks.check_key(key)
  _checks.check_points(x, ndim=3)
  b = x.shape[0]
  static, init_array = _normalise_args(x, k, init, max_iter, tol, metric, weights, n_init,
                                       empty, impl, precision, batch=(b,))
  if check_finite:
    _checks.check_finite(x)
    if init_array is not None:
      _checks.check_finite(init_array, "init")
  run = functools.partial(_kmeans_jit, verbose=verbose, config=config, **static)
  init_axis = 0 if (init_array is not None and init_array.ndim == 3) else None
  w_axis = None if weights is None else 0
  return jax.vmap(run, in_axes=(0, 0, w_axis, init_axis))(
      jax.random.split(key, b), x, weights, init_array)
