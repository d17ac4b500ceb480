"""Argument checks shared by every public entry point, in one place.

Each check runs on shapes and dtypes, so it works on tracers and fires at
trace time under ``jit``; the messages name the argument, what was expected
and what was given. Checks on *values* (finite data, weights >= 0, labels in
range; :mod:`flashkmeans_jax.core.values`) run only when the array is
concrete -- an eager call, or a constant closed over by a traced function --
and are skipped for tracers, where a Python exception is impossible (see
``flashkmeans_jax.checked`` for the ``checkify`` route). Front ends (``KMeans``, the CLI) call the same functions
with their own argument names (``n_clusters``, ``X``, ``sample_weight``).
"""

from __future__ import annotations

import functools
import numbers
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from flashkmeans_jax.core import device
from flashkmeans_jax.core import dispatch
from flashkmeans_jax.core import precision as precision_mod
from flashkmeans_jax.core import values
from flashkmeans_jax.core.options import LloydOptions
# The option and scalar checks live in option_checks; they are part of this
# module's interface too (every front end calls validation.check_tol etc.).
from flashkmeans_jax.core.option_checks import (  # noqa: F401
    check_axes, check_bool, check_choice, check_empty, check_fraction, check_impl,
    check_init_name, check_metric, check_optional_positive_int, check_positive_float,
    check_positive_int, check_tol, seeding_options)
# check_finite is part of this module's interface: every entry point that
# takes data calls it as validation.check_finite.
from flashkmeans_jax.core.values import check_finite  # noqa: F401

__all__ = ["check_points", "check_centroids", "check_n_features", "check_k",
           "check_centroids_or_k", "check_farthest", "check_labels", "check_weights",
           "host_weights", "check_key", "check_devices", "check_sums", "resolve_impl",
           "resolve_precision", "check_init", "lloyd_options", "target_dtype",
           "check_finite", "check_axes", "check_bool", "check_choice", "check_empty",
           "check_fraction", "check_impl", "check_init_name", "check_metric",
           "check_optional_positive_int", "check_positive_float", "check_positive_int",
           "check_tol", "seeding_options"]

_FLOAT_DTYPES = tuple(np.dtype(d) for d in (jnp.float16, jnp.bfloat16, jnp.float32,
                                            jnp.float64))
# The dtypes the estimator and CLI cluster in without converting.
_KEEP_DTYPES = (np.dtype(jnp.float16), np.dtype(jnp.bfloat16), np.dtype(jnp.float32))


def check_points(x: Any, name: str = "x", ndim: int = 2, layout: str | None = None, *,
                 numeric: bool = False) -> None:
  """Checks that ``x`` is a floating array of rank ``ndim`` with no empty axis.

  ``numeric=True`` (front ends that cast their input) also accepts integer
  and bool dtypes.
  """
  if not hasattr(x, "shape") or not hasattr(x, "dtype"):
    raise TypeError(
        f"{name} must be an array (NumPy or JAX), got {type(x).__name__}")
  if x.ndim != ndim:
    expect = layout or ("[N, D]" if ndim == 2 else "[B, N, D]")
    raise ValueError(
        f"{name} must have rank {ndim} ({expect}), got shape {tuple(x.shape)}")
  dt = np.dtype(x.dtype)
  is_int = np.issubdtype(dt, np.integer) or dt == np.bool_
  if dt not in _FLOAT_DTYPES and not (numeric and is_int):
    kind = ("complex" if np.issubdtype(dt, np.complexfloating) else
            "integer" if is_int else "non-float")
    if numeric:
      raise TypeError(f"{name} must hold real numbers (float or integer), got {kind} "
                      f"dtype {dt}")
    raise TypeError(
        f"{name} must be float16, bfloat16, float32 or float64, got {kind} dtype {dt}; "
        "convert explicitly (e.g. x.astype(jnp.float32), or use the real part / "
        "stack real and imaginary parts for complex data)")
  if any(s == 0 for s in x.shape):
    raise ValueError(f"{name} must not have an empty axis, got shape {tuple(x.shape)}")


def check_centroids(c: Any, d: int, name: str = "centroids", k: int | None = None,
                    batch: tuple[int, ...] = ()) -> None:
  """``c`` is a float ``[k, D]`` (or ``[*batch, k, D]``) array with x's ``D``."""
  check_points(c, name, ndim=2 + len(batch), layout="[K, D]" if not batch else "[B, K, D]")
  if c.shape[-1] != d:
    raise ValueError(
        f"{name} must have D={d} columns like x, got shape {tuple(c.shape)}")
  if k is not None and c.shape[-2] != k:
    raise ValueError(f"{name} must have k={k} rows, got shape {tuple(c.shape)}")
  if tuple(c.shape[:-2]) != tuple(batch):
    raise ValueError(
        f"{name} batch axes {tuple(c.shape[:-2])} do not match x's {tuple(batch)}")


def check_n_features(x: Any, n_features: int, owner: str, name: str = "X") -> None:
  """``x`` has the ``n_features`` columns a fitted estimator saw (scikit-learn's wording,
  which its estimator checks assert)."""
  if x.shape[1] != n_features:
    raise ValueError(f"{name} has {x.shape[1]} features, but {owner} is expecting "
                     f"{n_features} features as input.")


def check_k(k: Any, n: int | None = None, name: str = "k", *, n_name: str = "N") -> int:
  """An integer ``1 <= k <= n`` (Python or NumPy int); returns a Python int."""
  if isinstance(k, bool) or not isinstance(k, numbers.Integral):
    raise TypeError(f"{name} must be a Python int, got {type(k).__name__} ({k!r})")
  k = int(k)
  if k < 1:
    raise ValueError(f"{name} must be >= 1, got {k}")
  if n is not None and k > n:
    raise ValueError(f"{name}={k} exceeds the number of points {n_name}={n}")
  return k


def check_centroids_or_k(value: Any, d: int, name: str = "centroids_or_k"):
  """``(k, previous)`` from :func:`update`'s ``centroids_or_k``: an integer k
  (``previous`` None) or centroids ``[K, D]``. A 0-d array is taken for a
  mistyped k (``check_k``'s ``TypeError``)."""
  if not hasattr(value, "shape") or value.ndim == 0:
    return check_k(value, name=name), None
  check_centroids(value, d, name)
  return int(value.shape[0]), value


def _join(names: tuple[str, ...]) -> str:
  return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def check_farthest(empty: str, n: int | None, dist: Any, **needed: Any) -> None:
  """``empty="farthest"`` needs ``dist`` and the arrays in ``needed`` (by name);
  a given ``dist`` is ``[n]`` (when ``n`` is known)."""
  needed = {**needed, "dist": dist}
  if empty == "farthest" and any(v is None for v in needed.values()):
    raise ValueError(f'empty="farthest" needs {_join(tuple(needed))} (dist: the '
                     "distances from assign)")
  if dist is not None and n is not None and tuple(getattr(dist, "shape", ())) != (n,):
    raise ValueError(f"dist must have shape {(n,)}, got {tuple(getattr(dist, 'shape', ()))}")


def _check_per_point(a: Any, name: str, shape: tuple[int, ...], kind, why: str,
                     what: str) -> None:
  """An array of ``shape`` (``why`` says what it holds) whose dtype is of
  ``kind``, e.g. labels or weights."""
  if not hasattr(a, "shape") or not hasattr(a, "dtype"):
    raise TypeError(f"{name} must be an array, got {type(a).__name__}")
  if tuple(a.shape) != shape:
    raise ValueError(f"{name} must have shape {shape} ({why}), got {tuple(a.shape)}")
  if not jnp.issubdtype(a.dtype, kind):
    raise TypeError(f"{name} must be {what} array, got {a.dtype}")


def check_labels(labels: Any, n: int, batch: tuple[int, ...] = (),
                 k: int | None = None) -> None:
  """Shape and dtype of ``labels``; with ``k``, values in ``[0, k)`` when concrete.

  Out-of-range labels cannot be caught under ``jit``: there they are dropped
  from the sums (``segment_sum`` semantics).
  """
  _check_per_point(labels, "labels", (*batch, n), jnp.integer, "one per point of x",
                   "an integer")
  if k is not None:
    values.check_label_values(labels, k)


def check_weights(weights: Any, n: int, batch: tuple[int, ...] = (),
                  require_positive: bool = False, *, name: str = "weights",
                  check_values: bool = True) -> None:
  """Shape and dtype of ``weights``; when concrete (and ``check_values``) also
  finite, ``>= 0`` and (``require_positive``) of positive sum per batch member.
  The values are reduced where they live (on the devices for a ``jax.Array``,
  sharded ones included); ``check_values=False`` is for host readers whose
  values are checked chunk by chunk as they are read."""
  if weights is None:
    return
  _check_per_point(weights, name, (*batch, n), jnp.floating, "one per point", "a float")
  if check_values:
    values.check_weight_values(weights, name, bool(batch), require_positive)


def host_weights(value: Any, n: int, *, name: str = "weights",
                 require_positive: bool = False) -> np.ndarray | None:
  """Array-like weights (list, NumPy, JAX) as a checked NumPy ``float32[n]``.

  For front ends that take array-likes: anything that is not numbers is a
  ``TypeError`` naming ``name``; values are checked by :func:`check_weights`
  before the cast, and finite values that overflow float32 are refused.
  """
  if value is None:
    return None
  a = np.asarray(value)
  if a.dtype.kind not in "biuf":
    raise TypeError(f"{name} must be an array of numbers, got {type(value).__name__}"
                    f" of dtype {a.dtype}")
  a = a.astype(np.float64)
  check_weights(a, n, require_positive=require_positive, name=name)
  check_finite(a, name, dtype=np.float32, rows=False)
  return a.astype(np.float32)


@functools.lru_cache(maxsize=None)
def _raw_key_shape(impl: str) -> tuple[int, ...]:
  del impl  # the cache key: the shape belongs to the default PRNG implementation
  return tuple(jax.eval_shape(jax.random.PRNGKey, 0).shape)


def check_key(key: Any, name: str = "key") -> None:
  """A single PRNG key: ``jax.random.key(seed)`` (shape ``()``) or a raw
  ``uint32`` key such as ``jax.random.PRNGKey(seed)`` (shape ``(2,)``)."""
  if not hasattr(key, "dtype") or not hasattr(key, "shape"):
    raise TypeError(
        f"{name} must be a jax.random key (e.g. jax.random.key(0)), got "
        f"{type(key).__name__} ({key!r})")
  split = "; batched_kmeans splits one key for you"
  if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
    if key.shape != ():
      raise ValueError(f"{name} must be a single key of shape (), got a key array of "
                       f"shape {tuple(key.shape)}{split}")
    return
  if np.dtype(key.dtype) != np.uint32:
    raise TypeError(
        f"{name} must be a jax.random key (jax.random.key(seed)) or a raw uint32[2] "
        f"key (jax.random.PRNGKey(seed)), got dtype {key.dtype} shape {tuple(key.shape)}")
  raw = _raw_key_shape(str(jax.config.jax_default_prng_impl))
  if tuple(key.shape) != raw:
    raise ValueError(f"{name} must be a single key: a raw uint32 key has shape {raw}, got "
                     f"shape {tuple(key.shape)}{split if key.shape[1:] == raw else ''}")


def check_devices(device: Any, devices: Any) -> list:
  """The devices of a streamed run, in row order: ``[device]`` (default
  ``jax.devices()[0]``), or ``devices`` -- a non-empty sequence of distinct
  ``jax.Device`` of this process -- when given (not both)."""
  if devices is None:
    return [device or jax.devices()[0]]
  if device is not None:
    raise ValueError("pass either device= or devices=, not both")
  devs = list(devices)
  if not devs or not all(isinstance(d, jax.Device) for d in devs):
    raise TypeError(f"devices must be a non-empty sequence of jax.Device, got {devices!r}")
  if len(set(devs)) != len(devs):
    raise ValueError("devices must not repeat a device")
  if any(d.process_index != jax.process_index() for d in devs):
    raise ValueError("devices must all belong to this process (one host)")
  return devs


def check_sums(sums: Any, counts: Any) -> tuple[int, int]:
  """``sums [K, D]`` and ``counts [K]`` of :func:`finalize_centroids`."""
  for name, a, rank in (("sums", sums, 2), ("counts", counts, 1)):
    if not hasattr(a, "shape") or not hasattr(a, "dtype"):
      raise TypeError(f"{name} must be an array, got {type(a).__name__}")
    if a.ndim != rank:
      raise ValueError(f"{name} must have rank {rank}, got shape {tuple(a.shape)}")
    if not jnp.issubdtype(a.dtype, jnp.floating):
      raise TypeError(f"{name} must be a float array, got {a.dtype}")
  if counts.shape[0] != sums.shape[0]:
    raise ValueError(
        f"counts must have shape ({sums.shape[0]},) like sums' first axis, got "
        f"{tuple(counts.shape)}")
  return int(sums.shape[0]), int(sums.shape[1])


def resolve_impl(impl: Any, n: int | None = None, k: int | None = None,
                 batch: int = 1) -> str:
  """Checks ``impl`` and resolves ``None``/``"auto"`` for the backend and shape
  (:func:`flashkmeans_jax.core.dispatch.resolve_impl`)."""
  impl = check_impl(impl)
  if impl == "pallas" and not device.on_cuda():
    raise ValueError(
        'impl="pallas" needs a CUDA GPU (the Triton-lowered kernels); on this '
        'backend use impl="xla" (or None), or "pallas_interpret" to run the kernels '
        "in Pallas interpret mode (slow, for tests)")
  return dispatch.resolve_impl(impl, n, k, batch)


def resolve_precision(precision: Any) -> Any:
  """Checks and resolves a float32 matmul precision
  (:func:`flashkmeans_jax.core.precision.resolve_precision`)."""
  return precision_mod.resolve_precision(precision)


def check_init(init: Any, k: int, d: int, batch: tuple[int, ...] = ()):
  """``(mode, array)``: ``("k-means++" | "random", None)`` for a name,
  ``("array", init)`` for starting centroids ``[k, D]`` (or ``[B, k, D]``
  when ``batch`` is given). Shapes only: see :func:`lloyd_options` for values."""
  if isinstance(init, str):
    return check_init_name(init), None
  if hasattr(init, "shape"):
    if batch and init.ndim not in (2, 3):
      raise ValueError(f"init must have shape [k, D] (shared) or [B, k, D], got "
                       f"shape {tuple(init.shape)}")
    check_centroids(init, d, "init", k=k, batch=batch if init.ndim == 3 else ())
    return "array", init
  raise TypeError(
      f"init must be 'k-means++', 'random', 'k-means||' or an array [k, D], got "
      f"{type(init).__name__}")


def lloyd_options(x: Any, k: Any, *, init: Any = "k-means++", max_iter: Any = 300,
                  tol: Any = 1e-4, metric: Any = "sqeuclidean", weights: Any = None,
                  n_init: Any = 1, empty: Any = "keep", impl: Any = None,
                  precision: Any = None, config: Any = None, verbose: bool = False,
                  batch: tuple[int, ...] = (), check_finite_values: bool = True,
                  check_init_values: bool = True,
                  final_assign: Any = True) -> tuple[LloydOptions, Any]:
  """Validates the arguments of a k-means call once; returns the
  :class:`LloydOptions` the lower layers trust and the init array (or None).

  ``x`` is ``[*batch, N, D]`` (already checked by :func:`check_points`).
  An eager init array is always checked for NaN/Inf (it is K x D, and a
  non-finite start would win points silently) unless the caller checks it
  itself (``check_init_values=False``: :func:`flashkmeans_jax.kmeans` reads
  a device init's finiteness inside its compiled run); ``check_finite_values``
  also checks ``x`` (one pass over the data).
  """
  n, d = x.shape[-2:]
  k = check_k(k, n)
  metric = check_metric(metric)
  max_iter = check_positive_int(max_iter, "max_iter")
  n_init = check_positive_int(n_init, "n_init")
  tol = check_tol(tol)
  empty = check_empty(empty)
  final_assign = check_bool(final_assign, "final_assign")
  check_weights(weights, n, batch, require_positive=True)
  mode, init_array = check_init(init, k, d, batch)
  if mode == "array":
    n_init = 1  # an explicit start leaves nothing to restart (scikit-learn does the same)
  # Every member and restart runs in the same launches, so the work that
  # decides between XLA and the kernels is the whole batch's.
  impl = resolve_impl(impl, n, k, batch=int(np.prod(batch, dtype=np.int64)) * n_init)
  precision = resolve_precision(precision)
  if init_array is not None and check_init_values:
    check_finite(init_array, "init")
  if check_finite_values:
    check_finite(x)
  opts = LloydOptions(k=k, max_iter=max_iter, tol=tol, metric=metric, empty=empty,
                      impl=impl, precision=precision, config=config, verbose=bool(verbose),
                      init=mode, n_init=n_init, final_assign=final_assign)
  return opts, init_array


def target_dtype(in_dtype: np.dtype, dtype: Any) -> np.dtype:
  """The dtype the data is clustered in (see ``KMeans(dtype=...)``)."""
  if dtype is None:
    return in_dtype if in_dtype in _KEEP_DTYPES else np.dtype(np.float32)
  try:
    dt = np.dtype(jnp.dtype(dtype))
  except (TypeError, ValueError):
    dt = None
  if dt not in _KEEP_DTYPES:
    raise ValueError(
        f"dtype must be None, 'float16', 'bfloat16' or 'float32', got {dtype!r}")
  return dt
