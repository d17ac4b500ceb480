"""Float64 NumPy references used across tests.

The references work on the operands an implementation really multiplies (the
points and centroids after any rounding to 16 bits), so what is left between
a correct implementation and them is float32 accumulation alone; the bounds
on that, and the checks built on them, are in :mod:`tests.cases`.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

import flashkmeans_jax as fk

from flashkmeans_jax.core import metric as metric_mod
from flashkmeans_jax.core import precision as precision_mod

# Largest [rows, K] float64 block the references build at a time.
_BLOCK_ELEMENTS = 1 << 24


def np_distances(x, c, metric: str) -> np.ndarray:
  """float64 ``[N, K]`` distances. The squared-Euclidean expansion in float64
  is ~1e-16 relative to the norms, far below any float32 tolerance, and needs
  no ``[N, K, D]`` temporary."""
  x = np.asarray(x, np.float64)
  c = np.asarray(c, np.float64)
  if metric == "sqeuclidean":
    d = (x * x).sum(1)[:, None] + (c * c).sum(1)[None, :] - 2.0 * (x @ c.T)
    return np.maximum(d, 0.0)
  if metric == "cosine":
    xn = np.linalg.norm(x, axis=1)[:, None]
    cn = np.linalg.norm(c, axis=1)[None, :]
    denom = xn * cn
    cos = np.where(denom > 0, (x @ c.T) / np.where(denom > 0, denom, 1), 0.0)
    return np.where(xn > 0, 1.0 - cos, 1.0)
  if metric == "dot":
    return -(x @ c.T)
  raise ValueError(metric)


def np_assign(x, c, metric: str):
  d = np_distances(x, c, metric)
  lab = d.argmin(1)
  return lab, d[np.arange(len(lab)), lab], d


def assert_labels_match(x, c, labels, metric: str, rtol: float = 1e-5, atol: float = 1e-6,
                        dist=None, dist_rtol: float | None = None, dist_atol: float | None = None):
  """Labels against float64 argmin with explicit tolerances (kept for the
  streaming, sharded and reliability tests; the kernel and algorithm tests
  use the derived bounds of :func:`tests.cases.check_assign_result`).

  A label that differs from the float64 argmin is accepted only when its
  float64 distance is within ``atol + rtol * scale`` of the best one, where
  scale is the magnitude of the terms behind the distances.
  """
  labels = np.asarray(labels)
  ref_lab, ref_best, d = np_assign(x, c, metric)
  assert labels.shape == ref_lab.shape
  assert labels.min() >= 0 and labels.max() < d.shape[1]
  got = d[np.arange(len(labels)), labels]
  x64 = np.asarray(x, np.float64)
  c64 = np.asarray(c, np.float64)
  if metric == "sqeuclidean":
    scale = (x64 ** 2).sum(1) + (c64 ** 2).sum(1).max() + 1.0
  elif metric == "dot":
    scale = np.linalg.norm(x64, axis=1) * np.linalg.norm(c64, axis=1).max() + 1.0
  else:
    scale = np.ones(len(labels))
  bad = got - ref_best > atol + rtol * scale
  assert not bad.any(), (
      f"{bad.sum()} labels are not (near-)nearest: e.g. index {np.flatnonzero(bad)[:5]}, "
      f"gap {(got - ref_best)[bad][:5]}")
  if dist is not None:
    dist = np.asarray(dist, np.float64)
    r = rtol if dist_rtol is None else dist_rtol
    a = atol if dist_atol is None else dist_atol
    err = np.abs(dist - got)
    off = err > a * scale + r * np.abs(got)
    assert not off.any(), (
        f"{off.sum()} distances off: index {np.flatnonzero(off)[:5]}, got {dist[off][:5]}, "
        f"want {got[off][:5]}")


def make_blobs(rng, n, d, k, spread=10.0, std=0.5, dtype=np.float32):
  """Well-separated Gaussian blobs: (x [n, d], centers [k, d], true labels [n])."""
  centers = rng.normal(size=(k, d)) * spread
  lab = rng.integers(0, k, size=n)
  return (centers[lab] + rng.normal(size=(n, d)) * std).astype(dtype), centers, lab


# --- The operands of the assignment dot -------------------------------------

_HALF_DTYPES = {lax.DotAlgorithmPreset.F16_F16_F32: np.float16,
                lax.DotAlgorithmPreset.BF16_BF16_F32: jnp.bfloat16}


def half_operand_dtype(dtype, precision):
  """The 16-bit type float32 points are rounded to for the dot under the
  ``F16_F16_F32`` / ``BF16_BF16_F32`` precisions, else ``None``."""
  if jnp.dtype(dtype) != jnp.float32:
    return None
  return _HALF_DTYPES.get(precision_mod.resolve_precision(precision))


def round_to_half(a, dtype, axis):
  """float64 values of float32 ``a`` as the 16-bit dot operand: rounded to
  ``dtype`` after scaling by the power of two that brings the largest
  magnitude over ``axis`` (a row, or the whole matrix) into [2^14, 2^15).

  Written from the rule in ``flashkmeans_jax.core.half_dot`` (scales
  clipped to 2^+-126), not from its code: the scaled value is exact, so one
  rounding to float16 (to nearest even, subnormals included) gives the
  operand bit for bit. bfloat16 has float32's range and is not scaled.
  """
  a = np.asarray(a, np.float64)
  if dtype != np.float16:
    return np.asarray(jnp.asarray(a, jnp.float32).astype(dtype), np.float64)
  _, e = np.frexp(np.max(np.abs(a), axis=axis, keepdims=True))  # max = f 2^e, f in [.5, 1)
  s = np.clip(15 - e, -126, 126)
  return np.ldexp(np.ldexp(a, s).astype(np.float16).astype(np.float64), -s)


@functools.partial(jax.jit, static_argnums=(1,))
def _unit_rows(c, dtype):
  return metric_mod.prepare_centroids(c, "cosine", dtype)[0]


def assign_operands(x, c, metric: str, precision=None):
  """What every implementation of ``assign`` computes with, in float64.

  Args:
    x: ``[..., N, D]`` points; c: ``[..., K, D]`` centroids.

  Returns:
    ``(x_dot, c_dot, xsq, csq)``: the operands of the dot ``x . c`` (the
    points as given, the centroids cast to the points' dtype, cosine
    centroids as unit rows; under the half precisions both rounded to 16
    bits), float64 ``[..., N, D]`` and ``[..., K, D]``; ``||x||^2 [..., N]``
    from the points as given and ``||c||^2 [..., K]`` from the cast
    centroids, as the implementations take them in float32.

  The unit rows of cosine centroids come from
  ``flashkmeans_jax.core.metric.prepare_centroids`` (the cast to 16 bits of
  a float32 quotient, which a NumPy copy would round differently in rare
  ties); ``tests/test_assign.py`` checks them against float64.
  """
  x = jnp.asarray(x)
  c = jnp.asarray(c)
  if metric == "cosine":
    # Compiled, as inside the implementations: a 1-ulp difference of the
    # float32 unit row (the reduction of ||c||^2 may be ordered differently
    # op by op) can flip its cast to 16 bits.
    c_cast = _unit_rows(c, jnp.dtype(x.dtype))
  else:
    c_cast = c.astype(x.dtype)
  x64 = np.asarray(x.astype(jnp.float32), np.float64)
  c64 = np.asarray(c_cast.astype(jnp.float32), np.float64)
  xsq, csq = (x64 * x64).sum(-1), (c64 * c64).sum(-1)
  half = half_operand_dtype(x.dtype, precision)
  if half is None:
    return x64, c64, xsq, csq
  return round_to_half(x64, half, -1), round_to_half(c64, half, (-2, -1)), xsq, csq


def assign_terms(x_dot, c_dot, xsq, csq, metric: str):
  """float64 distances ``[..., N, K]`` from the operands, and the magnitude of
  the terms a float32 evaluation adds up for each (its rounding scales with
  them, not with the possibly tiny distance).

  sqeuclidean: ``||x||^2 + ||c||^2 - 2 x.c`` (clamped at 0), terms
  ``||x||^2 + 2 sum_d |x_d c_d| + ||c||^2``; dot: ``-x.c``, terms
  ``sum_d |x_d c_d|``; cosine: ``1 - x.c / ||x||`` (clipped to [0, 2]; 1 for
  x = 0), terms ``sum_d |x_d c_d| / ||x|| + 1``.
  """
  dots = x_dot @ np.swapaxes(c_dot, -1, -2)  # matmul: BLAS, batched over leading axes
  absdots = np.abs(x_dot) @ np.swapaxes(np.abs(c_dot), -1, -2)
  if metric == "sqeuclidean":
    d = np.maximum(xsq[..., :, None] + csq[..., None, :] - 2.0 * dots, 0.0)
    return d, xsq[..., :, None] + 2.0 * absdots + csq[..., None, :]
  if metric == "dot":
    return -dots, absdots
  if metric == "cosine":
    xn = np.sqrt(xsq)[..., :, None]
    safe = np.where(xn > 0, xn, 1.0)
    d = np.where(xn > 0, np.clip(1.0 - dots / safe, 0.0, 2.0), 1.0)
    return d, absdots / safe + 1.0
  raise ValueError(metric)


def row_blocks(n: int, k: int):
  """Slices over N that keep an ``[rows, K]`` float64 block small."""
  rows = max(1, _BLOCK_ELEMENTS // max(k, 1))
  return [slice(i, min(i + rows, n)) for i in range(0, n, rows)]


def cluster_sums_reference(x, labels, k: int, weights=None):
  """float64 per-cluster sums of ``x [..., N, D]`` (rows holding NaN/Inf get
  weight 0, as in every implementation).

  Returns ``(sums [..., K, D], abs_sums [..., K, D], counts [..., K],
  terms [..., K])``: the sums of ``w x``, of ``|w x|`` (what float32 rounding
  scales with), of the weights, and the number of rows added into each
  cluster.
  """
  x = np.asarray(jnp.asarray(x).astype(jnp.float32), np.float64)
  labels = np.asarray(labels).astype(np.int64)
  batch, (n, d) = x.shape[:-2], x.shape[-2:]
  w = np.ones(x.shape[:-1]) if weights is None else np.asarray(weights, np.float64)
  ok = np.isfinite(x).all(-1)
  w = np.where(ok, w, 0.0)
  contrib = np.where(ok[..., None], x, 0.0) * w[..., None]
  # One flat segment sum over members: member b's cluster j is b * k + j.
  members = int(np.prod(batch, dtype=np.int64))
  seg = (labels.reshape(members, n) + k * np.arange(members)[:, None]).ravel()
  flat = contrib.reshape(-1, d)

  def segsum(v):
    out = np.zeros((members * k,) + v.shape[1:])
    np.add.at(out, seg, v)
    return out

  sums = segsum(flat).reshape(*batch, k, d)
  abs_sums = segsum(np.abs(flat)).reshape(*batch, k, d)
  counts = np.bincount(seg, w.ravel(), members * k).reshape(*batch, k)
  terms = np.bincount(seg, (w.ravel() != 0).astype(np.float64), members * k)
  return sums, abs_sums, counts, terms.reshape(*batch, k)


# --- References for the other kernel checks ------------------------------------


def check_stable_label_sort(labels, k):
  """``sort_by_label`` against NumPy's stable argsort, for ``labels [N]``, or
  under ``vmap`` for ``labels [B, N]``."""
  from flashkmeans_jax.ops.cluster_sums import sort as label_sort
  labels = np.asarray(labels, np.int32)
  sort = lambda l: label_sort.sort_by_label(l, k)  # noqa: E731
  perm, sorted_labels = (sort if labels.ndim == 1 else jax.vmap(sort))(jnp.asarray(labels))
  assert perm.dtype == jnp.int32 and sorted_labels.dtype == jnp.int32
  for row, p, sl in zip(labels.reshape(-1, labels.shape[-1]),
                        np.asarray(perm).reshape(-1, labels.shape[-1]),
                        np.asarray(sorted_labels).reshape(-1, labels.shape[-1])):
    expect = np.argsort(row, kind="stable")
    np.testing.assert_array_equal(p, expect)
    np.testing.assert_array_equal(sl, row[expect])


def check_grad(impl, metric):
  rng = np.random.default_rng(6)
  x = jnp.asarray(rng.normal(size=(64, 5)), jnp.float32)
  c = jnp.asarray(rng.normal(size=(4, 5)), jnp.float32)
  loss = lambda x, c, impl: jnp.sum(fk.assign(x, c, metric=metric, impl=impl,  # noqa: E731
                                              precision="highest")[1] ** 2)
  gx, gc = jax.grad(loss, argnums=(0, 1))(x, c, impl)
  # Against the XLA path and against finite differences of the distances to
  # the (fixed) chosen centroids.
  gx_ref, gc_ref = jax.grad(loss, argnums=(0, 1))(x, c, "xla")
  np.testing.assert_allclose(np.asarray(gx), np.asarray(gx_ref), rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(np.asarray(gc), np.asarray(gc_ref), rtol=1e-5, atol=1e-5)
  labels = np.asarray(fk.assign(x, c, impl=impl, metric=metric, precision="highest")[0])
  x64, c64 = np.asarray(x, np.float64), np.asarray(c, np.float64)

  def f(x64, c64):
    return float((np_distances(x64, c64, metric)[np.arange(64), labels] ** 2).sum())

  eps = 1e-5
  for (i, j) in [(0, 0), (10, 3), (63, 4)]:
    xp, xm = x64.copy(), x64.copy()
    xp[i, j] += eps
    xm[i, j] -= eps
    np.testing.assert_allclose(float(gx[i, j]), (f(xp, c64) - f(xm, c64)) / (2 * eps),
                               rtol=1e-3, atol=1e-3)
  for (i, j) in [(0, 0), (3, 2)]:
    cp, cm = c64.copy(), c64.copy()
    cp[i, j] += eps
    cm[i, j] -= eps
    np.testing.assert_allclose(float(gc[i, j]), (f(x64, cp) - f(x64, cm)) / (2 * eps),
                               rtol=1e-3, atol=1e-3)
