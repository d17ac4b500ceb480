"""Warm-started calls (issue 17): the finiteness checks of a device ``x``
and ``init`` ride inside the compiled call, one transfer after it, with the
eager checks' messages and order (``init`` first)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import flashkmeans_jax as fk

X = jnp.asarray(np.random.default_rng(0).normal(size=(64, 3)), jnp.float32)
C0 = X[:4]
KW = dict(max_iter=2, tol=0.0, impl="xla")
INIT_MSG = "init contains NaN or Inf; starting centroids must be finite"


@pytest.mark.parametrize("batched", [False, True])
def test_folded_init_check_raises_the_eager_error(batched):
  bad = C0.at[1, 2].set(jnp.nan)
  x, init, call = ((jnp.stack([X, X]), jnp.stack([C0, bad]), fk.batched_kmeans) if batched
                   else (X, bad, fk.kmeans))
  for check_finite in (True, False):  # an init is checked either way
    with pytest.raises(ValueError, match=INIT_MSG):
      call(jax.random.key(0), x, 4, init=init, check_finite=check_finite, **KW)
  # init before x, as the eager checks order them.
  with pytest.raises(ValueError, match=INIT_MSG):
    call(jax.random.key(0), x.at[..., 0, 0].set(jnp.inf), 4, init=init, **KW)
  # A NumPy init and a closed-over device init are checked too.
  with pytest.raises(ValueError, match=INIT_MSG):
    call(jax.random.key(0), x, 4, init=np.asarray(init), **KW)
  with pytest.raises(ValueError, match=INIT_MSG):
    jax.jit(lambda xx: call(jax.random.key(0), xx, 4, init=init, **KW).inertia)(x)


def test_clean_warm_call_is_unchanged():
  ref = fk.kmeans(jax.random.key(0), X, 4, init=np.asarray(C0), **KW)
  got = fk.kmeans(jax.random.key(0), X, 4, init=C0, **KW)
  for a, b in zip(jax.tree.leaves(ref), jax.tree.leaves(got)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
