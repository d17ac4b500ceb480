"""Argument checks shared by every public entry point.

Each check runs on shapes and dtypes only, so it works on tracers and fires at
trace time under ``jit``; the messages name the argument, what was expected
and what was given.
"""

from __future__ import annotations

import numbers
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from flashkmeans_jax._types import EMPTY_POLICIES, IMPLS, INITS, METRICS

_FLOAT_DTYPES = (jnp.float16, jnp.bfloat16, jnp.float32, jnp.float64)


def _dtype_of(a: Any):
  return jnp.result_type(a) if not hasattr(a, "dtype") else a.dtype


def check_points(x: Any, name: str = "x", ndim: int = 2) -> None:
  """Checks that ``x`` is a floating array of rank ``ndim`` with no empty axis."""
  if not hasattr(x, "shape") or not hasattr(x, "dtype"):
    raise TypeError(
        f"{name} must be an array (NumPy or JAX), got {type(x).__name__}")
  if x.ndim != ndim:
    expect = "[N, D]" if ndim == 2 else "[B, N, D]"
    raise ValueError(
        f"{name} must have rank {ndim} ({expect}), got shape {tuple(x.shape)}")
  dt = np.dtype(x.dtype)
  if dt not in [np.dtype(d) for d in _FLOAT_DTYPES]:
    raise TypeError(
        f"{name} must be float16, bfloat16, float32 or float64, got {dt}; "
        "cast integer data explicitly (e.g. x.astype(jnp.float32))")
  if any(s == 0 for s in x.shape):
    raise ValueError(f"{name} must not have an empty axis, got shape {tuple(x.shape)}")


def check_centroids(c: Any, d: int, name: str = "centroids", k: int | None = None,
                    batch: tuple[int, ...] = ()) -> None:
  check_points(c, name, ndim=2 + len(batch))
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


def check_labels(labels: Any, n: int, batch: tuple[int, ...] = ()) -> None:
  if not hasattr(labels, "shape"):
    raise TypeError(f"labels must be an array, got {type(labels).__name__}")
  if tuple(labels.shape) != (*batch, n):
    raise ValueError(
        f"labels must have shape {(*batch, n)}, got {tuple(labels.shape)}")
  if not jnp.issubdtype(labels.dtype, jnp.integer):
    raise TypeError(f"labels must be an integer array, got {labels.dtype}")


def check_weights(weights: Any, n: int, batch: tuple[int, ...] = ()) -> None:
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
  if not isinstance(weights, jax.core.Tracer):
    w = np.asarray(weights, dtype=np.float64)
    if not np.all(np.isfinite(w)):
      raise ValueError("weights must be finite, got NaN or Inf")
    if np.any(w < 0):
      raise ValueError(f"weights must be >= 0, got minimum {w.min()}")


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


def is_concrete(*arrays: Any) -> bool:
  return not any(isinstance(a, jax.core.Tracer) for a in arrays if a is not None)


def check_finite(x: Any, name: str = "x") -> None:
  """Raises on NaN/Inf when ``x`` is concrete (eager call); no-op on tracers."""
  if isinstance(x, jax.core.Tracer):
    return
  ok = bool(jnp.all(jnp.isfinite(x))) if isinstance(x, jax.Array) else bool(
      np.all(np.isfinite(np.asarray(x, dtype=np.float32))))
  if not ok:
    raise ValueError(
        f"{name} contains NaN or Inf; clean the data or pass check_finite=False "
        "(non-finite points then get label 0 and distance NaN and are left out "
        "of the centroid update)")
