"""Checks of options and scalar arguments (names from fixed choices, counts,
tolerances, fractions, mesh axes) and of the seeding options.

Part of the one validation of every entry point: the same bad value gets the
same message wherever it is passed. :mod:`flashkmeans_jax.core.validation`
re-exports every public name here, so ``validation.check_tol`` etc. keep
working.
"""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np

from flashkmeans_jax.core.types import EMPTY_POLICIES, IMPLS, INITS, METRICS, SeedingOptions

__all__ = ["check_choice", "check_metric", "check_impl", "check_empty", "check_init_name",
           "check_positive_int", "check_optional_positive_int", "check_tol",
           "check_fraction", "check_positive_float", "check_axes", "check_bool",
           "seeding_options"]


def check_choice(value: Any, name: str, choices: tuple[str, ...]) -> str:
  if not isinstance(value, str) or value not in choices:
    raise ValueError(f"{name} must be one of {choices}, got {value!r}")
  return value


def check_metric(metric: Any) -> str:
  return check_choice(metric, "metric", METRICS)


def check_impl(impl: Any) -> str:
  """A valid ``impl`` name (``None`` is ``"auto"``), not yet resolved."""
  if impl is None:
    return "auto"
  return check_choice(impl, "impl", IMPLS)


def check_empty(empty: Any) -> str:
  return check_choice(empty, "empty", EMPTY_POLICIES)


def check_init_name(init: Any) -> str:
  return check_choice(init, "init", INITS)


def check_positive_int(value: Any, name: str, minimum: int = 1) -> int:
  """An integer ``>= minimum`` (Python or NumPy int; not bool); returns a Python int."""
  if isinstance(value, bool) or not isinstance(value, numbers.Integral):
    raise TypeError(f"{name} must be an int, got {type(value).__name__} ({value!r})")
  if value < minimum:
    raise ValueError(f"{name} must be >= {minimum}, got {value}")
  return int(value)


def check_optional_positive_int(value: Any, name: str) -> int | None:
  return None if value is None else check_positive_int(value, name)


def check_tol(tol: Any) -> float:
  """A finite ``tol >= 0``; returns a Python float."""
  if isinstance(tol, bool) or not isinstance(tol, numbers.Real):
    raise TypeError(f"tol must be a float, got {type(tol).__name__} ({tol!r})")
  tol = float(tol)
  if not np.isfinite(tol) or tol < 0:
    raise ValueError(f"tol must be a finite number >= 0, got {tol}")
  return tol


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


def check_bool(value: Any, name: str) -> bool:
  """A Python or NumPy bool (an int would hide a mistyped argument)."""
  if not isinstance(value, (bool, np.bool_)):
    raise TypeError(f"{name} must be a bool, got {type(value).__name__} ({value!r})")
  return bool(value)


def seeding_options(*, n_local_trials: Any = None, oversampling_factor: Any = None,
                    init_rounds: Any = None,
                    max_points_per_centroid: Any = None) -> SeedingOptions:
  """Checks the seeding and sampling options; ``None`` keeps a default."""
  return SeedingOptions(
      n_local_trials=check_optional_positive_int(n_local_trials, "n_local_trials"),
      oversampling_factor=(None if oversampling_factor is None
                           else check_positive_float(oversampling_factor,
                                                     "oversampling_factor")),
      init_rounds=check_optional_positive_int(init_rounds, "init_rounds"),
      max_points_per_centroid=check_optional_positive_int(max_points_per_centroid,
                                                          "max_points_per_centroid"))
