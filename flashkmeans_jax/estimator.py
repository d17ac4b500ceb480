"""``KMeans``: a scikit-learn-style estimator on top of :func:`kmeans`.

The class follows scikit-learn's estimator conventions: the constructor only
stores its arguments (validation happens in :meth:`KMeans.fit`), fitted
attributes end with an underscore, ``fit`` returns ``self``, and
``get_params``/``set_params``/``clone`` work. When scikit-learn is installed
the class also inherits from its ``ClusterMixin``, ``TransformerMixin`` and
``BaseEstimator`` (so it drops into pipelines, grid searches and
``check_estimator``) and converts NumPy-like input with scikit-learn's
``validate_data`` (array-likes, sparse input, and its wording for a wrong rank,
empty or complex X, which ``check_estimator`` asserts); scikit-learn stays an
optional dependency and the module imports without it. Every other check --
JAX input, NaN/Inf, parameters, ``init``, ``sample_weight`` -- is the library's
own (:mod:`flashkmeans_jax.core.validation`), with the estimator's argument
names, so a bad value gets the error :func:`flashkmeans_jax.kmeans` gives.

Inputs may be NumPy arrays (or anything ``numpy.asarray`` takes) or JAX
arrays; JAX arrays stay on their device. Fitted arrays are stored as NumPy
arrays, so a fitted estimator pickles like any scikit-learn one.

Checks of scikit-learn's ``check_estimator`` that this class does not pass
(see ``tests/test_estimator.py`` and ``docs/usage.md``):

* ``check_sample_weight_equivalence_on_dense_data``: fitting with integer
  weights is not the same as fitting on repeated/removed rows *from the same
  random seed* (the k-means++ draws see different arrays), so the labels
  differ; scikit-learn marks its own ``KMeans`` the same way.

Skipped by scikit-learn itself here: the pandas checks (pandas is not a
dependency) and the array-API checks (they need ``SCIPY_ARRAY_API=1``).
Sparse input is rejected with scikit-learn's ``TypeError``, so the sparse
checks are not generated.
"""

from __future__ import annotations

import functools
import inspect
import numbers
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from flashkmeans_jax.api.kmeans import kmeans
from flashkmeans_jax.api.ops import assign
from flashkmeans_jax.api.streaming import kmeans_streaming
from flashkmeans_jax.core import validation

__all__ = ["KMeans"]

try:  # scikit-learn is optional
  from sklearn.base import BaseEstimator as _SkBase
  from sklearn.base import ClusterMixin as _SkCluster
  from sklearn.base import TransformerMixin as _SkTransformer
  from sklearn.exceptions import NotFittedError as _NotFittedError
  from sklearn.utils.validation import validate_data as _sk_validate_data
  _HAVE_SKLEARN = True
  _BASES: tuple[type, ...] = (_SkCluster, _SkTransformer, _SkBase)
except ImportError:  # pragma: no cover - exercised by the no-sklearn test
  _HAVE_SKLEARN = False
  _sk_validate_data = None

  class _NotFittedError(ValueError, AttributeError):
    """Raised when a method that needs a fitted estimator is called before fit."""

  class _ParamsBase:
    """``get_params``/``set_params`` as scikit-learn defines them, for when it is absent."""

    @classmethod
    def _get_param_names(cls) -> list[str]:
      sig = inspect.signature(cls.__init__)
      return sorted(p.name for p in sig.parameters.values()
                    if p.name != "self" and p.kind != p.VAR_KEYWORD)

    def get_params(self, deep: bool = True) -> dict[str, Any]:
      del deep
      return {name: getattr(self, name) for name in self._get_param_names()}

    def set_params(self, **params):
      valid = self._get_param_names()
      for name, value in params.items():
        if name not in valid:
          raise ValueError(
              f"Invalid parameter {name!r} for estimator {type(self).__name__}; "
              f"valid parameters are {valid}")
        setattr(self, name, value)
      return self

    def __repr__(self) -> str:
      defaults = {p.name: p.default for p in
                  inspect.signature(type(self).__init__).parameters.values()}
      changed = []
      for name, value in self.get_params().items():
        default = defaults.get(name)
        if isinstance(value, np.ndarray) or isinstance(default, np.ndarray):
          same = value is default
        else:
          same = value == default
        if not same:
          changed.append(f"{name}={value!r}")
      return f"{type(self).__name__}({', '.join(changed)})"

  _BASES = (_ParamsBase,)


NotFittedError = _NotFittedError

# Bytes of float32 distances one transform tile may hold on the device.
_TRANSFORM_TILE_BYTES = 16 * 1024 * 1024


def _is_jax_array(x: Any) -> bool:
  return isinstance(x, jax.Array)


def _seed_from_random_state(random_state: Any) -> int:
  """An int seed for ``jax.random.key`` following scikit-learn's random_state rules."""
  if random_state is None:
    return int(np.random.randint(np.iinfo(np.int32).max))  # NumPy's global generator
  if isinstance(random_state, numbers.Integral) and not isinstance(random_state, bool):
    return int(random_state)
  if isinstance(random_state, np.random.RandomState):
    return int(random_state.randint(np.iinfo(np.int32).max))
  if isinstance(random_state, np.random.Generator):
    return int(random_state.integers(np.iinfo(np.int32).max))
  raise ValueError(
      f"random_state must be None, an int, a numpy RandomState or Generator, got "
      f"{random_state!r}")


@functools.partial(jax.jit, static_argnames=("metric", "sqrt"))
def _distance_tile(xb, c, metric, sqrt):
  """float32 ``[tile, K]`` distances from a tile of points to every centroid."""
  hi = jax.lax.Precision.HIGHEST
  xf = xb.astype(jnp.float32)
  cf = c.astype(jnp.float32)
  dots = jnp.matmul(xf, cf.T, precision=hi)
  if metric == "sqeuclidean":
    xsq = jnp.sum(xf * xf, axis=1)[:, None]
    csq = jnp.sum(cf * cf, axis=1)[None, :]
    d = jnp.maximum(xsq - 2.0 * dots + csq, 0.0)
    return jnp.sqrt(d) if sqrt else d
  if metric == "cosine":
    xn = jnp.sqrt(jnp.sum(xf * xf, axis=1))[:, None]
    cn = jnp.sqrt(jnp.sum(cf * cf, axis=1))[None, :]
    denom = xn * cn
    cos = jnp.where(denom > 0, dots / jnp.where(denom > 0, denom, 1.0), 0.0)
    return jnp.where(xn > 0, 1.0 - cos, 1.0)
  return -dots


def pairwise_distances_tiled(x: Any, centroids: Any, *, metric: str = "sqeuclidean",
                             sqrt: bool = False,
                             tile_bytes: int = _TRANSFORM_TILE_BYTES) -> np.ndarray:
  """NumPy ``float32 [N, K]`` distances, built tile by tile on the device.

  At most ``tile_bytes`` of distances (one ``[tile, K]`` block) exist on the
  device at a time; every tile has the same shape (the last one is padded),
  so one compilation serves any N and a row's value never depends on N.
  """
  n = x.shape[0]
  k = centroids.shape[0]
  tile = int(max(1, min(4096, tile_bytes // (4 * k))))
  out = np.empty((n, k), np.float32)
  c = jnp.asarray(centroids)
  for start in range(0, n, tile):
    stop = min(n, start + tile)
    xb = x[start:stop]
    if stop - start < tile:
      xb = jnp.pad(jnp.asarray(xb), ((0, tile - (stop - start)), (0, 0)))
    out[start:stop] = np.asarray(_distance_tile(jnp.asarray(xb), c, metric, sqrt))[
        :stop - start]
  return out


class KMeans(*_BASES):
  """Exact k-means (Lloyd) with scikit-learn's estimator interface.

  Parameters:
    n_clusters: number of clusters K.
    init: ``"k-means++"`` (greedy k-means++, as scikit-learn), ``"random"``
      (K distinct points), an array ``[K, D]`` of starting centroids, or a
      callable ``init(X, n_clusters, random_state) -> [K, D]``.
    n_init: number of seedings run (in one batch); the lowest inertia wins.
      ``"auto"`` means 1, or 10 with ``init="random"`` (scikit-learn's rule).
      An explicit array or callable init runs once.
    max_iter: most Lloyd iterations per run.
    tol: relative tolerance on the centroid shift (scikit-learn's rule: stop
      when the summed squared shift is at most ``tol * mean(var(X, axis=0))``).
    random_state: ``None`` (NumPy's global generator), an int, or a
      ``numpy.random.RandomState``/``Generator``; it seeds a JAX key.
    metric: ``"sqeuclidean"``, ``"cosine"`` (spherical k-means) or ``"dot"``.
    dtype: ``None`` keeps float16/bfloat16/float32 input and casts anything
      else (float64, integers) to float32; or one of those three to cast to.
    impl: ``None``/``"auto"``, ``"xla"``, ``"pallas"`` or ``"pallas_interpret"``
      (see :func:`flashkmeans_jax.assign`).
    precision: float32 distance precision, as :func:`flashkmeans_jax.assign`
      takes it (``None``: JAX's default, TF32 on NVIDIA GPUs; ``"highest"``;
      ``"F16_F16_F32"``: float16 tensor cores at TF32's mantissa).
    chunk_size: when set, fit out of core with
      :func:`flashkmeans_jax.kmeans_streaming`, moving ``chunk_size`` rows to
      the device at a time (X stays on the host, e.g. a memmap).
    verbose: print inertia and centroid shift every iteration.

  Attributes (after ``fit``):
    cluster_centers_: ``[K, D]`` centroids (NumPy, in the clustering dtype).
    labels_: ``int32[N]`` label of every training point.
    inertia_: weighted sum of distances of the training points to their
      centroid (squared Euclidean distances for the default metric).
    n_iter_: Lloyd iterations run by the kept run.
    inertia_history_: ``float32[n_iter_]`` inertia at the start of every
      iteration (for :func:`flashkmeans_jax.plotting.plot_inertia`).
    converged_: whether the kept run stopped on ``tol`` rather than ``max_iter``.
    n_features_in_: number of features D seen in ``fit``.
  """

  def __init__(self, n_clusters: int = 8, *, init: Any = "k-means++", n_init: Any = 1,
               max_iter: int = 300, tol: float = 1e-4, random_state: Any = None,
               metric: str = "sqeuclidean", dtype: Any = None, impl: str | None = None,
               precision: Any = None, chunk_size: int | None = None, verbose: bool = False):
    self.n_clusters = n_clusters
    self.init = init
    self.n_init = n_init
    self.max_iter = max_iter
    self.tol = tol
    self.random_state = random_state
    self.metric = metric
    self.dtype = dtype
    self.impl = impl
    self.precision = precision
    self.chunk_size = chunk_size
    self.verbose = verbose

  # scikit-learn tags: transform returns float32 whatever it is given.
  def __sklearn_tags__(self):
    tags = super().__sklearn_tags__()
    if tags.transformer_tags is not None:
      tags.transformer_tags.preserves_dtype = ["float32"]
    return tags

  # ----------------------------------------------------------------- input
  def _validate_X(self, X: Any, *, reset: bool, host: bool = False):
    """Checked data in the clustering dtype: a JAX array (or NumPy if ``host``)."""
    if _is_jax_array(X) or (hasattr(X, "dtype") and np.dtype(X.dtype) == jnp.bfloat16):
      x = X
      validation.check_points(x, "X", numeric=True)
    elif _HAVE_SKLEARN:
      # NaN/Inf are left to the library's check below (one message everywhere).
      x = _sk_validate_data(self, X, reset=reset, accept_sparse=False, dtype="numeric",
                            ensure_min_samples=1, ensure_all_finite=False)
    else:
      x = np.asarray(X)
      if x.dtype == object:
        x = x.astype(np.float64)
      validation.check_points(x, "X", numeric=True)
    if reset:
      self.n_features_in_ = int(x.shape[1])
      target = validation.target_dtype(np.dtype(x.dtype), self.dtype)
    else:
      validation.check_n_features(x, self.n_features_in_, type(self).__name__)
      target = np.dtype(self.cluster_centers_.dtype)
    # NaN/Inf, and finite values that the cast to the clustering dtype would
    # turn into Inf (float64 data beyond float32's range, float16 beyond 65504).
    validation.check_finite(x, "X", hint=None, dtype=target)
    if host:
      x = np.asarray(x)
      return x if x.dtype == target else x.astype(target)
    x = jnp.asarray(x)
    return x if x.dtype == target else x.astype(target)

  def _check_sample_weight(self, sample_weight: Any, n: int, fit: bool = False):
    if isinstance(sample_weight, numbers.Real) and not isinstance(sample_weight, bool):
      sample_weight = np.full((n,), float(sample_weight))  # scikit-learn's scalar weight
    return validation.host_weights(sample_weight, n, name="sample_weight",
                                   require_positive=fit)

  def _check_fitted(self):
    if not hasattr(self, "cluster_centers_"):
      raise NotFittedError(
          f"This {type(self).__name__} instance is not fitted yet. Call 'fit' with "
          "appropriate arguments before using this estimator.")

  def _init_arg(self, x, k: int, seed: int):
    init = self.init
    if isinstance(init, str):
      return validation.check_init_name(init)
    if callable(init):
      init = init(np.asarray(x), k, np.random.RandomState(seed))
    c = np.asarray(init)
    if c.dtype.kind in "biu":  # integer starting centroids, as scikit-learn takes them
      c = c.astype(np.float32)
    validation.check_init(c, k, x.shape[1])
    validation.check_finite(c, "init", dtype=np.float32)
    return jnp.asarray(c, jnp.float32)

  def _n_init(self) -> int:
    if isinstance(self.n_init, str):
      validation.check_choice(self.n_init, "n_init", ("auto",))
      return 10 if (isinstance(self.init, str) and self.init == "random") else 1
    n_init = validation.check_positive_int(self.n_init, "n_init")
    return n_init if isinstance(self.init, str) else 1

  # ------------------------------------------------------------------- fit
  def fit(self, X: Any, y: Any = None, sample_weight: Any = None) -> "KMeans":
    """Clusters X (``[n_samples, n_features]``, NumPy or JAX). ``y`` is ignored."""
    del y
    chunk = validation.check_optional_positive_int(self.chunk_size, "chunk_size")
    x = self._validate_X(X, reset=True, host=chunk is not None)
    n = x.shape[0]
    k = validation.check_k(self.n_clusters, n, name="n_clusters", n_name="n_samples")
    metric = validation.check_metric(self.metric)
    max_iter = validation.check_positive_int(self.max_iter, "max_iter")
    tol = validation.check_tol(self.tol)
    impl = validation.resolve_impl(self.impl)
    validation.resolve_precision(self.precision)
    n_init = self._n_init()
    w = self._check_sample_weight(sample_weight, n, fit=True)
    seed = _seed_from_random_state(self.random_state)
    key = jax.random.key(seed)
    init = self._init_arg(x, k, seed)
    # X, init and the weights are checked above: the calls below need not
    # look at the data again.
    common = dict(init=init, n_init=n_init, max_iter=max_iter, tol=tol, metric=metric,
                  impl=impl, precision=self.precision, verbose=bool(self.verbose),
                  check_finite=False)
    if chunk is not None:
      res = kmeans_streaming(key, x, k, chunk_size=chunk, weights=w, **common)
    else:
      res = kmeans(key, x, k, weights=None if w is None else jnp.asarray(w), **common)
    res = jax.device_get(res)
    self.cluster_centers_ = np.asarray(res.centroids)
    self.labels_ = np.asarray(res.labels, dtype=np.int32)
    self.inertia_ = float(res.inertia)
    self.n_iter_ = int(res.n_iter)
    self.converged_ = bool(res.converged)
    hist = np.asarray(res.inertia_history, np.float32)
    self.inertia_history_ = hist[:self.n_iter_]
    return self

  # --------------------------------------------------------------- predict
  def predict(self, X: Any) -> np.ndarray:
    """Index of the nearest centroid for every row of X (NumPy ``int32[N]``)."""
    self._check_fitted()
    x = self._validate_X(X, reset=False)
    labels, _ = assign(x, jnp.asarray(self.cluster_centers_), metric=self.metric,
                       impl=self.impl, precision=self.precision, check_finite=False)
    return np.asarray(labels, dtype=np.int32)

  def fit_predict(self, X: Any, y: Any = None, sample_weight: Any = None) -> np.ndarray:
    """``fit(X)`` then the training labels ``labels_``."""
    return self.fit(X, y, sample_weight=sample_weight).labels_

  def transform(self, X: Any) -> np.ndarray:
    """Distances from every row of X to every centroid, NumPy ``float32 [N, K]``.

    With ``metric="sqeuclidean"`` the values are Euclidean distances (the
    square roots), as scikit-learn's ``KMeans.transform`` returns; with
    ``"cosine"`` and ``"dot"`` they are that metric's distances. Built in row
    tiles, so at most one ``[tile, K]`` block is on the device at a time.
    """
    self._check_fitted()
    x = self._validate_X(X, reset=False)
    return pairwise_distances_tiled(x, self.cluster_centers_, metric=self.metric,
                                    sqrt=(self.metric == "sqeuclidean"))

  def fit_transform(self, X: Any, y: Any = None, sample_weight: Any = None) -> np.ndarray:
    """``fit(X)`` then ``transform(X)``."""
    return self.fit(X, y, sample_weight=sample_weight).transform(X)

  def score(self, X: Any, y: Any = None, sample_weight: Any = None) -> float:
    """Negative inertia of X against the fitted centroids (higher is better)."""
    del y
    self._check_fitted()
    x = self._validate_X(X, reset=False)
    w = self._check_sample_weight(sample_weight, x.shape[0])
    _, dist = assign(x, jnp.asarray(self.cluster_centers_), metric=self.metric,
                     impl=self.impl, precision=self.precision, check_finite=False)
    dist = np.asarray(dist, np.float64)
    return -float(np.sum(dist if w is None else dist * w))
