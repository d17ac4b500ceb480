"""Argument checks shared by every public entry point, in one place.

Each check runs on shapes and dtypes, so it works on tracers and fires at
trace time under ``jit``; the messages name the argument, what was expected
and what was given. Checks on *values* (finite data, weights >= 0, labels in
range) run only when the array is concrete -- an eager call, or a constant
closed over by a traced function -- and are skipped for tracers, where a
Python exception is impossible (see ``flashkmeans_jax.checked`` for the
``checkify`` route).
"""

from __future__ import annotations

import numbers
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from flashkmeans_jax.core import device
from flashkmeans_jax.core import dispatch
from flashkmeans_jax.core import precision as precision_mod
from flashkmeans_jax.core.options import LloydOptions
from flashkmeans_jax.core.types import EMPTY_POLICIES, IMPLS, INITS, METRICS

_FLOAT_DTYPES = (jnp.float16, jnp.bfloat16, jnp.float32, jnp.float64)
# The dtypes the estimator and CLI cluster in without converting.
_KEEP_DTYPES = (np.dtype(jnp.float16), np.dtype(jnp.bfloat16), np.dtype(jnp.float32))


def _dtype_of(a: Any):
  return jnp.result_type(a) if not hasattr(a, "dtype") else a.dtype


def _concrete(a: Any) -> bool:
  return a is not None and not isinstance(a, jax.core.Tracer)


def _eager_value(fn, *arrays):
  """Evaluates ``fn(*arrays)`` now, even while an outer function is traced.

  Used for value checks on concrete arrays: inside ``jit``/``checkify``
  tracing, a constant closed over by the traced function is concrete, but a
  plain ``jnp`` op on it would still produce a tracer.
  """
  with jax.ensure_compile_time_eval():
    return fn(*arrays)


def check_points(x: Any, name: str = "x", ndim: int = 2, layout: str | None = None) -> None:
  """Checks that ``x`` is a floating array of rank ``ndim`` with no empty axis."""
  if not hasattr(x, "shape") or not hasattr(x, "dtype"):
    raise TypeError(
        f"{name} must be an array (NumPy or JAX), got {type(x).__name__}")
  if x.ndim != ndim:
    expect = layout or ("[N, D]" if ndim == 2 else "[B, N, D]")
    raise ValueError(
        f"{name} must have rank {ndim} ({expect}), got shape {tuple(x.shape)}")
  dt = np.dtype(x.dtype)
  if dt not in [np.dtype(d) for d in _FLOAT_DTYPES]:
    kind = ("complex" if np.issubdtype(dt, np.complexfloating) else
            "integer" if np.issubdtype(dt, np.integer) or dt == np.bool_ else "non-float")
    raise TypeError(
        f"{name} must be float16, bfloat16, float32 or float64, got {kind} dtype {dt}; "
        "convert explicitly (e.g. x.astype(jnp.float32), or use the real part / "
        "stack real and imaginary parts for complex data)")
  if any(s == 0 for s in x.shape):
    raise ValueError(f"{name} must not have an empty axis, got shape {tuple(x.shape)}")


def check_centroids(c: Any, d: int, name: str = "centroids", k: int | None = None,
                    batch: tuple[int, ...] = ()) -> None:
  check_points(c, name, ndim=2 + len(batch), layout="[K, D]" if not batch else "[B, K, D]")
  if c.shape[-1] != d:
    raise ValueError(
        f"{name} must have D={d} columns like x, got shape {tuple(c.shape)}")
  if k is not None and c.shape[-2] != k:
    raise ValueError(f"{name} must have k={k} rows, got shape {tuple(c.shape)}")
  if tuple(c.shape[:-2]) != tuple(batch):
    raise ValueError(
        f"{name} batch axes {tuple(c.shape[:-2])} do not match x's {tuple(batch)}")


def check_k(k: Any, n: int | None = None, name: str = "k") -> int:
  if isinstance(k, bool) or not isinstance(k, numbers.Integral):
    raise TypeError(f"{name} must be a Python int, got {type(k).__name__} ({k!r})")
  k = int(k)
  if k < 1:
    raise ValueError(f"{name} must be >= 1, got {k}")
  if n is not None and k > n:
    raise ValueError(f"{name}={k} exceeds the number of points N={n}")
  return k


def check_labels(labels: Any, n: int, batch: tuple[int, ...] = (),
                 k: int | None = None) -> None:
  """Shape and dtype of ``labels``; with ``k``, values in ``[0, k)`` when concrete.

  Out-of-range labels cannot be caught under ``jit``: there they are dropped
  from the sums (``segment_sum`` semantics).
  """
  if not hasattr(labels, "shape") or not hasattr(labels, "dtype"):
    raise TypeError(f"labels must be an array, got {type(labels).__name__}")
  if tuple(labels.shape) != (*batch, n):
    raise ValueError(
        f"labels must have shape {(*batch, n)} (one per point of x), got "
        f"{tuple(labels.shape)}")
  if not jnp.issubdtype(labels.dtype, jnp.integer):
    raise TypeError(f"labels must be an integer array, got {labels.dtype}")
  if k is not None and _concrete(labels):
    lo, hi = _eager_value(lambda a: (int(jnp.min(a)), int(jnp.max(a))), labels)
    if lo < 0 or hi >= k:
      raise ValueError(f"labels must lie in [0, k={k}), got values in [{lo}, {hi}]")


def check_weights(weights: Any, n: int, batch: tuple[int, ...] = (),
                  require_positive: bool = False) -> None:
  """Shape and dtype of ``weights``; values are checked eagerly when concrete."""
  if weights is None:
    return
  if not hasattr(weights, "shape"):
    raise TypeError(f"weights must be an array, got {type(weights).__name__}")
  if tuple(weights.shape) != (*batch, n):
    raise ValueError(
        f"weights must have shape {(*batch, n)} (one per point), got "
        f"{tuple(weights.shape)}")
  if not jnp.issubdtype(weights.dtype, jnp.floating):
    raise TypeError(f"weights must be a float array, got {weights.dtype}")
  if _concrete(weights):
    w = np.asarray(weights, dtype=np.float64)
    if not np.all(np.isfinite(w)):
      raise ValueError(
          f"weights must be finite, got {int(np.sum(~np.isfinite(w)))} NaN or Inf value(s)")
    if np.any(w < 0):
      raise ValueError(f"weights must be >= 0, got minimum {w.min()}")
    zero = np.atleast_1d(np.sum(w, axis=-1) <= 0)
    if require_positive and zero.any():
      where = (f" (batch member(s) {np.flatnonzero(zero).tolist()} are all zero)"
               if batch else "; all weights are 0")
      raise ValueError(f"weights must have a positive sum{where}")


def check_choice(value: Any, name: str, choices: tuple[str, ...]) -> str:
  if value not in choices:
    raise ValueError(f"{name} must be one of {choices}, got {value!r}")
  return value


def check_metric(metric: Any) -> str:
  return check_choice(metric, "metric", METRICS)


def check_impl(impl: Any) -> str:
  if impl is None:
    return "auto"
  return check_choice(impl, "impl", IMPLS)


def check_empty(empty: Any) -> str:
  return check_choice(empty, "empty", EMPTY_POLICIES)


def check_init_name(init: Any) -> str:
  return check_choice(init, "init", INITS)


def check_positive_int(value: Any, name: str, minimum: int = 1) -> int:
  if isinstance(value, bool) or not isinstance(value, numbers.Integral):
    raise TypeError(f"{name} must be an int, got {type(value).__name__} ({value!r})")
  if value < minimum:
    raise ValueError(f"{name} must be >= {minimum}, got {value}")
  return int(value)


def check_tol(tol: Any) -> float:
  if isinstance(tol, bool) or not isinstance(tol, numbers.Real):
    raise TypeError(f"tol must be a float, got {type(tol).__name__} ({tol!r})")
  tol = float(tol)
  if not np.isfinite(tol) or tol < 0:
    raise ValueError(f"tol must be a finite number >= 0, got {tol}")
  return tol


def check_finite(x: Any, name: str = "x") -> None:
  """Raises on NaN/Inf when ``x`` is concrete (eager call); no-op on tracers.

  A concrete JAX array is checked on its device (no copy to the host), also
  when the caller is being traced (``jit``/``checkify`` of a function that
  closes over ``x``).
  """
  if not _concrete(x):
    return
  ok = _eager_value(lambda a: bool(jnp.all(jnp.isfinite(a))), x) if isinstance(
      x, jax.Array) else bool(np.all(np.isfinite(np.asarray(x, dtype=np.float32))))
  if not ok:
    if name != "x":
      raise ValueError(f"{name} contains NaN or Inf; starting centroids must be finite")
    raise ValueError(
        f"{name} contains NaN or Inf; clean the data or pass check_finite=False "
        "(non-finite points then get label 0 and distance NaN and are left out "
        "of the centroid update)")


def check_key(key: Any, name: str = "key") -> None:
  """A single PRNG key: ``jax.random.key(seed)`` (shape ``()``) or a raw
  ``uint32`` key such as ``jax.random.PRNGKey(seed)`` (shape ``(2,)``)."""
  if not hasattr(key, "dtype") or not hasattr(key, "shape"):
    raise TypeError(
        f"{name} must be a jax.random key (e.g. jax.random.key(0)), got "
        f"{type(key).__name__} ({key!r})")
  if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
    if key.shape != ():
      raise ValueError(
          f"{name} must be a single key of shape (), got a key array of shape "
          f"{tuple(key.shape)}; batched_kmeans splits one key for you")
    return
  if np.dtype(key.dtype) != np.uint32 or key.ndim != 1:
    raise TypeError(
        f"{name} must be a jax.random key (jax.random.key(seed)) or a raw uint32[2] "
        f"key (jax.random.PRNGKey(seed)), got dtype {key.dtype} shape {tuple(key.shape)}")


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


def check_optional_positive_int(value: Any, name: str) -> int | None:
  return None if value is None else check_positive_int(value, name)


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
  when ``batch`` is given)."""
  if isinstance(init, str):
    return check_init_name(init), None
  if hasattr(init, "shape"):
    if batch and init.ndim not in (2, 3):
      raise ValueError(f"init must have shape [k, D] (shared) or [B, k, D], got "
                       f"shape {tuple(init.shape)}")
    if init.ndim == 2:
      check_centroids(init, d, "init", k=k)
    else:
      check_centroids(init, d, "init", k=k, batch=batch)
    return "array", init
  raise TypeError(
      f"init must be 'k-means++', 'random' or an array [k, D], got {type(init).__name__}")


def lloyd_options(x: Any, k: Any, *, init: Any = "k-means++", max_iter: Any = 300,
                  tol: Any = 1e-4, metric: Any = "sqeuclidean", weights: Any = None,
                  n_init: Any = 1, empty: Any = "keep", impl: Any = None,
                  precision: Any = None, config: Any = None, verbose: bool = False,
                  batch: tuple[int, ...] = (), check_finite_values: bool = True
                  ) -> tuple[LloydOptions, Any]:
  """Validates the arguments of a k-means call once; returns the
  :class:`LloydOptions` the lower layers trust and the init array (or None).

  ``x`` is ``[*batch, N, D]`` (already checked by :func:`check_points`).
  With ``check_finite_values`` an eager call also rejects NaN/Inf in ``x``
  and in an init array.
  """
  n, d = x.shape[-2:]
  k = check_k(k, n)
  metric = check_metric(metric)
  max_iter = check_positive_int(max_iter, "max_iter")
  n_init = check_positive_int(n_init, "n_init")
  tol = check_tol(tol)
  empty = check_empty(empty)
  check_weights(weights, n, batch, require_positive=True)
  mode, init_array = check_init(init, k, d, batch)
  if mode == "array":
    n_init = 1  # an explicit start leaves nothing to restart (scikit-learn does the same)
  # Every member and restart runs in the same launches, so the work that
  # decides between XLA and the kernels is the whole batch's.
  impl = resolve_impl(impl, n, k, batch=int(np.prod(batch, dtype=np.int64)) * n_init)
  precision = resolve_precision(precision)
  if check_finite_values:
    check_finite(x)
    if init_array is not None:
      check_finite(init_array, "init")
  opts = LloydOptions(k=k, max_iter=max_iter, tol=tol, metric=metric, empty=empty,
                      impl=impl, precision=precision, config=config, verbose=bool(verbose),
                      init=mode, n_init=n_init)
  return opts, init_array


def target_dtype(in_dtype: np.dtype, dtype: Any) -> np.dtype:
  """The dtype the data is clustered in (see ``KMeans(dtype=...)``)."""
  if dtype is None:
    return in_dtype if in_dtype in _KEEP_DTYPES else np.dtype(np.float32)
  dt = np.dtype(jnp.dtype(dtype))
  if dt not in _KEEP_DTYPES:
    raise ValueError(
        f"dtype must be None, 'float16', 'bfloat16' or 'float32', got {dtype!r}")
  return dt


def check_fraction(value: Any, name: str) -> float:
  """A float in ``[0, 1)`` (a decay rate)."""
  if isinstance(value, bool) or not isinstance(value, numbers.Real):
    raise TypeError(f"{name} must be a float, got {type(value).__name__} ({value!r})")
  value = float(value)
  if not 0.0 <= value < 1.0:
    raise ValueError(f"{name} must lie in [0, 1), got {value}")
  return value


def check_positive_float(value: Any, name: str) -> float:
  """A finite float ``> 0``."""
  if isinstance(value, bool) or not isinstance(value, numbers.Real):
    raise TypeError(f"{name} must be a float, got {type(value).__name__} ({value!r})")
  value = float(value)
  if not np.isfinite(value) or value <= 0:
    raise ValueError(f"{name} must be a finite number > 0, got {value}")
  return value


def check_axes(axis_name: Any) -> tuple[str, ...]:
  """A mesh axis name or a tuple of them, as a tuple."""
  axes = tuple(axis_name) if isinstance(axis_name, (tuple, list)) else (axis_name,)
  if not axes or not all(isinstance(a, str) for a in axes):
    raise TypeError(f"axis_name must be a mesh axis name or a tuple of them, got "
                    f"{axis_name!r}")
  return axes
