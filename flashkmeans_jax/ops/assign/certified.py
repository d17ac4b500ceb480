"""Certified float32 labels: a fast pass, a certificate, an exact re-check.

1. The fast pass runs the assignment at the requested base precision (TF32,
   scaled float16, bfloat16, ...) and keeps the winning and the runner-up
   score of every point (:func:`top2`).
2. :mod:`.bound` bounds the error ``E`` of every fast score; a label whose
   margin ``Ŝ_2 - Ŝ_1`` exceeds ``2E`` is the exact argmin (certified).
3. The uncertified points are compacted (into the smallest of a ladder of
   static sizes, ``Certified.capacity`` of N, twice that, ...) and
   assigned again over all centroids by the
   *exact pass*: the same implementation with ``"highest"`` precision, a
   float32 FMA dot in XLA and in the interpreter, the 3-pass TF32 dot in the
   Pallas kernel on the GPU. More uncertified points than the largest rung
   (below N/2) run the exact pass on every point (``lax.switch``, one branch
   per size; no uncertified point: no exact pass).

What "exact" guarantees. The exact pass's scores carry the same kind of
bound with its own :class:`~.bound.DotModel` (``E_x``, about ``(D + 2)
2^-23 ||x|| max||c||`` for a float32 dot, plus ``3 * 2^-20`` of it for
TF32x3). So every returned label ``l`` satisfies ``S_l <= min_k S_k + 2
E_x``: it is the float64 argmin unless another centroid's exact score is
within ``2 E_x`` of it (a tie at float32 resolution; :func:`tie_bound`
gives ``2 E_x`` per point, in score units: the squared distance differs by
twice that, cosine's by that over ``||x||``). Certified labels (almost all)
are the float64 argmin outright. Distances are those of the pass that chose
the label (the fast pass's accuracy for certified points).

Under ``vmap`` the switch becomes a select: every branch runs.
"""

from __future__ import annotations

import functools
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from flashkmeans_jax.core import metric as metric_mod
from flashkmeans_jax.core import precision as precision_mod
from flashkmeans_jax.ops.assign import bound as bound_mod
from flashkmeans_jax.ops.assign import xla

__all__ = ["Top2", "top2", "CertifiedTop2", "certified_top2", "capacity_rows", "capacity_ladder", "LADDER_RATIO",
           "tie_bound", "certificate", "finish", "EXACT_PRECISION"]

EXACT_PRECISION = lax.Precision.HIGHEST


class Top2(NamedTuple):
  """Raw top two of every point, float32[N] each but ``labels`` (int32)."""

  labels: jax.Array
  best: jax.Array
  second: jax.Array
  xsq: jax.Array


class CertifiedTop2(NamedTuple):
  """:class:`Top2` after certification, plus ``certified bool[N]`` (the fast
  pass's label was proven exact) and ``n_uncertified`` (int32 scalar)."""

  labels: jax.Array
  best: jax.Array
  second: jax.Array
  xsq: jax.Array
  certified: jax.Array
  n_uncertified: jax.Array


def top2(x, centroids, metric: str, impl: str, precision: Any, config: Any = None) -> Top2:
  """:class:`Top2` of ``x [N, D]`` against ``centroids [K, D]`` by ``impl`` at
  a plain resolved ``precision``."""
  if impl == "xla":
    return Top2(*xla.assign_xla(x, centroids, metric=metric, precision=precision,
                                runner_up=True))
  # Imported here so that the CPU path never imports the Triton lowering.
  from flashkmeans_jax.ops.assign import pallas_triton
  return Top2(*pallas_triton.flash_assign(
      x, centroids, metric=metric, precision=precision, config=config,
      interpret=(impl == "pallas_interpret"), runner_up=True))


def capacity_rows(n: int, capacity: float) -> int:
  """Static rows of the smallest compacted exact pass for N points."""
  return min(n, max(128, math.ceil(capacity * n)))


# Each compacted size is this many times the last: the exact pass then runs
# on at most this many times the uncertified rows (plus the smallest size),
# for one more compiled branch per doubling.
LADDER_RATIO = 2


def capacity_ladder(n: int, capacity: float) -> tuple[int, ...]:
  """Static sizes of the compacted exact passes, each :data:`LADDER_RATIO`
  times the last, from :func:`capacity_rows` up to below N/2 (a run that
  needs more re-does every point)."""
  caps = []
  cap = capacity_rows(n, capacity)
  while cap < n // 2:
    caps.append(cap)
    cap *= LADDER_RATIO
  return tuple(caps)


def _stats(x, centroids, metric):
  c, bias = metric_mod.prepare_centroids(centroids, metric, x.dtype)
  return bound_mod.centroid_stats(c, bias, metric)


def tie_bound(x, centroids, xsq, metric: str, impl: str) -> jax.Array:
  """``float32[N]``: twice the exact pass's score bound, the width of a
  "tie at float32 resolution" (module docstring) for every point."""
  model = bound_mod.dot_model(EXACT_PRECISION, impl)
  e = bound_mod.score_error_bound(xsq, _stats(x, centroids, metric), x.shape[1], metric, model)
  return 2.0 * e


def certificate(fast: Top2, x, centroids, metric: str, impl: str, base: Any) -> jax.Array:
  """``bool[N]``: which labels of the fast pass at ``base`` are proven exact."""
  model = bound_mod.dot_model(base, impl)
  e = bound_mod.score_error_bound(fast.xsq, _stats(x, centroids, metric), x.shape[1],
                                  metric, model)
  return bound_mod.certified_mask(fast.best, fast.second, e)


# One compiled program for the passes, the certificate and the switch (an
# eager call would otherwise dispatch them op by op).
@functools.partial(jax.jit, static_argnames=("metric", "impl", "precision", "config"))
def certified_top2(x, centroids, metric: str, impl: str, precision: Any,
                   config: Any = None) -> CertifiedTop2:
  """Certified :class:`CertifiedTop2` of float32 ``x [N, D]``;
  ``precision`` is a resolved :class:`~flashkmeans_jax.core.precision.Certified`
  (its base runs the fast pass, with ``config``)."""
  base = precision_mod.dot_precision(precision)
  n = x.shape[0]
  fast = top2(x, centroids, metric, impl, base, config)
  certified = certificate(fast, x, centroids, metric, impl, base)
  uncertified = ~certified
  count = jnp.sum(uncertified.astype(jnp.int32))
  caps = capacity_ladder(n, precision.capacity)

  def exact(rows):
    return top2(rows, centroids, metric, impl, EXACT_PRECISION)

  def keep(_):
    return fast

  def compact(cap):
    def run(_):
      # Fill slots hold index n: they gather the last row and their results
      # are dropped by the out-of-range scatter.
      idx = jnp.nonzero(uncertified, size=cap, fill_value=n)[0]
      again = exact(x[jnp.minimum(idx, n - 1)])
      return Top2(*(a.at[idx].set(b, mode="drop") for a, b in zip(fast, again)))
    return run

  def everything(_):
    return exact(x)

  # Branch 0: nothing to redo; i + 1: the smallest rung holding every
  # uncertified point; the last: all of them.
  branches = [keep] + [compact(cap) for cap in caps] + [everything]
  rung = jnp.sum((count > jnp.asarray(caps, jnp.int32)).astype(jnp.int32)) if caps else 0
  branch = jnp.where(count == 0, 0, 1 + rung)
  result = lax.switch(branch, branches, None)
  return CertifiedTop2(*result, certified, count)


def finish(top: Top2, metric: str) -> tuple[jax.Array, jax.Array]:
  """``(dist, runner_up_dist)`` float32[N] from raw scores; the runner-up is
  ``+inf`` where there is none (one usable centroid)."""
  xsq = top.xsq.astype(jnp.float32)
  dist = metric_mod.finish_distance(top.best, xsq, metric).astype(jnp.float32)
  runner = metric_mod.finish_distance(top.second, xsq, metric).astype(jnp.float32)
  runner = jnp.where(jnp.isposinf(top.second), jnp.inf, runner)
  return dist, runner
