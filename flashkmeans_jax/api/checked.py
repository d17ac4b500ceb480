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

      run = jax.jit(checked_kmeans, static_argnames=("k", "max_iter", "n_init"))
      err, res = run(key, x, k=8, max_iter=50)
      err.throw()

* :func:`data_checks` emits the same ``checkify.check`` calls, for your own
  jitted function that you ``checkify`` yourself::

      def pipeline(key, x):
        data_checks(x)
        return kmeans(key, x, 8, check_finite=False)

      err, res = checkify.checkify(jax.jit(pipeline))(key, x)

* ``checkify.checkify(f, errors=checkify.float_checks)`` also works on a
  function that calls :func:`kmeans` with ``n_init=1``: on finite data the
  library produces no NaN and divides by no zero, so no error is reported;
  NaN data is reported at the first primitive whose output it reaches.
  Limitation (JAX's): checkify cannot transform a ``while_loop`` under
  ``vmap``, so checkifying a function that calls ``kmeans(n_init>1)`` or
  :func:`batched_kmeans` fails with "Checkify does not support batched
  while-loops"; :func:`checked_kmeans` and :func:`checked_batched_kmeans`
  avoid this by checkifying only the data checks.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from jax.experimental import checkify

from flashkmeans_jax.api.kmeans import batched_kmeans, kmeans
from flashkmeans_jax.core.types import KMeansResult

__all__ = ["checked_kmeans", "checked_batched_kmeans", "data_checks"]


def data_checks(x: jax.Array, weights: jax.Array | None = None,
                init: Any = None) -> None:
  """``checkify.check`` calls for the values :func:`kmeans` needs.

  ``x`` (and an array ``init``) finite; ``weights`` finite, ``>= 0`` and of
  positive sum (along the last axis, so ``[B, N]`` weights need a positive sum
  per batch member). Works on tracers; the checks only report when the enclosing
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
    total = jnp.sum(jnp.where(jnp.isfinite(w), w, 0.0), axis=-1)
    checkify.check(jnp.all(total > 0), "weights must have a positive sum (in every "
                   "batch member)")


def _checked(fn, key, x, k, weights, init, kwargs):
  kwargs.pop("check_finite", None)
  init_array = None if isinstance(init, str) else init
  # Only the data checks run under checkify: checkify cannot transform a
  # vmapped while_loop (n_init > 1, batched_kmeans), and the loop itself
  # needs no checks (it never produces NaN from finite data).
  err, _ = checkify.checkify(data_checks, errors=checkify.user_checks)(x, weights, init_array)
  res = fn(key, x, k, weights=weights, init=init, check_finite=False, **kwargs)
  return err, res


def checked_kmeans(key: jax.Array, x: jax.Array, k: int, *,
                   weights: jax.Array | None = None, init: Any = "k-means++",
                   **kwargs: Any) -> tuple[checkify.Error, KMeansResult]:
  """:func:`kmeans` whose value checks also work inside ``jit``.

  Args:
    key, x, k, weights, init: as :func:`kmeans`.
    **kwargs: any other :func:`kmeans` argument (``check_finite`` is ignored:
      :func:`data_checks` does that job).

  Returns:
    ``(error, result)``: a ``checkify.Error`` from :func:`data_checks` --
    ``error.get()`` is ``None`` when every check passed, ``error.throw()``
    raises ``checkify.JaxRuntimeError`` (a ``ValueError``) otherwise -- and
    the :class:`KMeansResult`, computed either way (with the in-``jit``
    behaviour for non-finite data: finite centroids, NaN inertia).

  Shape and argument errors still raise at once (trace time), and so does a
  concrete ``init`` holding NaN/Inf (``kmeans`` always refuses one); a traced
  one is reported through the error. Wrap in ``jax.jit`` with ``k`` and the
  other configuration arguments static.
  """
  return _checked(kmeans, key, x, k, weights, init, kwargs)


def checked_batched_kmeans(key: jax.Array, x: jax.Array, k: int, *,
                           weights: jax.Array | None = None, init: Any = "k-means++",
                           **kwargs: Any) -> tuple[checkify.Error, KMeansResult]:
  """:func:`batched_kmeans` with the checks of :func:`checked_kmeans`
  (every batch member's weights must have a positive sum)."""
  return _checked(batched_kmeans, key, x, k, weights, init, kwargs)
