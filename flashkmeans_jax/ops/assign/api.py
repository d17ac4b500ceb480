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
from flashkmeans_jax.ops.cluster_sums import config as cluster_sums_config

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

  W.r.t. x it is elementwise. W.r.t. the centroids it is a per-cluster sum,
  computed as ONE weighted cluster sum of x in its own dtype (on the GPU the
  sort-inverse kernel: contiguous segments, no contended atomic scatter of N
  rows into K, the same bits on every run, and no ``[N, D]`` float32 rows
  written or read; for small ``N * D``, where the sort costs more than the
  sums, XLA's segment sum: see
  :func:`~flashkmeans_jax.ops.cluster_sums.config.backward_sums_impl`),
  with ``S_k = sum_{i in k} w_i x_i`` and ``G_k = sum w_i``:

  * sqeuclidean, ``w = g``: ``sum_i -2 g_i (x_i - c_k) = 2 (c_k G_k - S_k)``;
  * dot, ``w = g``: ``-S_k``;
  * cosine, ``w = g / |x|`` (so ``S_k = sum g_i u_i`` with ``u_i = x_i/|x_i|``)
    and ``v_k = c_k/|c_k|``: ``-(S_k - v_k (v_k . S_k)) / |c_k|``, since
    ``sum g_i cos_i = v_k . S_k`` inside cluster k.

  Rows of x holding NaN or Inf, zero rows (cosine), non-finite cotangents
  and non-finite centroids add nothing to it, as when it was a sum of
  per-row terms whose non-finite ones the op leaves out. The expanded form
  rounds relative to ``|x|`` rather than ``|x - c|``: for data far from the
  origin relative to its spread the float32 error grows in that ratio.
  """
  del precision, config, runner_up
  x, centroids, labels = res
  impl = cluster_sums_config.backward_sums_impl(x.shape[0], x.shape[1], impl)
  g_raw = cts[1].astype(jnp.float32)  # the runner-up's cotangent (cts[2]): no gradient
  # gx keeps a non-finite cotangent (elementwise); the centroid sums leave it out.
  g = jnp.where(jnp.isfinite(g_raw), g_raw, 0.0)
  k = centroids.shape[0]
  cf = centroids.astype(jnp.float32)
  c_ok = jnp.all(jnp.isfinite(cf), axis=-1, keepdims=True)
  cl = cf[labels]
  xf = x.astype(jnp.float32)  # gx only: elementwise, fused into its output
  g1 = g_raw[:, None]
  if metric == "sqeuclidean":
    gx = 2.0 * g1 * (xf - cl)
    s, gsum = cluster_sums_op.cluster_sums(x, labels, k, g, impl)
    gc = 2.0 * (cf * gsum[:, None] - s)
  elif metric == "cosine":
    xn = jnp.sqrt(jnp.sum(xf * xf, -1))
    cn = jnp.sqrt(jnp.sum(cf * cf, -1, keepdims=True))
    x_ok = (xn > 0) & jnp.isfinite(xn)
    inv_xn = jnp.where(x_ok, 1.0 / jnp.where(x_ok, xn, 1.0), 0.0)[:, None]
    cn_safe = jnp.where(cn > 0, cn, 1.0)
    v = cf / cn_safe
    vl = v[labels]
    u = xf * inv_xn
    cos = jnp.sum(u * vl, -1, keepdims=True)
    gx = -g1 * (vl - cos * u) * inv_xn
    s, _ = cluster_sums_op.cluster_sums(x, labels, k, g * inv_xn[:, 0], impl)
    gc = jnp.where(cn > 0, -(s - v * jnp.sum(v * s, -1, keepdims=True)) / cn_safe, 0.0)
  else:
    gx = -g1 * cl
    s, _ = cluster_sums_op.cluster_sums(x, labels, k, g, impl)
    gc = -s
  gc = jnp.where(c_ok, gc, 0.0)
  return gx.astype(x.dtype), gc.astype(centroids.dtype)


_assign3.defvjp(_assign_fwd, _assign_bwd)
