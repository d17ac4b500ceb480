"""Checks on the *values* of concrete arrays (NaN/Inf, weights, label range).

They run only when an array is concrete -- an eager call, or a constant that
a traced function closes over -- and do nothing for tracers, where a Python
exception is impossible (:mod:`flashkmeans_jax.api.checked` is the ``checkify``
route). A ``jax.Array`` is reduced on its devices (sharded ones included, no
copy to the host); a host array block by block, so a memmap is never read
into memory whole. :mod:`flashkmeans_jax.core.validation` calls these after
its shape and dtype checks; the public entry points reach them through it.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["FINITE_HINT", "check_finite", "check_label_values", "check_weight_values",
           "nonfinite_error"]

# The option of the library functions that lets non-finite data through.
FINITE_HINT = "check_finite=False"
# Arguments that hold centroids: their NaN/Inf message speaks of centroids.
_CENTROID_ARGS = ("init", "centroids", "centroids_or_k", "previous")
# Elements of a host array checked per NumPy call (bounds the temporaries).
_HOST_BLOCK = 1 << 22


def _concrete(a: Any) -> bool:
  return a is not None and not isinstance(a, jax.core.Tracer)


def _eager_value(fn, *arrays):
  """Evaluates ``fn(*arrays)`` now, even while an outer function is traced.

  Inside ``jit``/``checkify`` tracing, a constant closed over by the traced
  function is concrete, but a plain ``jnp`` op on it would still produce a
  tracer.
  """
  with jax.ensure_compile_time_eval():
    return fn(*arrays)


def _host_blocks(a: Any):
  """Row blocks of a host array as NumPy arrays (bounded temporaries)."""
  rows = max(1, _HOST_BLOCK // max(1, int(np.prod(a.shape[1:], dtype=np.int64))))
  for start in range(0, a.shape[0], rows):
    yield np.asarray(a[start:start + rows])


def check_label_values(labels: Any, k: int) -> None:
  """Concrete ``labels`` lie in ``[0, k)``."""
  if not _concrete(labels):
    return
  lo, hi = _eager_value(lambda a: (int(jnp.min(a)), int(jnp.max(a))), labels)
  if lo < 0 or hi >= k:
    raise ValueError(f"labels must lie in [0, k={k}), got values in [{lo}, {hi}]")


def _weight_stats(w: Any) -> tuple[int, float, np.ndarray]:
  """(non-finite count, smallest finite value, sum of the finite values along
  the last axis, at least 1-D), computed where ``w`` lives."""
  xp = jnp if isinstance(w, jax.Array) else np
  w = w.astype(jnp.float32) if xp is jnp else np.asarray(w, np.float64)
  ok = xp.isfinite(w)
  wf = xp.where(ok, w, 0)
  # One transfer of the three results, not one host sync each.
  bad, lo, sums = jax.device_get((xp.sum(~ok), xp.min(wf), xp.sum(wf, axis=-1)))
  return int(bad), float(lo), np.atleast_1d(np.asarray(sums))


def check_weight_values(weights: Any, name: str = "weights", batched: bool = False,
                        require_positive: bool = False) -> None:
  """Concrete ``weights`` are finite and ``>= 0``; with ``require_positive``
  every member (last axis) has a positive sum."""
  if not _concrete(weights):
    return
  bad, lo, sums = _eager_value(_weight_stats, weights)
  if bad:
    raise ValueError(f"{name} must be finite, got {bad} NaN or Inf value(s)")
  if lo < 0:
    raise ValueError(f"{name} must be >= 0, got minimum {lo}")
  zero = sums <= 0
  if require_positive and zero.any():
    where = (f" (batch member(s) {np.flatnonzero(zero).tolist()} are all zero)"
             if batched else "; all weights are zero")
    raise ValueError(f"{name} must have a positive sum{where}")


# The distances' formulas add squared norms: a row whose squared norm passes
# a quarter of float32's largest value can make ||x||^2 + ||c||^2 - 2 x.c
# (each term at most max ||x||^2 for centroids inside the data's hull)
# overflow to Inf, and the labels then come from NaN scores.
_NORM_LIMIT = float(np.finfo(np.float32).max) / 4


@functools.partial(jax.jit, static_argnames="dtype")
def _device_flags(a, dtype):
  """(all finite, all finite after the cast to ``dtype``, largest squared row
  norm in float32) of a device array in one fused pass over it."""
  finite = jnp.all(jnp.isfinite(a))
  fits = jnp.all(jnp.isfinite(a.astype(dtype)))
  af = a.astype(jnp.float32)
  norm = jnp.max(jnp.sum(af * af, axis=-1)) if a.ndim else af * af
  return finite, fits, norm


def _finite_and_fits(x: Any, dtype: np.dtype) -> tuple[bool, bool, float]:
  """(no NaN/Inf in ``x``, no Inf after casting ``x`` to ``dtype``, the
  largest squared row norm of ``x``, Inf when it overflows float32)."""
  cast = dtype != np.dtype(x.dtype)
  if isinstance(x, jax.Array):
    def flags(a):  # one pass, one transfer of the three results
      return tuple(jax.device_get(_device_flags(a, dtype if cast else a.dtype)))
    finite, fits, norm = _eager_value(flags, x)
    return bool(finite), bool(fits), float(norm)
  finite = fits = True
  norm = 0.0
  with np.errstate(over="ignore", invalid="ignore"):
    for block in _host_blocks(x):
      finite = bool(np.isfinite(block).all())
      if not finite:
        break
      fits = fits and (not cast or bool(np.isfinite(block.astype(dtype)).all()))
      b = np.asarray(block, np.float64)
      if b.size:
        norm = max(norm, float(np.max(np.sum(b * b, axis=-1))) if b.ndim else float(b * b))
  return finite, fits, norm


def nonfinite_error(name: str = "x", hint: str | None = FINITE_HINT) -> ValueError:
  """The error for NaN/Inf found in ``name`` (data, or centroids for the
  centroid arguments), for drivers that find them while reading the data."""
  if name in _CENTROID_ARGS:
    start = "starting " if name == "init" else ""
    return ValueError(f"{name} contains NaN or Inf; {start}centroids must be finite")
  extra = (f" or pass {hint} (non-finite points then get label 0 and distance NaN and "
           "are left out of the centroid update)") if hint else ""
  return ValueError(f"{name} contains NaN or Inf; clean the data{extra}")


def check_finite(x: Any, name: str = "x", *, hint: str | None = FINITE_HINT,
                 dtype: Any = None, rows: bool = True) -> None:
  """Raises ``ValueError`` on NaN/Inf when ``x`` is concrete; no-op on tracers.

  Args:
    x: the array (JAX or host).
    name: the argument's name; centroid arguments (``init``, ``centroids``,
      ...) get a message about centroids, data a message about cleaning it.
    hint: the option that lets non-finite data through, named in the message
      (``None`` where the caller has none, e.g. the CLI and the estimator).
    dtype: what ``x`` will be cast to (default: what ``jnp.asarray`` makes of
      it, e.g. float32 for float64 NumPy data without x64); finite values
      that overflow there are refused too, and so are rows whose squared norm
      passes a quarter of float32's largest value (the distances, computed in
      float32, would overflow).
    rows: whether ``x`` holds points (the squared-norm limit applies) or
      other values such as weights (only NaN/Inf and the cast are checked).
  """
  if not _concrete(x):
    return
  dtype = np.dtype(jax.dtypes.canonicalize_dtype(x.dtype) if dtype is None else dtype)
  finite, fits, norm = _finite_and_fits(x, dtype)
  if not finite:
    raise nonfinite_error(name, hint)
  if not fits:
    raise ValueError(
        f"{name} holds values beyond {dtype}'s largest finite magnitude "
        f"({float(jnp.finfo(dtype).max):.6g}) and would become Inf in {dtype}; "
        "rescale the data")
  if rows and not norm <= _NORM_LIMIT:
    raise ValueError(
        f"{name} holds rows whose squared norm ({norm:.3g}) overflows the float32 "
        f"distances (limit {_NORM_LIMIT:.3g}, a row norm of about "
        f"{_NORM_LIMIT ** 0.5:.2g}); rescale the data")
