"""Value checks that survive ``jit``: k-means with ``jax.experimental.checkify``.

A Python exception cannot be raised on a traced value, so inside ``jit``
:func:`flashkmeans_jax.kmeans` cannot refuse NaN/Inf data (``check_finite``
only acts on eager calls). Its documented behaviour there: non-finite points
get label 0 and distance NaN, are left out of every update and every seed, and
make the inertia NaN; the centroids stay finite.

To *detect* bad values inside compiled code, use ``checkify``:

* :func:`checked_kmeans` runs :func:`kmeans` under ``checkify`` with the
  value checks of :func:`data_checks` and returns ``(error, result)``; it can
  itself be wrapped in ``jax.jit``. Call ``error.throw()`` (outside ``jit``)
  to raise, or ``error.get()`` for the message (``None`` when all is well)::

      run = jax.jit(checked_kmeans, static_argnames=("k", "max_iter"))
      err, res = run(key, x, k=8, max_iter=50)
      err.throw()

* :func:`data_checks` emits the same ``checkify.check`` calls, for your own
  jitted function that you ``checkify`` yourself::

      def pipeline(key, x):
        data_checks(x)
        return kmeans(key, x, 8, check_finite=False)

      err, res = checkify.checkify(jax.jit(pipeline))(key, x)

* ``checkify.checkify(f, errors=checkify.float_checks)`` also works on a
  function that calls :func:`kmeans`: on finite data the library produces no
  NaN and divides by no zero, so no error is reported; NaN data is reported
  at the first primitive whose output it reaches.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from jax.experimental import checkify

from flashkmeans_jax._types import KMeansResult
from flashkmeans_jax.lloyd import kmeans

__all__ = ["checked_kmeans", "data_checks"]


def data_checks(x: jax.Array, weights: jax.Array | None = None,
                init: Any = None) -> None:
  """``checkify.check`` calls for the values :func:`kmeans` needs.

  ``x`` (and an array ``init``) finite; ``weights`` finite, ``>= 0`` and of
  positive sum. Works on tracers; the checks only report when the enclosing
  function is run through ``checkify.checkify`` (``errors`` including
  ``checkify.user_checks``, the default).
  """
  bad = jnp.sum(jnp.logical_not(jnp.isfinite(x)))
  checkify.check(bad == 0, "x contains {bad} NaN or Inf value(s)", bad=bad)
  if init is not None and not isinstance(init, str):
    bad_init = jnp.sum(jnp.logical_not(jnp.isfinite(init)))
    checkify.check(bad_init == 0, "init contains {n} NaN or Inf value(s)", n=bad_init)
  if weights is not None:
    w = weights.astype(jnp.float32)
    bad_w = jnp.sum(jnp.logical_not(jnp.isfinite(w)))
    checkify.check(bad_w == 0, "weights contain {n} NaN or Inf value(s)", n=bad_w)
    neg = jnp.sum(w < 0)
    checkify.check(neg == 0, "weights contain {n} negative value(s)", n=neg)
    checkify.check(jnp.sum(jnp.where(jnp.isfinite(w), w, 0.0)) > 0,
                   "weights must have a positive sum")


def checked_kmeans(key: jax.Array, x: jax.Array, k: int, *,
                   weights: jax.Array | None = None, init: Any = "k-means++",
                   errors: frozenset = checkify.user_checks,
                   **kwargs: Any) -> tuple[checkify.Error, KMeansResult]:
  """:func:`kmeans` with its value checks done by ``checkify``.

  Args:
    key, x, k, weights, init: as :func:`kmeans`.
    errors: the ``checkify`` error set; the default reports only the checks of
      :func:`data_checks`; ``checkify.user_checks | checkify.float_checks``
      also reports NaN produced anywhere inside.
    **kwargs: any other :func:`kmeans` argument (``check_finite`` is ignored:
      the check is done by ``checkify``).

  Returns:
    ``(error, result)``: ``error.get()`` is ``None`` when every check passed;
    ``error.throw()`` raises otherwise. The result is computed either way
    (with the in-``jit`` behaviour for non-finite data).

  Wrap in ``jax.jit`` with ``k`` and the other configuration arguments static.
  """
  kwargs.pop("check_finite", None)

  def run(key, x, weights, init_array):
    data_checks(x, weights, init_array)
    return kmeans(key, x, k, weights=weights,
                  init=init if init_array is None else init_array,
                  check_finite=False, **kwargs)

  init_array = None if isinstance(init, str) else init
  return checkify.checkify(run, errors=errors)(key, x, weights, init_array)
