"""scikit-learn as an optional dependency of the estimator.

With scikit-learn installed, :class:`~flashkmeans_jax.estimator.KMeans`
inherits its ``ClusterMixin``, ``TransformerMixin`` (which brings
``set_output``) and ``BaseEstimator``, raises its ``NotFittedError`` and
``ConvergenceWarning`` and converts array-likes with its ``validate_data``.
Without it, :class:`ParamsBase` gives the same ``get_params``/``set_params``/
``repr``/``set_output`` behaviour (``set_output`` accepting only the default
container), and the two exception classes are the library's own.
"""

from __future__ import annotations

import inspect
from typing import Any

import numpy as np

from flashkmeans_jax.core import validation

__all__ = ["BASES", "ConvergenceWarning", "HAVE_SKLEARN", "NotFittedError", "ParamsBase",
           "validate_data"]


class ParamsBase:
  """``get_params``/``set_params``/``repr``/``set_output`` as scikit-learn
  defines them, for when it is absent."""

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

  def set_output(self, *, transform: Any = None):
    """Only the default container (NumPy arrays) exists without scikit-learn."""
    if transform is not None:
      validation.check_choice(transform, "transform", ("default",))
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


try:  # scikit-learn is optional
  from sklearn.base import BaseEstimator, ClusterMixin, TransformerMixin
  from sklearn.exceptions import ConvergenceWarning, NotFittedError
  from sklearn.utils.validation import validate_data
  HAVE_SKLEARN = True
  BASES: tuple[type, ...] = (ClusterMixin, TransformerMixin, BaseEstimator)
except ImportError:  # exercised by the no-sklearn test (a subprocess)
  HAVE_SKLEARN = False
  validate_data = None
  BASES = (ParamsBase,)

  class NotFittedError(ValueError, AttributeError):
    """Raised when a method that needs a fitted estimator is called before fit."""

  class ConvergenceWarning(UserWarning):
    """The clustering found fewer distinct clusters than asked for."""
