"""``KMeans``: a scikit-learn-style estimator on top of :func:`kmeans`.

The class follows scikit-learn's estimator conventions: the constructor only
stores its arguments (validation happens in :meth:`KMeans.fit`), fitted
attributes end with an underscore, ``fit`` returns ``self``, and
``get_params``/``set_params``/``clone``/``set_output`` work. When
scikit-learn is installed the class also inherits from its ``ClusterMixin``,
``TransformerMixin`` and ``BaseEstimator`` (so it drops into pipelines, grid
searches and ``check_estimator``); it stays an optional dependency
(:mod:`.compat`). Inputs may be NumPy arrays (or anything ``numpy.asarray``
takes) or JAX arrays; JAX arrays stay on their device. Fitted arrays are
stored as NumPy arrays, so a fitted estimator pickles like any
scikit-learn one.

Repeated calls are cheap: row counts are padded to a few buckets
(:mod:`.rows`), so a new N reuses a compiled program, and JAX's persistent
compilation cache is switched on (:mod:`.compile_cache`; opt out with
``FLASHKMEANS_JAX_NO_COMPILE_CACHE=1``). Differences from
``sklearn.cluster.KMeans`` are listed in ``docs/usage.md``.
"""

from __future__ import annotations

import warnings
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from flashkmeans_jax.api.kmeans import kmeans
from flashkmeans_jax.api.ops import assign, init_kmeans_plusplus, init_random
from flashkmeans_jax.api.streaming import kmeans_streaming
from flashkmeans_jax.core import validation
from flashkmeans_jax.drivers.sharded import mesh
from flashkmeans_jax.estimator import compat
from flashkmeans_jax.estimator import inputs
from flashkmeans_jax.estimator import rows as rows_mod
from flashkmeans_jax.estimator.compile_cache import enable_compilation_cache
from flashkmeans_jax.estimator.distances import pairwise_distances_tiled
from flashkmeans_jax.estimator.minibatch import minibatch_step
from flashkmeans_jax.estimator.order import drop_padding, host_cluster_order

__all__ = ["KMeans"]

ALGORITHMS = ("lloyd",)


class KMeans(*compat.BASES):
  """Exact k-means (Lloyd) with scikit-learn's estimator interface.

  Parameters (scikit-learn's first, then the library's):
    n_clusters: number of clusters K.
    init: ``"k-means++"`` (greedy k-means++, as scikit-learn), ``"random"``
      (K distinct points), ``"k-means||"`` (scalable k-means++, the library's
      extension for large K), an array ``[K, D]`` of starting centroids, or a
      callable ``init(X, n_clusters, random_state) -> [K, D]``.
    n_init: ``"auto"`` (scikit-learn's default: 1 run for ``"k-means++"``,
      ``"k-means||"`` and an array, 10 for ``"random"`` and a callable) or a number of
      seedings; the lowest inertia wins. An array init runs once (with a
      ``RuntimeWarning`` when ``n_init > 1``).
    max_iter: most Lloyd iterations per run.
    tol: relative tolerance on the centroid shift (scikit-learn's rule: stop
      when the summed squared shift is at most ``tol * mean(var(X, axis=0))``).
    verbose: print inertia and centroid shift every iteration.
    random_state: ``None`` (NumPy's global generator), an int, or a
      ``numpy.random.RandomState``/``Generator``; it seeds a JAX key.
    copy_x: accepted for scikit-learn compatibility; X is never modified.
    algorithm: ``"lloyd"``, the only one (exact Lloyd iterations).
    empty: empty-cluster policy: ``"farthest"`` (default, scikit-learn's:
      an empty cluster restarts at the point farthest from its centroid) or
      ``"keep"`` (it keeps its previous centroid).
    metric: ``"sqeuclidean"``, ``"cosine"`` (spherical k-means) or ``"dot"``.
    dtype: ``None`` keeps float16/bfloat16/float32 input and casts float64
      and integers to float32 (to float64 when ``jax_enable_x64`` is on); or
      ``"float16"``, ``"bfloat16"``, ``"float32"`` to cast to.
    impl: ``None``/``"auto"``, ``"xla"``, ``"pallas"`` or ``"pallas_interpret"``
      (see :func:`flashkmeans_jax.assign`).
    precision: float32 distance precision, as :func:`flashkmeans_jax.assign`
      takes it (``None``: JAX's default, TF32 on NVIDIA GPUs; ``"highest"``;
      ``"F16_F16_F32"``: float16 tensor cores at TF32's mantissa).
    chunk_size: when set, fit out of core with
      :func:`flashkmeans_jax.kmeans_streaming`, moving ``chunk_size`` rows to
      the device at a time (X stays on the host, e.g. a memmap).

  Attributes (after ``fit``):
    cluster_centers_: ``[K, D]`` centroids (NumPy, in the clustering dtype).
    labels_: ``int32[N]`` label of every training point.
    order_: ``int32[N]`` the training points grouped by cluster: a stable
      permutation (``np.argsort(labels_, kind="stable")``), so cluster
      ``j``'s points are ``order_[offsets_[j]:offsets_[j + 1]]`` in
      ascending index order and ``X[order_]`` is X in cluster order (sparse
      attention, inverted lists). From the sort the in-memory fit's update
      already does (``kmeans(..., return_order=True)``); a streamed fit
      (``chunk_size``) and ``partial_fit`` sort ``labels_`` on the host.
    offsets_: ``int32[K + 1]`` where each cluster's run of ``order_``
      starts (``offsets_[0] == 0``, ``offsets_[K] == N``).
    sizes_: ``int32[K]`` training points per cluster (unweighted:
      ``np.bincount(labels_, minlength=K)``; 0 for an empty cluster).
    inertia_: weighted sum of distances of the training points to their
      centroid (squared Euclidean distances for the default metric).
    n_iter_: Lloyd iterations run by the kept run (0 after ``partial_fit``
      alone).
    inertia_history_: ``float32[n_iter_]`` inertia at the start of every
      iteration (for :func:`flashkmeans_jax.plotting.plot_inertia`).
    converged_: whether the kept run stopped on ``tol`` rather than ``max_iter``.
    n_features_in_: number of features D seen in ``fit``.
    n_steps_: mini-batches seen by ``partial_fit`` since the last ``fit``.
  """

  def __init__(self, n_clusters: int = 8, *, init: Any = "k-means++", n_init: Any = "auto",
               max_iter: int = 300, tol: float = 1e-4, verbose: bool = False,
               random_state: Any = None, copy_x: bool = True, algorithm: str = "lloyd",
               empty: str = "farthest", metric: str = "sqeuclidean", dtype: Any = None,
               impl: str | None = None, precision: Any = None,
               chunk_size: int | None = None):
    self.n_clusters = n_clusters
    self.init = init
    self.n_init = n_init
    self.max_iter = max_iter
    self.tol = tol
    self.verbose = verbose
    self.random_state = random_state
    self.copy_x = copy_x
    self.algorithm = algorithm
    self.empty = empty
    self.metric = metric
    self.dtype = dtype
    self.impl = impl
    self.precision = precision
    self.chunk_size = chunk_size

  # scikit-learn tags: transform returns float32 whatever it is given.
  def __sklearn_tags__(self):
    tags = super().__sklearn_tags__()
    if tags.transformer_tags is not None:
      tags.transformer_tags.preserves_dtype = ["float32"]
    return tags

  # --------------------------------------------------------------- helpers
  def _check_fitted(self):
    if not hasattr(self, "cluster_centers_"):
      raise compat.NotFittedError(
          f"This {type(self).__name__} instance is not fitted yet. Call 'fit' with "
          "appropriate arguments before using this estimator.")

  def _impl(self, dtype: Any) -> str:
    impl = validation.check_impl(self.impl)
    # The kernels have no float64 path: float64 clustering (x64) runs on XLA.
    return "xla" if (impl == "auto" and np.dtype(dtype) == np.float64) else impl

  def _assign(self, x):
    enable_compilation_cache()
    return assign(x, jnp.asarray(self.cluster_centers_), metric=self.metric,
                  impl=self._impl(x.dtype), precision=self.precision, check_finite=False)

  def _options(self):
    """Checked scalar parameters shared by ``fit`` and ``partial_fit``."""
    validation.check_choice(self.algorithm, "algorithm", ALGORITHMS)
    validation.resolve_precision(self.precision)
    return validation.check_metric(self.metric)

  # ------------------------------------------------------------------- fit
  def fit(self, X: Any, y: Any = None, sample_weight: Any = None) -> "KMeans":
    """Clusters X (``[n_samples, n_features]``, NumPy or JAX). ``y`` is ignored."""
    del y
    enable_compilation_cache()
    metric = self._options()
    chunk = validation.check_optional_positive_int(self.chunk_size, "chunk_size")
    empty = validation.check_empty(self.empty)
    x, n = inputs.prepare_x(self, X, reset=True, mode="host" if chunk else "device")
    name = type(self).__name__
    k = validation.check_k(self.n_clusters, n, name="n_clusters", n_name="n_samples")
    max_iter = validation.check_positive_int(self.max_iter, "max_iter")
    tol = validation.check_tol(self.tol)
    runs = inputs.n_init_runs(self.init, self.n_init, name)
    # The resolved number of runs, under scikit-learn's name (its tests read it).
    self._n_init = runs
    w = inputs.sample_weight(sample_weight, n, fit=True)
    seed = inputs.seed_from_random_state(self.random_state)
    init, runs = inputs.init_runs(self.init, lambda: np.asarray(x)[:n], k, x.shape[1], seed,
                                  runs, name, np.dtype(x.dtype))
    # X, init and the weights are checked above: the calls below need not
    # look at the data again. Padded rows carry weight 0.
    common = dict(n_init=runs, max_iter=max_iter, tol=tol, metric=metric, empty=empty,
                  impl=self._impl(x.dtype), precision=self.precision,
                  verbose=bool(self.verbose), check_finite=False)
    key = jax.random.key(seed)
    if chunk is not None:
      def run(start):
        return kmeans_streaming(key, x, k, chunk_size=chunk, weights=w, init=start, **common)
    else:
      wp = rows_mod.row_weights(w, n, x.shape[0])
      # The update's sort gives order_ at no extra pass (not on row-sharded
      # X, whose driver has no such output: sorted on the host instead).
      order = not mesh.is_row_sharded(x)

      def run(start):
        return kmeans(key, x, k, weights=wp, init=start, return_order=order, **common)
    results = [jax.device_get(run(s)) for s in (init if isinstance(init, list) else [init])]
    scores = [float(r.inertia) if np.isfinite(r.inertia) else np.inf for r in results]
    res = results[int(np.argmin(scores))]
    self._set_fit(res, n, k, w)
    return self

  def _set_fit(self, res, n: int, k: int, w: np.ndarray | None) -> None:
    self.cluster_centers_ = np.asarray(res.centroids)
    self.labels_ = np.asarray(res.labels, dtype=np.int32)[:n]
    self._set_order(res.order, k)
    self.inertia_ = float(res.inertia)
    self.n_iter_ = int(res.n_iter)
    self.converged_ = bool(res.converged)
    self.inertia_history_ = np.asarray(res.inertia_history, np.float32)[:self.n_iter_]
    self.n_steps_ = 0
    # partial_fit continues from these centres, each weighing what it holds.
    self._counts = np.bincount(self.labels_, weights=w, minlength=k).astype(np.float32)
    self._codebook32 = self.cluster_centers_.astype(np.float32)
    found = len(np.unique(self.labels_))
    if found < k:
      # scikit-learn's wording first (its tests match it), then the other cause.
      warnings.warn(f"Number of distinct clusters ({found}) found smaller than n_clusters "
                    f"({k}). Possibly due to duplicate points in X, or (empty='keep') "
                    "clusters that stayed empty.", compat.ConvergenceWarning, stacklevel=3)

  def _set_order(self, device_order, k: int) -> None:
    """``order_``, ``offsets_``, ``sizes_`` of ``labels_``: from the run's
    own order (padded rows dropped) or sorted on the host."""
    got = (host_cluster_order(self.labels_, k) if device_order is None
           else drop_padding(device_order, self.labels_, k))
    self.order_, self.offsets_, self.sizes_ = got

  # ------------------------------------------------------------ partial_fit
  def partial_fit(self, X: Any, y: Any = None, sample_weight: Any = None) -> "KMeans":
    """One mini-batch k-means step on the batch X, as
    ``sklearn.cluster.MiniBatchKMeans.partial_fit``: the batch is assigned to
    the current centres and each centre moves to the weighted mean of every
    point it has absorbed, so its learning rate is ``w / (W + w)`` (``w`` the
    batch's weight for it, ``W`` all earlier weight). The first call seeds
    the centres from the batch with ``init`` (a previous ``fit`` counts as a
    start: each centre then weighs the points it was fitted on). Afterwards
    ``labels_``, ``order_``/``offsets_``/``sizes_`` and ``inertia_`` are the
    batch's against the updated centres.
    No random reassignment of small clusters is made (scikit-learn's
    ``reassignment_ratio=0``).
    """
    del y
    enable_compilation_cache()
    metric = self._options()
    first = not hasattr(self, "cluster_centers_")
    x, n = inputs.prepare_x(self, X, reset=first)
    w = inputs.sample_weight(sample_weight, n, fit=first)
    wp = rows_mod.row_weights(w, n, x.shape[0])
    wp = jnp.ones((x.shape[0],), jnp.float32) if wp is None else jnp.asarray(wp)
    impl = self._impl(x.dtype)
    if first:
      k = validation.check_k(self.n_clusters, n, name="n_clusters", n_name="n_samples")
      codebook = self._seed_batch(x, n, k, wp, metric)
      counts = np.zeros((k,), np.float32)
      self.n_iter_, self.converged_ = 0, False
      self.inertia_history_ = np.zeros((0,), np.float32)
      self.n_steps_ = 0
    else:
      codebook = getattr(self, "_codebook32", self.cluster_centers_.astype(np.float32))
      counts = self._counts
    state, labels, dist = jax.device_get(minibatch_step(
        jnp.asarray(codebook, jnp.float32), jnp.asarray(counts),
        jnp.asarray(self.n_steps_, jnp.int32), x, wp, metric=metric, impl=impl,
        precision=self.precision))
    self._codebook32 = np.asarray(state.codebook)
    self._counts = np.asarray(state.weight_sums)
    self.cluster_centers_ = self._codebook32.astype(x.dtype)
    self.labels_ = np.asarray(labels, np.int32)[:n]
    self._set_order(None, self._codebook32.shape[0])
    d = np.asarray(dist, np.float64)[:n]
    self.inertia_ = float(np.sum(d if w is None else d * w))
    self.n_steps_ += 1
    return self

  def _seed_batch(self, x, n: int, k: int, wp, metric: str) -> np.ndarray:
    seed = inputs.seed_from_random_state(self.random_state)
    name = type(self).__name__
    init, _ = inputs.init_runs(self.init, lambda: np.asarray(x)[:n], k, x.shape[1], seed, 1,
                               name, np.dtype(x.dtype))
    if isinstance(init, list):
      return init[0]
    key = jax.random.key(seed)
    if init == "random":
      return np.asarray(init_random(key, x, k, wp))
    return np.asarray(init_kmeans_plusplus(key, x, k, wp, metric=metric))

  # --------------------------------------------------------------- predict
  def predict(self, X: Any) -> np.ndarray:
    """Index of the nearest centroid for every row of X (NumPy ``int32[N]``)."""
    self._check_fitted()
    x, n = inputs.prepare_x(self, X, reset=False)
    labels, _ = self._assign(x)
    return np.asarray(labels, dtype=np.int32)[:n]

  def fit_predict(self, X: Any, y: Any = None, sample_weight: Any = None) -> np.ndarray:
    """``fit(X)`` then the training labels ``labels_``."""
    return self.fit(X, y, sample_weight=sample_weight).labels_

  def transform(self, X: Any) -> np.ndarray:
    """Distances from every row of X to every centroid, NumPy ``float32 [N, K]``.

    With ``metric="sqeuclidean"`` the values are Euclidean distances (the
    square roots), as scikit-learn's ``KMeans.transform`` returns; with
    ``"cosine"`` and ``"dot"`` they are that metric's distances. Summed from
    direct differences, so a centroid is at distance exactly 0 from itself,
    and built in row tiles, so at most one ``[tile, K]`` block is on the
    device at a time.
    """
    self._check_fitted()
    enable_compilation_cache()
    x, n = inputs.prepare_x(self, X, reset=False, mode="tiles")
    return pairwise_distances_tiled(x, self.cluster_centers_, metric=self.metric,
                                    sqrt=(self.metric == "sqeuclidean"))[:n]

  def fit_transform(self, X: Any, y: Any = None, sample_weight: Any = None) -> np.ndarray:
    """``fit(X)`` then ``transform(X)``."""
    return self.fit(X, y, sample_weight=sample_weight).transform(X)

  def score(self, X: Any, y: Any = None, sample_weight: Any = None) -> float:
    """Negative inertia of X against the fitted centroids (higher is better)."""
    del y
    self._check_fitted()
    x, n = inputs.prepare_x(self, X, reset=False)
    w = inputs.sample_weight(sample_weight, n)
    _, dist = self._assign(x)
    dist = np.asarray(dist, np.float64)[:n]
    return -float(np.sum(dist if w is None else dist * w))

  def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
    """Names of ``transform``'s K output columns: ``kmeans0``, ``kmeans1``, ...
    (scikit-learn's convention; ``input_features`` does not change them)."""
    del input_features
    self._check_fitted()
    prefix = type(self).__name__.lower()
    return np.asarray([f"{prefix}{i}" for i in range(self.cluster_centers_.shape[0])],
                      dtype=object)
