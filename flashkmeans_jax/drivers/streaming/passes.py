"""Device side of out-of-core k-means: what one chunk adds to a pass.

A pass over the data folds every chunk into a small accumulator (a dict of
device arrays, O(K * D)):

* ``sums float32[K, D]``, ``counts float32[K]``: partial cluster sums for
  :func:`flashkmeans_jax.finalize_centroids`;
* ``inertia float32[]``: weighted sum of the chunk distances;
* with ``moments``: ``mom_n int32[]``, ``mom_mean float32[D]``,
  ``mom_m2 float32[D]`` (running mean and sum of squared deviations, merged
  chunk by chunk with Chan's formula) and ``nonfinite int32[]``, which give
  the convergence tolerance and the NaN check in the first pass for free;
* with ``empty="farthest"``: the ``M = min(K, N)`` farthest points seen so
  far (``cand_x float32[M, D]``, ``cand_lab int32[M]``, ``cand_dist
  float32[M]``, ``cand_w float32[M]``), which is all the relocation of
  empty clusters ever looks at.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from flashkmeans_jax.lloyd import centroids as centroids_mod
from flashkmeans_jax.lloyd import stats
from flashkmeans_jax.ops.assign import api as assign_op
from flashkmeans_jax.ops.cluster_sums import api as cluster_sums_op

__all__ = ["Cfg", "new_acc", "accumulate", "finalize", "tolerance"]


class Cfg(NamedTuple):
  """Static settings of a run (hashable: they key the jit caches)."""
  k: int
  metric: str
  impl: str
  precision: Any
  config: Any
  empty: str
  n_cand: int  # M = min(K, N): candidate rows kept for empty="farthest"


def new_acc(cfg: Cfg, d: int, *, lloyd: bool, moments: bool) -> dict:
  """Zero accumulator for a pass (``lloyd=False``: final assignment pass,
  inertia only)."""
  acc = {"inertia": jnp.zeros((), jnp.float32)}
  if lloyd:
    acc["sums"] = jnp.zeros((cfg.k, d), jnp.float32)
    acc["counts"] = jnp.zeros((cfg.k,), jnp.float32)
    if cfg.empty == "farthest":
      m = cfg.n_cand
      acc.update(cand_x=jnp.zeros((m, d), jnp.float32), cand_lab=jnp.zeros((m,), jnp.int32),
                 cand_dist=jnp.zeros((m,), jnp.float32), cand_w=jnp.zeros((m,), jnp.float32))
  if moments:
    acc.update(mom_n=jnp.zeros((), jnp.int32), mom_mean=jnp.zeros((d,), jnp.float32),
               mom_m2=jnp.zeros((d,), jnp.float32), nonfinite=jnp.zeros((), jnp.int32))
  return acc


def _merge_moments(acc, xb, wb=None):
  """Chan et al.'s pairwise update of (count, mean, M2) with one chunk.

  Counts only finite rows of positive weight, as ``lloyd._data_tolerance``
  does, so the tolerance matches the in-memory path."""
  xf = xb.astype(jnp.float32)
  finite = jnp.all(jnp.isfinite(xf), axis=-1)
  ok = finite if wb is None else finite & (wb > 0)
  nb = jnp.sum(ok, dtype=jnp.float32)
  xf = jnp.where(ok[:, None], xf, 0.0)
  mb = jnp.sum(xf, axis=0) / jnp.maximum(nb, 1.0)
  m2b = jnp.sum(jnp.where(ok[:, None], jnp.square(xf - mb), 0.0), axis=0)
  na = acc["mom_n"].astype(jnp.float32)
  n = jnp.maximum(na + nb, 1.0)
  delta = mb - acc["mom_mean"]
  out = dict(acc)
  out["mom_mean"] = acc["mom_mean"] + delta * (nb / n)
  out["mom_m2"] = acc["mom_m2"] + m2b + jnp.square(delta) * (na * nb / n)
  out["mom_n"] = acc["mom_n"] + nb.astype(jnp.int32)
  out["nonfinite"] = acc["nonfinite"] + jnp.sum(~finite)
  return out


def _merge_candidates(acc, xb, labels, dist, w):
  """Keeps the M farthest (positive-weight, finite) points seen so far.

  Candidates come first in the concatenation and hold earlier rows, and
  ``top_k`` breaks ties by position, so ties resolve towards the lower row
  index exactly as the in-memory relocation does.
  """
  m = acc["cand_dist"].shape[0]
  ok = (w > 0) & jnp.isfinite(dist)
  score_b = jnp.where(ok, dist, -jnp.inf)
  score_a = jnp.where((acc["cand_w"] > 0) & jnp.isfinite(acc["cand_dist"]),
                      acc["cand_dist"], -jnp.inf)
  _, idx = lax.top_k(jnp.concatenate([score_a, score_b]), m)
  from_a = idx < m
  ia = jnp.clip(idx, 0, m - 1)
  ib = jnp.clip(idx - m, 0, xb.shape[0] - 1)
  out = dict(acc)
  out["cand_x"] = jnp.where(from_a[:, None], acc["cand_x"][ia], xb[ib].astype(jnp.float32))
  out["cand_lab"] = jnp.where(from_a, acc["cand_lab"][ia], labels[ib])
  out["cand_dist"] = jnp.where(from_a, acc["cand_dist"][ia], dist[ib])
  out["cand_w"] = jnp.where(from_a, acc["cand_w"][ia], w[ib])
  return out


def accumulate(acc: dict, c: jax.Array, xb: jax.Array, wb: jax.Array | None, cfg: Cfg):
  """Folds one chunk into ``acc``.

  Args:
    acc: accumulator from :func:`new_acc` (its keys say what to compute).
    c: ``float32[K, D]`` current centroids.
    xb: ``[B, D]`` chunk of points (the host dtype); wb: ``float32[B]``
      weights or ``None``.

  Returns:
    ``(acc, labels int32[B], dist float32[B])``.
  """
  labels, dist = assign_op.assign(xb, c, cfg.metric, cfg.impl, cfg.precision, cfg.config)
  out = dict(acc)
  out["inertia"] = acc["inertia"] + (jnp.sum(dist) if wb is None else jnp.sum(wb * dist))
  if "sums" in acc:
    s, n = cluster_sums_op.cluster_sums(xb, labels, cfg.k, wb, cfg.impl)
    out["sums"] = acc["sums"] + s
    out["counts"] = acc["counts"] + n
  if "cand_x" in acc:
    w = jnp.ones(dist.shape, jnp.float32) if wb is None else wb
    out = _merge_candidates(out, xb, labels, dist, w)
  if "mom_n" in acc:
    out = _merge_moments(out, xb, wb)
  return out, labels, dist


@functools.partial(jax.jit, static_argnames=("cfg",))
def finalize(acc: dict, c: jax.Array, *, cfg: Cfg) -> tuple[jax.Array, jax.Array]:
  """New centroids ``float32[K, D]`` from a Lloyd pass, and the squared
  centroid shift (the quantity ``kmeans`` compares with the tolerance)."""
  extra = {}
  if cfg.empty == "farthest":
    extra = dict(x=acc["cand_x"], labels=acc["cand_lab"], dist=acc["cand_dist"],
                 weights=acc["cand_w"])
  cand = None
  if extra:
    f = stats.Farthest(extra["x"], extra["labels"], extra["dist"], extra["weights"])
    cand = lambda: f  # noqa: E731
  total = stats.ClusterStats(acc["sums"], acc["counts"], acc["inertia"])
  new_c, _ = centroids_mod.finalize(total, c, metric=cfg.metric, empty=cfg.empty,
                                    candidates=cand)
  return new_c, jnp.sum(jnp.square(new_c - c))


def tolerance(acc: dict, tol: float) -> float:
  """``tol`` times the mean per-feature (population) variance, as
  ``lloyd._data_tolerance`` computes it in memory."""
  if tol == 0:
    return 0.0
  var = acc["mom_m2"] / acc["mom_n"].astype(jnp.float32)
  return float(jnp.float32(tol) * jnp.mean(var))
