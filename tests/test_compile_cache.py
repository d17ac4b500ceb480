"""A second call with the same shapes and dtypes must not recompile."""

import contextlib

import jax
import jax.numpy as jnp
import numpy as np

import flashkmeans_jax as fk

# JAX reports every XLA compilation under this monitoring event.
COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"


@contextlib.contextmanager
def count_compiles():
  """Yields a list that gets one entry per XLA compilation inside the block
  (the public monitoring API; other test modules import this helper)."""
  seen = []

  def listener(event, duration, **kwargs):
    del duration, kwargs
    if event == COMPILE_EVENT:
      seen.append(event)

  jax.monitoring.register_event_duration_secs_listener(listener)
  try:
    yield seen
  finally:
    jax.monitoring.unregister_event_duration_listener(listener)


def test_second_call_does_not_recompile():
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(500, 8)), jnp.float32)
  first = fk.kmeans(jax.random.key(0), x, 5, max_iter=7)
  x2 = jnp.asarray(rng.normal(size=(500, 8)), jnp.float32)  # new values, same shapes
  with count_compiles() as compiles:
    r = fk.kmeans(jax.random.key(1), x2, 5, max_iter=7)
    r.labels.block_until_ready()
  assert compiles == []
  # A real run on the new values, not a cached result.
  assert not np.array_equal(np.asarray(r.centroids), np.asarray(first.centroids))
  # Different shapes do compile a new program, which shows the count is live.
  with count_compiles() as compiles:
    fk.kmeans(jax.random.key(0), x[:400], 5, max_iter=7).labels.block_until_ready()
  assert compiles
