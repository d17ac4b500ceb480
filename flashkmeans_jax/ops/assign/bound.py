"""A rigorous bound on the error of the assignment's float32 scores.

Every implementation minimises ``S_k = b_k - x . c_k`` (:mod:`flashkmeans_jax.
core.metric`). Write ``S_k`` for the exact real value on the float32 inputs
(``b_k = ||c_k||^2 / 2`` for sqeuclidean; for cosine ``c_k`` is the exact unit
vector ``c_k / ||c_k||``) and ``Ŝ_k`` for what an implementation computes.
Then ``||x - c_k||^2 = ||x||^2 + 2 S_k`` and, for cosine, ``1 - cos = 1 + S_k /
||x||``, so the float64 argmin of the distances is the argmin of ``S_k`` up to
float64's own ~1e-16. This module bounds ``|Ŝ_k - S_k| <= E(x)`` for every k.

Derivation (Higham, *Accuracy and Stability of Numerical Algorithms*, 2nd ed.,
§2.2 and §3.1; ``γ_n(u) = n u / (1 - n u)``). Let ``u = 2^-24``.

1. Operand rounding. The fast dot multiplies ``x̃_i = x_i (1 + δ_i)`` and
   ``c̃_i = c_i (1 + ε_i)`` with ``|δ|, |ε| <= u_op``: TF32 keeps 10 stored
   mantissa bits and may truncate, ``u_op = 2^-10``; float16 after the
   power-of-two scale of :mod:`flashkmeans_jax.core.half_dot` rounds to
   nearest, ``u_op = 2^-11``, plus for entries below float16's normal range an
   absolute ``2^-25`` in scaled units, i.e. ``2^-39`` of the row's (or the
   centroids') largest entry, which adds ``2^-39 sqrt(D)`` below; bfloat16
   ``u_op = 2^-8``. The 3-pass schemes split each operand into a high and a
   low part and drop low*low: TF32x3 loses at most ``3 * 2^-20 <= 2u_op`` per
   product with ``u_op = 2^-19``, bfloat16x3 (x6, x9) ``3 * 2^-16``,
   ``u_op = 2^-15``. A true float32 dot has ``u_op = 0``. Products of
   <= 12-bit significands are exact in float32, so
   ``|x̃ . c̃ - x . c| <= (2 u_op + u_op^2) sum |x_i c_i|``.
2. Accumulation. ``T = passes * D`` products are added in float32 in any
   order (tiles, trees, tensor-core blocks): ``|fl(sum p) - sum p| <=
   γ_T(u_a) sum |p|`` (Higham (3.4)-(3.5) for any order). Tensor cores may
   align and truncate instead of rounding, so ``u_a = 2u`` everywhere (one
   bound for every backend; on the CPU it is twice the truth).
   ``sum |x̃_i c̃_i| <= (1 + u_op)^2 sum |x_i c_i|`` and, by Cauchy-Schwarz,
   ``sum |x_i c_i| <= ||x|| ||c_k|| <= ||x|| max_k ||c_k|| =: P``.
3. Bias and finish (sqeuclidean). ``b̂_k = fl(sum c^2) / 2`` has error
   ``γ_{D+1}(u_a) b_k``; ``Ŝ = fl(b̂ - d̂)`` adds ``u (b̂ + |d̂|)``. The
   scores of the 16-bit path are multiplied by powers of two: exact.
4. Cosine. The unit rows are ``ĉ = c * rsqrt(fl(sum c^2))`` rounded: each
   entry is the exact unit vector's times ``(1 + ν)`` with ``|ν| <=
   γ_{D+1}(u) / 2 + 5u =: ε_n`` (the sum's ``γ_D``, halved by the square
   root, plus a 4-ulp rsqrt and the product; sums of squares are plain
   float32 reductions, rounded to nearest, never tensor-core blocks), so ``|x . ĉ - x . c/||c||| <= ε_n ||x||`` and
   ``||ĉ|| <= 1 + ε_n``; the bias is 0 and ``0 - d̂`` is exact.
5. Norms. ``||x||`` and ``||c_k||`` come from float32 sums of squares: an
   upper bound is ``sqrt(s / (1 - γ_D(u)))``, inflated by ``(1 + 4u)`` for
   the square root and the division.
6. Underflow. Flushed subnormals lose at most ``2^-126`` per operation, in the
   16-bit path times the undone scales (<= 2^26 for |entries| <= 2^13 ...
   2^-13 of the scale's range); ``(T + D + 8) 2^-100`` covers it.

So ``E(x) = [(2u_op + u_op^2) + γ_T(u_a)(1 + u_op)^2] P`` (dot), ``+ γ_{D+1}(u_a)
B + u (B + (1 + 2 u_op + γ_T) P)`` (sqeuclidean, ``B`` an upper bound of the
largest bias; its sum is kept at ``u_a``), ``+ ε_n ||x||`` (cosine), ``+ (T + D + 8) 2^-100``, and the
whole is multiplied by ``1 + 2^-16`` for its own float32 evaluation (about 20
roundings). ``P`` uses the largest centroid norm, so one ``E`` serves every k.

A label ``k1`` with runner-up score ``Ŝ_2 = min_{k != k1} Ŝ_k`` is then
*certified*, ``S_{k1} < S_k`` for every ``k != k1``, when ``fl(Ŝ_2 - Ŝ_1) > 2
E (1 + 2^-16)`` (the subtraction's own rounding is inside the second factor).
The bound assumes no overflow (|x|, |c| well below 1e19) and finite inputs; a
NaN margin is never certified.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from flashkmeans_jax.core import precision as precision_mod

__all__ = ["DotModel", "dot_model", "CentroidStats", "centroid_stats", "score_error_bound",
           "certified_mask", "U", "U_ACC"]

U = 2.0 ** -24        # float32 unit roundoff (round to nearest)
U_ACC = 2.0 ** -23    # one float32 addition, truncating hardware included
_SELF = 2.0 ** -16    # the bound's own float32 evaluation, and the margin's
_FLOOR = 2.0 ** -100  # per operation: flushed subnormals (item 6)

_P = lax.DotAlgorithmPreset


class DotModel(NamedTuple):
  """Operand rounding ``u_op`` and products per feature ``passes`` of a dot;
  ``half`` marks the scaled float16 operands (their subnormal term)."""

  u_op: float
  passes: int
  half: bool = False


_TF32 = DotModel(2.0 ** -10, 1)
_EXACT = DotModel(0.0, 1)
_MODELS = {
    _P.F16_F16_F32: DotModel(2.0 ** -11, 1, True),
    _P.BF16_BF16_F32: DotModel(2.0 ** -8, 1),
    _P.TF32_TF32_F32: _TF32,
    _P.TF32_TF32_F32_X3: DotModel(2.0 ** -19, 3),
    _P.BF16_BF16_F32_X3: DotModel(2.0 ** -15, 3),
    _P.BF16_BF16_F32_X6: DotModel(2.0 ** -15, 6),
    _P.BF16_BF16_F32_X9: DotModel(2.0 ** -15, 9),
    _P.F32_F32_F32: _EXACT,
    lax.Precision.HIGHEST: _EXACT,
}


def dot_model(precision: Any, impl: str) -> DotModel:
  """The :class:`DotModel` of the score dot of ``impl`` at a resolved float32
  ``precision`` (a :class:`~flashkmeans_jax.core.precision.Certified` is read
  through its base).

  The Pallas kernel on the GPU runs HIGHEST as TF32x3
  (:func:`flashkmeans_jax.ops.assign.pallas_triton.kernel_precision`); XLA
  and the interpreter run it as a float32 dot. DEFAULT/HIGH are TF32 on
  NVIDIA GPUs (and exact float32 on the CPU, which the TF32 model covers).
  """
  p = precision_mod.dot_precision(precision)
  if impl == "pallas" and p in (lax.Precision.HIGHEST, _P.F32_F32_F32):
    return _MODELS[_P.TF32_TF32_F32_X3]
  return _MODELS.get(p, _TF32)


class CentroidStats(NamedTuple):
  """Upper bounds over the usable centroids: ``norm`` of the largest
  ``||c_k||`` (as the dot takes c: unit rows for cosine) and ``bias`` of the
  largest ``b_k`` (0 unless sqeuclidean). float32 scalars."""

  norm: jax.Array
  bias: jax.Array


def _gamma(n, u=U_ACC):
  return n * u / (1.0 - n * u)


def _norm_up(sq, d):
  """Upper bound of the exact norm from a float32 sum of squares (item 5)."""
  return jnp.sqrt(jnp.maximum(sq, 0.0) / (1.0 - _gamma(d, U))) * (1.0 + 4 * U)


def _unit_error(d):
  """``ε_n`` of item 4: relative error of every entry of a unit row."""
  return _gamma(d + 1, U) / 2 + 5 * U


def centroid_stats(c: jax.Array, bias: jax.Array, metric: str) -> CentroidStats:
  """:class:`CentroidStats` of prepared centroids ``c [K, D]`` (float32) and
  their ``bias float32[K]`` (:func:`flashkmeans_jax.core.metric.
  prepare_centroids`; unusable rows are zero with bias ``+inf``)."""
  d = c.shape[-1]
  cf = c.astype(jnp.float32)
  sq = jnp.max(jnp.sum(cf * cf, axis=-1), initial=0.0)
  if metric == "cosine":
    # The unit rows' norms are 1 up to the normalisation's error (item 4).
    norm = jnp.minimum(_norm_up(sq, d), 1.0 + _unit_error(d))
  else:
    norm = _norm_up(sq, d)
  usable = jnp.isfinite(bias)
  b = jnp.max(jnp.where(usable, bias, 0.0), initial=0.0) * (1.0 + _gamma(d + 1))
  return CentroidStats(norm.astype(jnp.float32), b.astype(jnp.float32))


def score_error_bound(xsq: jax.Array, stats: CentroidStats, d: int, metric: str,
                      model: DotModel) -> jax.Array:
  """``E float32[N]``: ``|Ŝ_k - S_k| <= E`` for every centroid k (module
  docstring), from the float32 ``||x||^2`` of every point ``xsq [N]``."""
  t = model.passes * d
  u_op = model.u_op + (2.0 ** -39) * (d ** 0.5) if model.half else model.u_op
  g_t = _gamma(t)
  nx = _norm_up(xsq.astype(jnp.float32), d)
  p = nx * stats.norm
  e = ((2 * u_op + u_op * u_op) + g_t * (1 + u_op) ** 2) * p
  if metric == "sqeuclidean":
    e = e + _gamma(d + 1) * stats.bias + U * (stats.bias + (1 + 2 * u_op + g_t) * p)
  elif metric == "cosine":
    e = e + _unit_error(d) * nx
  e = e + (t + d + 8) * _FLOOR
  return e * (1.0 + _SELF)


def certified_mask(best: jax.Array, second: jax.Array, bound: jax.Array) -> jax.Array:
  """``bool[N]``: the label of score ``best`` is the exact argmin, given the
  runner-up score ``second`` and the bound ``E`` of both. A point with one
  usable centroid (``second = +inf``, ``best`` finite) is certified; a NaN or
  infinite ``best`` never is."""
  margin = second - best
  return jnp.isfinite(best) & (margin > 2.0 * bound * (1.0 + _SELF))
