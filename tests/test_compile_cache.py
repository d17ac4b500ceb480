"""A second call with the same shapes and dtypes must not recompile."""

import jax
import jax.numpy as jnp
import numpy as np

import flashkmeans_jax as fk
from flashkmeans_jax.lloyd import loop


def test_second_call_does_not_recompile():
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(500, 8)), jnp.float32)
  fk.kmeans(jax.random.key(0), x, 5, max_iter=7)
  size = loop.run_compiled._cache_size()
  x2 = jnp.asarray(rng.normal(size=(500, 8)), jnp.float32)  # new values, same shapes
  r = fk.kmeans(jax.random.key(1), x2, 5, max_iter=7)
  assert loop.run_compiled._cache_size() == size
  assert r.labels.shape == (500,)
  # Different shapes do compile a new program, which shows the count is live.
  fk.kmeans(jax.random.key(0), x[:400], 5, max_iter=7)
  assert loop.run_compiled._cache_size() == size + 1
