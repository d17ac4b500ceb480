"""The power-of-two scaling behind the F16_F16_F32 / BF16_BF16_F32 precisions."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jax import lax
from sklearn.metrics import adjusted_rand_score

import flashkmeans_jax as fk
from flashkmeans_jax.core import half_dot
from tests import cases, helpers


def _round_to_11_significant_bits(v):
  """float64 round-to-nearest-even of ``v`` to 11 significant bits (TF32's
  and float16's 10 stored mantissa bits), with no exponent limits."""
  m, e = np.frexp(np.asarray(v, np.float64))  # m in [0.5, 1)
  return np.ldexp(np.round(m * 2.0**11), e - 11)


@settings(max_examples=200, deadline=None)
@given(st.floats(min_value=2.0**-111, max_value=float(np.finfo(np.float32).max), width=32))
def test_pow2_scale_brings_maximum_into_top_binade(m):
  scale, inverse = (float(v) for v in half_dot.pow2_scale(jnp.float32(m)))
  assert 2.0**14 <= scale * m < 2.0**15
  assert scale * inverse == 1.0
  assert np.frexp(scale)[0] == 0.5  # a power of two


@pytest.mark.parametrize("m", [0.0, 1e-38, 2.0**-126, 1e-45])
def test_pow2_scale_of_zero_and_tiny_values_stays_finite(m):
  scale, inverse = (float(v) for v in half_dot.pow2_scale(jnp.float32(m)))
  assert scale == 2.0**126 and inverse == 2.0**-126
  assert scale * m < 2.0**15


@pytest.mark.parametrize("magnitude", [1e-12, 1e-3, 1.0, 1e5, 1e15])
def test_scaled_rows_round_like_tf32(magnitude):
  # Every entry within 2^-28 of its row's largest keeps exactly 11 significant
  # bits, rounded to nearest, whatever the magnitude: float16 alone would
  # overflow at 1e5 and flush 1e-12 to zero.
  rng = np.random.default_rng(0)
  x = (rng.normal(size=(64, 37)) * magnitude).astype(np.float32)
  x[3] *= 1e-6  # a row far smaller than the others keeps its own precision
  x_op, inverse = half_dot.scale_rows(jnp.asarray(x), jnp.float16)
  assert x_op.dtype == jnp.float16
  back = np.asarray(x_op, np.float64) * np.asarray(inverse, np.float64)[:, None]
  big = np.abs(x) >= np.abs(x).max(1, keepdims=True) * 2.0**-28
  np.testing.assert_array_equal(back[big], _round_to_11_significant_bits(x[big]))


def test_scale_matrix_uses_one_scale():
  c = np.array([[1e4, -3.0], [2e-3, 7e3]], np.float32)
  c_op, inverse = half_dot.scale_matrix(jnp.asarray(c), jnp.float16)
  assert inverse.shape == () and np.isfinite(np.asarray(c_op, np.float32)).all()
  np.testing.assert_allclose(np.asarray(c_op, np.float64) * float(inverse), c, rtol=1e-3)


def test_operand_dtype_only_for_float32_and_the_two_presets():
  f16, bf16 = lax.DotAlgorithmPreset.F16_F16_F32, lax.DotAlgorithmPreset.BF16_BF16_F32
  assert half_dot.operand_dtype(jnp.float32, f16) == jnp.float16
  assert half_dot.operand_dtype(jnp.float32, bf16) == jnp.bfloat16
  assert half_dot.operand_dtype(jnp.float16, f16) is None
  assert half_dot.operand_dtype(jnp.float32, lax.Precision.DEFAULT) is None
  assert half_dot.operand_dtype(jnp.float32, lax.DotAlgorithmPreset.TF32_TF32_F32) is None


@pytest.mark.parametrize("precision", cases.HALF_PRECISIONS)
def test_kmeans_with_half_operands_recovers_blobs(precision):
  # Blobs at a scale float16 cannot hold unscaled.
  rng = np.random.default_rng(3)
  x, _, truth = helpers.make_blobs(rng, 3000, 24, 8, spread=1e6, std=5e4)
  res = fk.kmeans(jax.random.key(0), jnp.asarray(x), 8, precision=precision, impl="xla")
  assert adjusted_rand_score(truth, np.asarray(res.labels)) == 1.0
