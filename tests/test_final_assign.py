"""``final_assign=False`` (issue 17, warm-started short runs): the labels and
inertia are the last iteration's assignment (of the centroids before its
update) and no pass over x follows the loop; the centroids and the loop are
those of the default call. Also the folded ``init`` check of an unchecked
(``check_finite=False``) eager call."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import flashkmeans_jax as fk
from flashkmeans_jax.core import values

RNG = np.random.default_rng(0)
# On the CPU everywhere: XLA's segment sums on a GPU add with atomics, in no
# fixed order, so two calls there need not agree in the last bit, and these
# tests compare whole runs bit for bit. The GPU paths of the same loop:
# tests/test_warm_calls.py and tests/gpu/test_front_ends_gpu.py.
X = jax.device_put(np.asarray(RNG.normal(size=(300, 4)), np.float32), jax.devices("cpu")[0])
K = 6
C0 = X[:K]
KW = dict(tol=0.0, impl="xla")


def _assert_same(a, b):
  for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(np.asarray(u), np.asarray(v))


@pytest.mark.parametrize("batched", [False, True])
def test_labels_are_the_last_iterations(batched):
  if batched:
    x, init = jnp.stack([X, X[::-1]]), jnp.stack([C0, X[-K:]])
    call = fk.batched_kmeans
  else:
    x, init, call = X, C0, fk.kmeans
  key = jax.random.key(0)
  full = call(key, x, K, init=init, max_iter=3, **KW)
  short = call(key, x, K, init=init, max_iter=3, final_assign=False, return_order=True, **KW)
  # The iterations themselves are the default call's.
  np.testing.assert_array_equal(np.asarray(short.centroids), np.asarray(full.centroids))
  np.testing.assert_array_equal(np.asarray(short.n_iter), np.asarray(full.n_iter))
  np.testing.assert_array_equal(np.asarray(short.inertia_history),
                                np.asarray(full.inertia_history))
  # Labels and inertia: those of the centroids after two updates, i.e. what a
  # default two-iteration call returns with its final assignment.
  two = call(key, x, K, init=init, max_iter=2, **KW)
  np.testing.assert_array_equal(np.asarray(short.labels), np.asarray(two.labels))
  np.testing.assert_allclose(np.asarray(short.inertia), np.asarray(two.inertia), rtol=1e-6)
  np.testing.assert_array_equal(np.asarray(short.inertia),
                                np.asarray(short.inertia_history)[..., 2])
  assert not np.array_equal(np.asarray(short.labels), np.asarray(full.labels))
  # The inverse map follows the returned labels.
  labels = np.asarray(short.labels).reshape(-1, X.shape[0])
  order = np.asarray(short.order).reshape(labels.shape)
  for lab, o in zip(labels, order):
    np.testing.assert_array_equal(o, np.argsort(lab, kind="stable"))


def test_fixed_point_and_restarts():
  key = jax.random.key(1)
  # Run to a fixed point: the last iteration's labels are the final ones.
  full = fk.kmeans(key, X, K, init=C0, max_iter=100, **KW)
  assert bool(full.converged)
  _assert_same(fk.kmeans(key, X, K, init=C0, max_iter=100, final_assign=False, **KW), full)
  # Restarts (a vmap over seeds): the same runs, the best by its own inertia.
  r = fk.kmeans(key, X, K, init="k-means++", n_init=3, max_iter=4, final_assign=False, **KW)
  np.testing.assert_array_equal(np.asarray(r.inertia),
                                np.asarray(r.inertia_history)[int(r.n_iter) - 1])


def test_training_sample_still_labels_every_point():
  # With a max_points_per_centroid sample the loop's labels are the sample's:
  # the final pass over all points runs either way.
  key = jax.random.key(2)
  kw = dict(init="random", max_iter=3, max_points_per_centroid=10, **KW)
  _assert_same(fk.kmeans(key, X, K, final_assign=False, **kw), fk.kmeans(key, X, K, **kw))


def test_option_checked_and_refused_where_unsupported():
  with pytest.raises(TypeError, match="final_assign"):
    fk.kmeans(jax.random.key(0), X, K, init=C0, final_assign="no")
  with pytest.raises(TypeError, match="final_assign"):
    fk.batched_kmeans(jax.random.key(0), X[None], K, init=C0, final_assign=None)
  mesh = jax.sharding.Mesh(np.array(jax.devices("cpu")[:2]), ("rows",))
  xs = jax.device_put(X, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("rows")))
  with pytest.raises(ValueError, match="final_assign=False is not supported"):
    fk.kmeans(jax.random.key(0), xs, K, init=C0, final_assign=False)


@pytest.mark.parametrize("final_assign", [True, False])
def test_unchecked_call_folds_the_init_check(monkeypatch, final_assign):
  """With ``check_finite=False`` a device init's check still rides inside the
  compiled call (no eager check of its own); x is not checked."""
  calls = []
  real = values.check_finite

  def counting(a, *args, **kwargs):
    calls.append(a.shape)
    return real(a, *args, **kwargs)

  monkeypatch.setattr(values, "check_finite", counting)
  kw = dict(max_iter=2, check_finite=False, final_assign=final_assign, **KW)
  fk.kmeans(jax.random.key(0), X, K, init=C0, **kw)
  assert calls == []
  # NaN in x: not checked, left out of the updates.
  r = fk.kmeans(jax.random.key(0), X.at[5, 1].set(jnp.nan), K, init=C0, **kw)
  assert calls == [] and np.all(np.isfinite(np.asarray(r.centroids)))
  # A NaN init: the folded flag sends the call to the exact check, which raises.
  with pytest.raises(ValueError, match="init contains NaN or Inf"):
    fk.kmeans(jax.random.key(0), X, K, init=C0.at[2, 0].set(jnp.nan), **kw)
  assert calls == [(K, X.shape[1])]
