"""Device side of out-of-core k-means: what one chunk adds to a pass.

A pass folds every chunk into small running totals on the device, O(K * D),
built from the statistics core (:mod:`flashkmeans_jax.lloyd.stats`) and
merged chunk after chunk in row order:

* a Lloyd pass (:class:`LloydTotals`): the :class:`~flashkmeans_jax.lloyd.stats.ClusterStats`
  (sums, counts, inertia) for :func:`flashkmeans_jax.lloyd.centroids.finalize`;
  with ``empty="farthest"`` the :class:`~flashkmeans_jax.lloyd.stats.Farthest`
  relocation candidates seen so far (all that relocation ever looks at); in
  the first pass the data's :class:`~flashkmeans_jax.lloyd.stats.Moments`,
  which give the tolerance and the NaN count without another read of the data;
* a labelling pass: the inertia alone, a ``float32[]``.

The chunk steps are compiled once per shape, dtype and :class:`StepOptions`.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from flashkmeans_jax.core.options import LloydOptions
from flashkmeans_jax.lloyd import centroids as centroids_mod
from flashkmeans_jax.lloyd import stats
from flashkmeans_jax.lloyd.stats import ClusterStats, Farthest, Moments
from flashkmeans_jax.ops.assign import api as assign_op

__all__ = ["StepOptions", "LloydTotals", "lloyd_totals", "label_totals", "accumulate",
           "step_labels", "finalize"]


class StepOptions(NamedTuple):
  """Static settings of the chunk steps (hashable: they key the jit caches).

  Only what a step computes with, so that runs differing in ``max_iter``,
  ``tol`` or ``n_init`` share compiled steps.

  Attributes:
    k: clusters; metric, impl (resolved), precision (resolved), config: as
      in :class:`~flashkmeans_jax.core.options.LloydOptions`; empty:
      ``"keep"`` or ``"farthest"``.
    n_cand: ``M = min(K, N)``, the relocation candidates kept for
      ``empty="farthest"``.
  """
  k: int
  metric: str
  impl: str
  precision: Any
  config: Any
  empty: str
  n_cand: int

  @classmethod
  def of(cls, opts: LloydOptions, n: int) -> "StepOptions":
    """The step options of a validated k-means run over ``n`` rows."""
    return cls(opts.k, opts.metric, opts.impl, opts.precision, opts.config, opts.empty,
               min(opts.k, n))


class LloydTotals(NamedTuple):
  """Running totals of a Lloyd pass (a pytree of device arrays).

  Attributes:
    clusters: ``ClusterStats`` of the rows so far (``float32[K, D]`` sums,
      ``float32[K]`` counts, ``float32[]`` inertia).
    farthest: ``Farthest`` with ``M`` candidates for ``empty="farthest"``,
      else ``None``.
    moments: ``Moments`` of the rows so far (``[D]`` mean and M2), in the
      first pass only, else ``None``.
  """
  clusters: ClusterStats
  farthest: Farthest | None
  moments: Moments | None


def lloyd_totals(opts: StepOptions, d: int, *, moments: bool) -> LloydTotals:
  """Zero totals of a Lloyd pass over rows of ``d`` features; ``moments``
  also sums the data's moments (the first pass)."""
  far = stats.no_farthest(opts.n_cand, d) if opts.empty == "farthest" else None
  mom = stats.no_moments(d) if moments else None
  return LloydTotals(stats.zeros(opts.k, d), far, mom)


def label_totals() -> jax.Array:
  """Zero totals of a labelling pass: the inertia, ``float32[]``."""
  return jnp.zeros((), jnp.float32)


def accumulate(totals: LloydTotals | jax.Array, c: jax.Array, xb: jax.Array,
               wb: jax.Array | None, opts: StepOptions):
  """Folds one chunk into ``totals`` (after the chunks of lower rows).

  Args:
    totals: :class:`LloydTotals` (a Lloyd pass) or a ``float32[]`` inertia
      (a labelling pass); its structure says what is computed.
    c: ``float32[K, D]`` current centroids.
    xb: ``[B, D]`` chunk of points (the host dtype); wb: ``float32[B]``
      weights or ``None``.

  Returns:
    ``(totals, labels int32[B], dist float32[B])``.
  """
  labels, dist = assign_op.assign(xb, c, opts.metric, opts.impl, opts.precision, opts.config)
  if not isinstance(totals, LloydTotals):
    return totals + stats.inertia(dist, wb), labels, dist
  out = stats.merge(totals.clusters, stats.accumulate(xb, labels, dist, wb, opts.k, opts.impl))
  far = totals.farthest
  if far is not None:
    # The running candidates hold lower rows, so ties go to the lower row
    # index, as in memory.
    far = stats.merge_farthest(far, stats.farthest(xb, labels, dist, wb, opts.n_cand))
  mom = totals.moments
  if mom is not None:
    mom = stats.merge_moments(mom, stats.moments(xb, wb))
  return LloydTotals(out, far, mom), labels, dist


@functools.partial(jax.jit, static_argnames=("opts",))
def step_labels(totals, c: jax.Array, xb: jax.Array, wb: jax.Array | None, *,
                opts: StepOptions):
  """:func:`accumulate` compiled: ``(totals, labels int32[B], dist float32[B])``."""
  return accumulate(totals, c, xb, wb, opts)


@functools.partial(jax.jit, static_argnames=("opts",))
def finalize(totals: LloydTotals, c: jax.Array, tol_abs: jax.Array, *,
             opts: StepOptions) -> tuple[jax.Array, jax.Array, jax.Array]:
  """End of a Lloyd pass: ``(new centroids float32[K, D], shift float32[],
  converged bool[])`` with the empty-cluster policy and the convergence test
  of the statistics core (``shift <= tol_abs``)."""
  far = totals.farthest
  new_c, _ = centroids_mod.finalize(totals.clusters, c, metric=opts.metric, empty=opts.empty,
                                    candidates=None if far is None else (lambda: far))
  shift, done = stats.converged(new_c, c, tol_abs)
  return new_c, shift, done
