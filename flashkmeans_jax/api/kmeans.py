"""``kmeans`` and ``batched_kmeans``: the public Lloyd calls.

Arguments are validated once (:func:`flashkmeans_jax.core.validation.lloyd_options`);
row-sharded input goes to the sharded driver, everything else to the compiled
in-memory loop (:mod:`flashkmeans_jax.lloyd.loop`).

``kmeans`` is not differentiated (the argmin has no useful gradient); for a
loss on distances use :func:`flashkmeans_jax.assign`, whose distances are
differentiable.
"""

from __future__ import annotations

from typing import Any

import jax

from flashkmeans_jax.api import sharded as sharded_api
from flashkmeans_jax.core import validation
from flashkmeans_jax.core.types import KMeansResult
from flashkmeans_jax.drivers.sharded import mesh
from flashkmeans_jax.lloyd import loop

__all__ = ["kmeans", "batched_kmeans"]


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
      out of every update and show up as a NaN inertia. An eager ``init``
      array is checked for NaN/Inf either way.
    verbose: print inertia and centroid shift every iteration (works inside
      ``jit`` through ``jax.debug.callback``).
    config: optional kernel configuration (see :func:`assign`).

  Returns:
    :class:`KMeansResult` with ``centroids [k, D]`` (x's dtype), ``labels
    int32[N]``, ``inertia``, ``n_iter``, ``converged`` and
    ``inertia_history float32[max_iter]``.

  A concrete ``jax.Array`` split over devices on axis 0 runs data-parallel
  (:func:`flashkmeans_jax.sharded_kmeans`).
  """
  validation.check_key(key)
  if mesh.is_row_sharded(x):
    return sharded_api.sharded_kmeans(
        key, x, k, init=init, max_iter=max_iter, tol=tol, metric=metric, weights=weights,
        n_init=n_init, empty=empty, impl=impl, precision=precision,
        check_finite=check_finite, verbose=verbose, config=config)
  validation.check_points(x)
  opts, init_array = validation.lloyd_options(
      x, k, init=init, max_iter=max_iter, tol=tol, metric=metric, weights=weights,
      n_init=n_init, empty=empty, impl=impl, precision=precision, config=config,
      verbose=verbose, check_finite_values=check_finite)
  return loop.run_compiled(key, x, weights, init_array, opts)


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
  ``n_iter`` and ``converged``. The kernels see the batch as one grid. The
  clusterings are those of separate ``kmeans`` calls with those keys; the
  float32 inertias may differ from them in the last bit (the batched sums
  are reduced in another order).

  Ragged batches: pad every member to the same N and give padded points
  weight 0 in ``weights [B, N]``; they are assigned but never move a centroid
  nor become a seed. ``init`` may be a name, ``[k, D]`` (shared) or
  ``[B, k, D]``.

  Returns a :class:`KMeansResult` whose fields gain a leading ``B`` axis.
  """
  validation.check_key(key)
  validation.check_points(x, ndim=3)
  b = x.shape[0]
  opts, init_array = validation.lloyd_options(
      x, k, init=init, max_iter=max_iter, tol=tol, metric=metric, weights=weights,
      n_init=n_init, empty=empty, impl=impl, precision=precision, config=config,
      verbose=verbose, batch=(b,), check_finite_values=check_finite)
  return loop.run_batched(jax.random.split(key, b), x, weights, init_array, opts)
