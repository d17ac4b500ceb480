"""The assignment op: one entry point over its implementations.

:func:`assign` takes already validated, resolved options (``impl`` is one of
``"xla"``, ``"pallas"``, ``"pallas_interpret"``; ``precision`` a
``lax.Precision`` or preset) and picks the XLA path or the Pallas kernel. Its
distances are differentiable (a ``custom_vjp``: the Pallas call has no
reverse-mode rule of its own). The checked public function is
:func:`flashkmeans_jax.assign`.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from flashkmeans_jax.core import precision as precision_mod
from flashkmeans_jax.ops.assign import certified
from flashkmeans_jax.ops.assign import xla
from flashkmeans_jax.ops.cluster_sums import api as cluster_sums_op

__all__ = ["assign", "assign_runner_up"]


def _forward(x, centroids, metric, impl, precision, config, runner_up):
  if precision_mod.is_certified(precision):
    if x.dtype == jnp.float32:
      top = certified.certified_top2(x, centroids, metric, impl, precision, config)
      dist, runner = certified.finish(top, metric)
      return top.labels, dist, (runner if runner_up else None)
    # 16-bit products are exact and float64 is its own reference: the
    # certificate is for float32 points only.
    precision = precision_mod.dot_precision(precision)
  if runner_up:
    top = certified.top2(x, centroids, metric, impl, precision, config)
    dist, runner = certified.finish(top, metric)
    return top.labels, dist, runner
  if impl == "xla":
    labels, dist = xla.assign_xla(x, centroids, metric=metric, precision=precision)
    return labels, dist, None
  # Imported here so that the CPU path never imports the Triton lowering.
  from flashkmeans_jax.ops.assign import pallas_triton
  labels, dist = pallas_triton.flash_assign(
      x, centroids, metric=metric, precision=precision, config=config,
      interpret=(impl == "pallas_interpret"))
  return labels, dist, None


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4, 5, 6))
def _assign3(x, centroids, metric, impl, precision, config, runner_up):
  return _forward(x, centroids, metric, impl, precision, config, runner_up)


def assign(x, centroids, metric, impl, precision, config):
  """Labels ``int32[N]`` and distances ``float32[N]`` of ``x [N, D]`` to
  ``centroids [K, D]`` by the resolved ``impl`` (no argument checks).

  ``dist`` is differentiable w.r.t. both arrays (the gradient of each point's
  distance to its chosen centroid, labels held fixed). A
  :class:`~flashkmeans_jax.core.precision.Certified` ``precision`` gives
  certified float32 labels (:mod:`.certified`)."""
  labels, dist, _ = _assign3(x, centroids, metric, impl, precision, config, False)
  return labels, dist


def assign_runner_up(x, centroids, metric, impl, precision, config):
  """:func:`assign` plus the runner-up distance ``float32[N]`` of every point
  (its distance to the second nearest centroid, ``+inf`` with a single
  usable centroid; equal to ``dist`` on a tie). The runner-up carries no
  gradient: its cotangent is ignored (the second centroid is not kept)."""
  return _assign3(x, centroids, metric, impl, precision, config, True)


def _assign_fwd(x, centroids, metric, impl, precision, config, runner_up):
  labels, dist, runner = _forward(x, centroids, metric, impl, precision, config, runner_up)
  return (labels, dist, runner), (x, centroids, labels)


def _assign_bwd(metric, impl, precision, config, runner_up, res, cts):
  """Gradient of each point's distance to its chosen centroid (labels fixed).

  W.r.t. x it is elementwise. W.r.t. the centroids it is a per-cluster sum of
  cotangent-weighted rows: the cluster-sums op computes it (on the GPU the
  sort-inverse kernel: contiguous segments, no contended atomic scatter of N
  rows into K, and the same bits on every run). Rows of x holding NaN or Inf
  add nothing to it (the op's rule).
  """
  del precision, config, runner_up
  x, centroids, labels = res
  g = cts[1]  # the runner-up's cotangent (cts[2]) is dropped: no gradient
  k = centroids.shape[0]
  xf = x.astype(jnp.float32)
  cf = centroids.astype(jnp.float32)
  cl = cf[labels]
  g = g.astype(jnp.float32)[:, None]
  if metric == "sqeuclidean":
    diff = xf - cl
    gx = 2.0 * g * diff
    gc_rows = -gx
  elif metric == "cosine":
    xn = jnp.sqrt(jnp.sum(xf * xf, -1, keepdims=True))
    cn = jnp.sqrt(jnp.sum(cl * cl, -1, keepdims=True))
    u = xf / jnp.where(xn > 0, xn, 1.0)
    v = cl / jnp.where(cn > 0, cn, 1.0)
    cos = jnp.sum(u * v, -1, keepdims=True)
    gx = jnp.where(xn > 0, -g * (v - cos * u) / jnp.where(xn > 0, xn, 1.0), 0.0)
    gc_rows = jnp.where((cn > 0) & (xn > 0),
                        -g * (u - cos * v) / jnp.where(cn > 0, cn, 1.0), 0.0)
  else:
    gx = -g * cl
    gc_rows = -g * xf
  gc, _ = cluster_sums_op.cluster_sums(gc_rows, labels, k, None, impl)
  return gx.astype(x.dtype), gc.astype(centroids.dtype)


_assign3.defvjp(_assign_fwd, _assign_bwd)
