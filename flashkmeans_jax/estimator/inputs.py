"""Input handling of the estimator: X, sample weights, seeds and ``init``.

X is converted with scikit-learn's ``validate_data`` when it is installed
(array-likes and its wording for a wrong rank, empty or complex X, which
its estimator checks assert); everything else is checked by the library's
own :mod:`flashkmeans_jax.core.validation` under the estimator's names, so a
bad value gets the error :func:`flashkmeans_jax.kmeans` gives.
"""

from __future__ import annotations

import numbers
import warnings
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from flashkmeans_jax.core import validation
from flashkmeans_jax.estimator import compat
from flashkmeans_jax.estimator import rows as rows_mod

__all__ = ["clustering_dtype", "init_runs", "n_init_runs", "prepare_x", "sample_weight",
           "seed_from_random_state"]

_F64 = np.dtype(np.float64)


def seed_from_random_state(random_state: Any) -> int:
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


def clustering_dtype(in_dtype: Any, dtype: Any) -> np.dtype:
  """``KMeans(dtype=...)``'s rule (:func:`validation.target_dtype`), except that
  with ``jax_enable_x64`` float64 and integer input stay in float64 when
  ``dtype`` is None, as scikit-learn keeps them."""
  in_dtype = np.dtype(in_dtype)
  target = validation.target_dtype(in_dtype, dtype)
  if dtype is None and jax.config.jax_enable_x64 and (
      in_dtype == _F64 or in_dtype.kind in "biu"):
    return _F64
  return target


def prepare_x(est: Any, X: Any, *, reset: bool, mode: str = "device"):
  """``(x, n)``: X checked and in the clustering dtype, and its real row count.

  ``mode="device"``: a JAX array padded to its row bucket (:mod:`.rows`);
  ``"host"``: a NumPy array, unpadded (the streaming fit); ``"tiles"``: NumPy
  input stays on the host unpadded, a JAX array is padded on its device
  (``transform``'s tiles).
  """
  is_jax = isinstance(X, jax.Array)
  if is_jax or (hasattr(X, "dtype") and np.dtype(X.dtype) == jnp.bfloat16):
    x = X
    validation.check_points(x, "X", numeric=True)
  elif compat.HAVE_SKLEARN:
    # NaN/Inf are left to the library's check below (one message everywhere).
    x = compat.validate_data(est, X, reset=reset, accept_sparse=False, dtype="numeric",
                             ensure_min_samples=1, ensure_all_finite=False)
  else:
    x = np.asarray(X)
    if x.dtype == object:
      x = x.astype(np.float64)
    validation.check_points(x, "X", numeric=True)
  if reset:
    est.n_features_in_ = int(x.shape[1])
    target = clustering_dtype(x.dtype, est.dtype)
  else:
    validation.check_n_features(x, est.n_features_in_, type(est).__name__)
    target = np.dtype(est.cluster_centers_.dtype)
  n = int(x.shape[0])
  if is_jax and mode != "host":
    # Padded first (one small program per N), so the finiteness check and
    # the cast below compile once per bucket; the padding repeats a real
    # row, so the verdict is X's.
    x = rows_mod.pad_rows(x, rows_mod.bucket_rows(n, x.shape[1] * target.itemsize))
  # NaN/Inf, and finite values that the cast to the clustering dtype would
  # turn into Inf (float64 data beyond float32's range, float16 beyond 65504).
  validation.check_finite(x, "X", hint=None, dtype=target)
  if is_jax and mode != "host":
    return (x if x.dtype == target else x.astype(target)), n
  x = np.asarray(x)
  x = x if x.dtype == target else x.astype(target)
  if mode == "device":
    x = jnp.asarray(rows_mod.pad_rows(x, rows_mod.bucket_rows(n, x.shape[1] * x.itemsize)))
  return x, n


def sample_weight(value: Any, n: int, fit: bool = False) -> np.ndarray | None:
  """Checked ``float32[n]`` host weights (a scalar is scikit-learn's constant weight)."""
  if isinstance(value, numbers.Real) and not isinstance(value, bool):
    value = np.full((n,), float(value))
  return validation.host_weights(value, n, name="sample_weight", require_positive=fit)


def n_init_runs(init: Any, n_init: Any, owner: str) -> int:
  """Runs of a fit, by scikit-learn's rules: ``"auto"`` is 1 for
  ``"k-means++"`` and an array, 10 for ``"random"`` and a callable; an array
  ``init`` runs once (with a ``RuntimeWarning`` if more were asked for)."""
  is_array = not isinstance(init, str) and not callable(init)
  if isinstance(n_init, str):
    validation.check_choice(n_init, "n_init", ("auto",))
    return 10 if (callable(init) or (isinstance(init, str) and init == "random")) else 1
  runs = validation.check_positive_int(n_init, "n_init")
  if is_array and runs != 1:
    # scikit-learn's wording (its tests match it).
    warnings.warn(f"Explicit initial center position passed: performing only one init in "
                  f"{owner} instead of n_init={runs}.", RuntimeWarning, stacklevel=3)
    return 1
  return runs


def _init_array(c: Any, k: int, d: int, owner: str, target: np.dtype) -> np.ndarray:
  c = np.asarray(c)
  if c.dtype.kind in "biu":  # integer starting centroids, as scikit-learn takes them
    c = c.astype(np.float32)
  if c.ndim == 2:  # the features first: a [N, d'] init is wrong in its features
    validation.check_n_features(c, d, owner, name="init")
  validation.check_init(c, k, d)
  work = target if target == _F64 else np.dtype(np.float32)
  validation.check_finite(c, "init", dtype=work)
  return c.astype(work)


def init_runs(init: Any, host_x: Any, k: int, d: int, seed: int, runs: int, owner: str,
              target: np.dtype) -> tuple[Any, int]:
  """``(init, runs)`` for the k-means calls: a checked name (``runs`` restarts
  inside one call), or a list of ``runs`` starting arrays (one call each:
  a callable is called ``runs`` times with one ``RandomState``, as
  scikit-learn does). ``host_x()`` gives X on the host for a callable."""
  if isinstance(init, str):
    return validation.check_init_name(init), runs
  if callable(init):
    rs = np.random.RandomState(seed)
    xh = np.asarray(host_x())
    return [_init_array(init(xh, k, rs), k, d, owner, target) for _ in range(runs)], 1
  return [_init_array(init, k, d, owner, target)], 1
