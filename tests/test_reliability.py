"""Reliability (#8): bad input gets a clear error, degenerate data never
corrupts a result, and results are reproducible.

Layout, so that other entry points (estimator, streaming, sharded) can add
their rows:

* ``BAD_INPUTS`` is a table of ``Bad(id, call, exc, match)``; ``call`` takes
  the fixture dict ``D`` (a key, points, centroids, labels) and makes one bad
  call; the test checks the exception type and that its message names the
  argument. Extend it with ``BAD_INPUTS += [...]`` in another module and
  parametrise over it the same way.
* ``JIT_SHAPE_ERRORS`` is the subset that must also fire at trace time inside
  ``jax.jit``.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import re
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental import checkify

import flashkmeans_jax as fk
from flashkmeans_jax.api import checked
from flashkmeans_jax.core import validation
from tests import helpers

IMPL = "xla"
# The estimator and CLI rows would switch on the user's persistent compilation
# cache; tests leave it alone (as tests/test_estimator.py does). Without this,
# running this file alone wrote every later compile to ~/.cache and read it
# back on the next run.
os.environ.setdefault("FLASHKMEANS_JAX_NO_COMPILE_CACHE", "1")

# --------------------------------------------------------------------------
# Fixture data shared by the bad-input table.
# --------------------------------------------------------------------------

_rng = np.random.default_rng(0)
_X = jnp.asarray(_rng.normal(size=(20, 3)).astype(np.float32))
D: dict[str, Any] = dict(
    key=jax.random.key(0),
    x=_X,
    xb=jnp.stack([_X, _X + 1.0]),  # [B=2, N=20, D=3]
    c=_X[:4],
    labels=jnp.arange(20, dtype=jnp.int32) % 4,
    w=jnp.ones((20,), jnp.float32),
)


@dataclasses.dataclass(frozen=True)
class Bad:
  id: str
  call: Callable[[dict], Any]
  exc: type[Exception]
  match: str  # regex the message must contain (names the argument)


def _km(x=None, k=3, **kw):
  kw = {"impl": IMPL, "max_iter": 2, **kw}
  return lambda d: fk.kmeans(d["key"], d["x"] if x is None else x, k, **kw)


def _bkm(x=None, k=3, **kw):
  kw = {"impl": IMPL, "max_iter": 2, **kw}
  return lambda d: fk.batched_kmeans(d["key"], d["xb"] if x is None else x, k, **kw)


BAD_INPUTS: list[Bad] = [
    # ---- assign
    Bad("assign/x-rank1", lambda d: fk.assign(d["x"][0], d["c"]), ValueError, r"x must have rank 2"),
    Bad("assign/x-rank3", lambda d: fk.assign(d["xb"], d["c"]), ValueError, r"x must have rank 2"),
    Bad("assign/x-list", lambda d: fk.assign([[1.0, 2.0]], d["c"]), TypeError, r"x must be an array"),
    Bad("assign/x-int", lambda d: fk.assign(d["x"].astype(jnp.int32), d["c"]), TypeError, r"x must be float.*integer"),
    Bad("assign/x-complex", lambda d: fk.assign(d["x"].astype(jnp.complex64), d["c"]), TypeError, r"x must be float.*complex"),
    Bad("assign/x-bool", lambda d: fk.assign(d["x"] > 0, d["c"]), TypeError, r"x must be float"),
    Bad("assign/x-empty", lambda d: fk.assign(d["x"][:0], d["c"]), ValueError, r"x must not have an empty axis"),
    Bad("assign/c-D-mismatch", lambda d: fk.assign(d["x"], d["c"][:, :2]), ValueError, r"centroids must have D=3.*\(4, 2\)"),
    Bad("assign/c-rank1", lambda d: fk.assign(d["x"], d["c"][0]), ValueError, r"centroids must have rank 2"),
    Bad("assign/c-int", lambda d: fk.assign(d["x"], d["c"].astype(jnp.int32)), TypeError, r"centroids must be float"),
    Bad("assign/metric", lambda d: fk.assign(d["x"], d["c"], metric="l1"), ValueError, r"metric must be one of.*'l1'"),
    Bad("assign/impl", lambda d: fk.assign(d["x"], d["c"], impl="cuda"), ValueError, r"impl must be one of.*'cuda'"),
    Bad("assign/precision", lambda d: fk.assign(d["x"], d["c"], precision="ultra"), ValueError, r"precision must be.*'ultra'"),
    Bad("assign/precision-int", lambda d: fk.assign(d["x"], d["c"], precision=3), ValueError, r"precision must be"),
    # ---- update
    Bad("update/labels-shape", lambda d: fk.update(d["x"], d["labels"][:5], d["c"]), ValueError, r"labels must have shape \(20,\).*\(5,\)"),
    Bad("update/labels-2d", lambda d: fk.update(d["x"], d["labels"][None], d["c"]), ValueError, r"labels must have shape"),
    Bad("update/labels-float", lambda d: fk.update(d["x"], d["labels"].astype(jnp.float32), d["c"]), TypeError, r"labels must be an integer"),
    Bad("update/labels-range", lambda d: fk.update(d["x"], d["labels"].at[0].set(9), d["c"]), ValueError, r"labels must lie in \[0, k=4\)"),
    Bad("update/labels-negative", lambda d: fk.update(d["x"], d["labels"].at[0].set(-1), 4), ValueError, r"labels must lie in"),
    Bad("update/k-zero", lambda d: fk.update(d["x"], d["labels"], 0), ValueError, r"centroids_or_k must be >= 1"),
    Bad("update/k-float", lambda d: fk.update(d["x"], d["labels"], 4.0), TypeError, r"centroids_or_k must be a Python int"),
    Bad("update/c-D-mismatch", lambda d: fk.update(d["x"], d["labels"], d["c"][:, :2]), ValueError, r"centroids_or_k must have D=3"),
    Bad("update/x-int", lambda d: fk.update(d["x"].astype(jnp.int32), d["labels"], 4), TypeError, r"x must be float"),
    Bad("update/weights-shape", lambda d: fk.update(d["x"], d["labels"], 4, weights=d["w"][:3]), ValueError, r"weights must have shape \(20,\)"),
    Bad("update/weights-negative", lambda d: fk.update(d["x"], d["labels"], 4, weights=-d["w"]), ValueError, r"weights must be >= 0"),
    Bad("update/weights-nan", lambda d: fk.update(d["x"], d["labels"], 4, weights=d["w"].at[2].set(jnp.nan)), ValueError, r"weights must be finite"),
    Bad("update/weights-int", lambda d: fk.update(d["x"], d["labels"], 4, weights=jnp.ones(20, jnp.int32)), TypeError, r"weights must be a float"),
    Bad("update/metric", lambda d: fk.update(d["x"], d["labels"], 4, metric="l2"), ValueError, r"metric must be one of"),
    Bad("update/empty", lambda d: fk.update(d["x"], d["labels"], 4, empty="drop"), ValueError, r"empty must be one of.*'drop'"),
    Bad("update/farthest-no-dist", lambda d: fk.update(d["x"], d["labels"], d["c"], empty="farthest"), ValueError, r"farthest.*needs.*dist"),
    Bad("update/dist-shape", lambda d: fk.update(d["x"], d["labels"], d["c"], empty="farthest", dist=jnp.zeros(3)), ValueError, r"dist must have shape \(20,\)"),
    Bad("update/impl", lambda d: fk.update(d["x"], d["labels"], 4, impl="triton"), ValueError, r"impl must be one of"),
    # ---- cluster_sums
    Bad("cluster_sums/x-rank", lambda d: fk.cluster_sums(d["x"][0], d["labels"], 4), ValueError, r"x must have rank 2"),
    Bad("cluster_sums/labels-shape", lambda d: fk.cluster_sums(d["x"], d["labels"][:3], 4), ValueError, r"labels must have shape \(20,\)"),
    Bad("cluster_sums/labels-range", lambda d: fk.cluster_sums(d["x"], d["labels"], 2), ValueError, r"labels must lie in \[0, k=2\)"),
    Bad("cluster_sums/k-zero", lambda d: fk.cluster_sums(d["x"], d["labels"], 0), ValueError, r"k must be >= 1"),
    Bad("cluster_sums/k-array", lambda d: fk.cluster_sums(d["x"], d["labels"], jnp.int32(4)), TypeError, r"k must be a Python int"),
    Bad("cluster_sums/weights-shape", lambda d: fk.cluster_sums(d["x"], d["labels"], 4, weights=d["w"][:3]), ValueError, r"weights must have shape"),
    Bad("cluster_sums/impl", lambda d: fk.cluster_sums(d["x"], d["labels"], 4, impl="gpu"), ValueError, r"impl must be one of"),
    # ---- finalize_centroids
    Bad("finalize/counts-shape", lambda d: fk.finalize_centroids(jnp.zeros((4, 3)), jnp.ones(5), None), ValueError, r"counts must have shape \(4,\)"),
    Bad("finalize/sums-rank", lambda d: fk.finalize_centroids(jnp.zeros(4), jnp.ones(4), None), ValueError, r"sums must have rank 2"),
    Bad("finalize/previous-shape", lambda d: fk.finalize_centroids(jnp.zeros((4, 3)), jnp.ones(4), jnp.zeros((5, 3))), ValueError, r"previous must have k=4 rows"),
    Bad("finalize/metric", lambda d: fk.finalize_centroids(jnp.zeros((4, 3)), jnp.ones(4), None, metric="l1"), ValueError, r"metric must be one of"),
    Bad("finalize/empty", lambda d: fk.finalize_centroids(jnp.zeros((4, 3)), jnp.ones(4), None, empty="drop"), ValueError, r"empty must be one of"),
    Bad("finalize/farthest-no-x", lambda d: fk.finalize_centroids(jnp.zeros((4, 3)), jnp.ones(4), None, empty="farthest"), ValueError, r"farthest.*needs x, labels and dist"),
    # ---- seeding
    Bad("init_random/k>N", lambda d: fk.init_random(d["key"], d["x"], 21), ValueError, r"k=21 exceeds the number of points N=20"),
    Bad("init_random/k-zero", lambda d: fk.init_random(d["key"], d["x"], 0), ValueError, r"k must be >= 1"),
    Bad("init_random/x-int", lambda d: fk.init_random(d["key"], d["x"].astype(jnp.int32), 3), TypeError, r"x must be float"),
    Bad("init_random/key", lambda d: fk.init_random(0, d["x"], 3), TypeError, r"key must be a jax.random key"),
    Bad("init_random/weights-negative", lambda d: fk.init_random(d["key"], d["x"], 3, -d["w"]), ValueError, r"weights must be >= 0"),
    Bad("init_kmeans_plusplus/k>N", lambda d: fk.init_kmeans_plusplus(d["key"], d["x"], 21), ValueError, r"k=21 exceeds"),
    Bad("init_kmeans_plusplus/k-zero", lambda d: fk.init_kmeans_plusplus(d["key"], d["x"], 0), ValueError, r"k must be >= 1"),
    Bad("init_kmeans_plusplus/x-rank", lambda d: fk.init_kmeans_plusplus(d["key"], d["x"][0], 3), ValueError, r"x must have rank 2"),
    Bad("init_kmeans_plusplus/metric", lambda d: fk.init_kmeans_plusplus(d["key"], d["x"], 3, metric="l1"), ValueError, r"metric must be one of"),
    Bad("init_kmeans_plusplus/trials", lambda d: fk.init_kmeans_plusplus(d["key"], d["x"], 3, n_local_trials=0), ValueError, r"n_local_trials must be >= 1"),
    Bad("init_kmeans_plusplus/weights-shape", lambda d: fk.init_kmeans_plusplus(d["key"], d["x"], 3, d["w"][:2]), ValueError, r"weights must have shape"),
    # ---- kmeans
    Bad("kmeans/x-rank", _km(x=_X[0]), ValueError, r"x must have rank 2"),
    Bad("kmeans/x-int", _km(x=_X.astype(jnp.int32)), TypeError, r"x must be float.*integer"),
    Bad("kmeans/x-complex", _km(x=_X.astype(jnp.complex64)), TypeError, r"x must be float.*complex"),
    Bad("kmeans/x-numpy-int", _km(x=np.ones((20, 3), np.int64)), TypeError, r"x must be float"),
    Bad("kmeans/k-zero", _km(k=0), ValueError, r"k must be >= 1, got 0"),
    Bad("kmeans/k-negative", _km(k=-2), ValueError, r"k must be >= 1"),
    Bad("kmeans/k>N", _km(k=21), ValueError, r"k=21 exceeds the number of points N=20"),
    Bad("kmeans/k-float", _km(k=3.0), TypeError, r"k must be a Python int.*3\.0"),
    Bad("kmeans/k-bool", _km(k=True), TypeError, r"k must be a Python int"),
    Bad("kmeans/k-array", _km(k=jnp.int32(3)), TypeError, r"k must be a Python int"),
    Bad("kmeans/init-name", _km(init="kmeans++"), ValueError, r"init must be one of.*'kmeans\+\+'"),
    Bad("kmeans/init-list", _km(init=[[0.0] * 3] * 3), TypeError, r"init must be"),
    Bad("kmeans/init-D", _km(init=_X[:3, :2]), ValueError, r"init must have D=3"),
    Bad("kmeans/init-k", _km(init=_X[:4]), ValueError, r"init must have k=3 rows"),
    Bad("kmeans/init-rank3", _km(init=_X[None, :3]), ValueError, r"init must have rank 2"),
    Bad("kmeans/init-int", _km(init=_X[:3].astype(jnp.int32)), TypeError, r"init must be float"),
    Bad("kmeans/init-nan", _km(init=_X[:3].at[0, 0].set(jnp.nan)), ValueError, r"init contains NaN"),
    Bad("kmeans/metric", _km(metric="euclidean"), ValueError, r"metric must be one of.*'euclidean'"),
    Bad("kmeans/impl", _km(impl="cuda"), ValueError, r"impl must be one of.*'cuda'"),
    Bad("kmeans/empty", _km(empty="drop"), ValueError, r"empty must be one of"),
    Bad("kmeans/max_iter-zero", _km(max_iter=0), ValueError, r"max_iter must be >= 1, got 0"),
    Bad("kmeans/max_iter-float", _km(max_iter=10.0), TypeError, r"max_iter must be an int"),
    Bad("kmeans/tol-negative", _km(tol=-1e-3), ValueError, r"tol must be a finite number >= 0"),
    Bad("kmeans/tol-nan", _km(tol=float("nan")), ValueError, r"tol must be a finite number"),
    Bad("kmeans/tol-str", _km(tol="1e-4"), TypeError, r"tol must be a float"),
    Bad("kmeans/n_init-zero", _km(n_init=0), ValueError, r"n_init must be >= 1"),
    Bad("kmeans/precision", _km(precision="best"), ValueError, r"precision must be"),
    Bad("kmeans/weights-shape", _km(weights=jnp.ones(19)), ValueError, r"weights must have shape \(20,\).*\(19,\)"),
    Bad("kmeans/weights-negative", _km(weights=jnp.ones(20).at[3].set(-1.0)), ValueError, r"weights must be >= 0, got minimum -1"),
    Bad("kmeans/weights-inf", _km(weights=jnp.ones(20).at[3].set(jnp.inf)), ValueError, r"weights must be finite"),
    Bad("kmeans/weights-nan", _km(weights=jnp.ones(20).at[3].set(jnp.nan)), ValueError, r"weights must be finite"),
    Bad("kmeans/weights-zero-sum", _km(weights=jnp.zeros(20)), ValueError, r"weights must have a positive sum"),
    Bad("kmeans/weights-int", _km(weights=jnp.ones(20, jnp.int32)), TypeError, r"weights must be a float"),
    Bad("kmeans/x-nan", _km(x=_X.at[1, 1].set(jnp.nan)), ValueError, r"x contains NaN or Inf.*check_finite=False"),
    Bad("kmeans/x-inf", _km(x=_X.at[1, 1].set(-jnp.inf)), ValueError, r"x contains NaN or Inf"),
    Bad("kmeans/x-nan-numpy", _km(x=np.asarray(_X.at[1, 1].set(jnp.nan))), ValueError, r"x contains NaN or Inf"),
    Bad("kmeans/x-float64-overflow", _km(x=np.full((20, 3), 1e39)), ValueError, r"x holds values beyond float32's largest finite magnitude"),
    # Finite float32 rows whose squared norms overflow the float32 distances
    # (|x| ~ 1e20: NaN scores, then labels from NaN) -- device and host data.
    Bad("kmeans/x-norm-overflow", _km(x=_X * 1e20), ValueError, r"x holds rows whose squared norm \(inf\) overflows the float32 distances"),
    Bad("kmeans/x-norm-overflow-numpy", _km(x=np.asarray(_X) * np.float32(1e20)), ValueError, r"x holds rows whose squared norm \(.*e\+4\d\) overflows"),
    Bad("assign/centroids-norm-overflow", lambda d: fk.assign(d["x"], d["x"][:3] * 1e20), ValueError, r"centroids holds rows whose squared norm"),
    Bad("kmeans/key-none", lambda d: fk.kmeans(None, d["x"], 3), TypeError, r"key must be a jax.random key"),
    Bad("kmeans/key-int", lambda d: fk.kmeans(0, d["x"], 3), TypeError, r"key must be a jax.random key"),
    Bad("kmeans/key-split", lambda d: fk.kmeans(jax.random.split(d["key"], 2), d["x"], 3), ValueError, r"key must be a single key"),
    Bad("kmeans/key-float", lambda d: fk.kmeans(jnp.zeros(2), d["x"], 3), TypeError, r"key must be a jax.random key"),
    # ---- batched_kmeans
    Bad("batched/x-rank2", _bkm(x=_X), ValueError, r"x must have rank 3 \(\[B, N, D\]\)"),
    Bad("batched/k>N", _bkm(k=21), ValueError, r"k=21 exceeds"),
    Bad("batched/weights-batch", _bkm(weights=jnp.ones((3, 20))), ValueError, r"weights must have shape \(2, 20\).*\(3, 20\)"),
    Bad("batched/weights-unbatched", _bkm(weights=jnp.ones(20)), ValueError, r"weights must have shape \(2, 20\)"),
    Bad("batched/weights-member-zero", _bkm(weights=jnp.ones((2, 20)).at[1].set(0.0)), ValueError, r"positive sum.*member\(s\) \[1\]"),
    Bad("batched/init-batch", _bkm(init=jnp.stack([_X[:3]] * 3)), ValueError, r"init batch axes \(3,\) do not match x's \(2,\)"),
    Bad("batched/init-rank1", _bkm(init=_X[0]), ValueError, r"init must have shape \[k, D\] \(shared\) or \[B, k, D\]"),
    Bad("batched/init-k", _bkm(init=jnp.stack([_X[:4]] * 2)), ValueError, r"init must have k=3 rows"),
    Bad("batched/x-nan", _bkm(x=jnp.stack([_X, _X.at[0, 0].set(jnp.nan)])), ValueError, r"x contains NaN"),
    Bad("batched/key-split", lambda d: fk.batched_kmeans(jax.random.split(d["key"], 2), d["xb"], 3), ValueError, r"key must be a single key"),
]


@pytest.mark.parametrize("case", BAD_INPUTS, ids=[b.id for b in BAD_INPUTS])
def test_bad_input_raises_clear_error(case):
  with pytest.raises(case.exc, match=case.match):
    case.call(D)


def test_bad_input_ids_unique():
  ids = [b.id for b in BAD_INPUTS]
  assert len(ids) == len(set(ids))


# Shape errors must fire while tracing, i.e. also inside jax.jit.
JIT_SHAPE_ERRORS: list[Bad] = [
    Bad("jit/assign-D", lambda d: jax.jit(fk.assign)(d["x"], d["c"][:, :2]), ValueError, r"centroids must have D=3"),
    Bad("jit/assign-rank", lambda d: jax.jit(fk.assign)(d["x"][0], d["c"]), ValueError, r"x must have rank 2"),
    Bad("jit/assign-int", lambda d: jax.jit(fk.assign)(d["x"].astype(jnp.int32), d["c"]), TypeError, r"x must be float"),
    Bad("jit/update-labels", lambda d: jax.jit(fk.update, static_argnums=2)(d["x"], d["labels"][:3], 4), ValueError, r"labels must have shape"),
    Bad("jit/update-weights", lambda d: jax.jit(lambda x, l, w: fk.update(x, l, 4, weights=w))(d["x"], d["labels"], d["w"][:2]), ValueError, r"weights must have shape"),
    Bad("jit/cluster_sums-labels", lambda d: jax.jit(fk.cluster_sums, static_argnums=2)(d["x"], d["labels"][:3], 4), ValueError, r"labels must have shape"),
    Bad("jit/kmeans-k>N", lambda d: jax.jit(lambda key, x: fk.kmeans(key, x, 21))(d["key"], d["x"]), ValueError, r"k=21 exceeds"),
    Bad("jit/kmeans-init-D", lambda d: jax.jit(lambda key, x, c: fk.kmeans(key, x, 3, init=c))(d["key"], d["x"], d["c"][:3, :2]), ValueError, r"init must have D=3"),
    Bad("jit/kmeans-weights", lambda d: jax.jit(lambda key, x, w: fk.kmeans(key, x, 3, weights=w))(d["key"], d["x"], d["w"][:5]), ValueError, r"weights must have shape"),
    Bad("jit/batched-init", lambda d: jax.jit(lambda key, x, c: fk.batched_kmeans(key, x, 3, init=c))(d["key"], d["xb"], jnp.stack([d["c"][:3]] * 3)), ValueError, r"init batch axes"),
    Bad("jit/init_random-k>N", lambda d: jax.jit(lambda key, x: fk.init_random(key, x, 30))(d["key"], d["x"]), ValueError, r"k=30 exceeds"),
    Bad("jit/kmeans-key", lambda d: jax.jit(lambda key, x: fk.kmeans(key, x, 3))(jax.random.split(d["key"], 2), d["x"]), ValueError, r"key must be a single key"),
]


@pytest.mark.parametrize("case", JIT_SHAPE_ERRORS, ids=[b.id for b in JIT_SHAPE_ERRORS])
def test_shape_errors_fire_at_trace_time(case):
  with pytest.raises(case.exc, match=case.match):
    case.call(D)


def test_concrete_values_checked_when_closed_over_by_jit():
  """A concrete array closed over by a traced function is still value-checked
  (used to crash with TracerBoolConversionError)."""
  x_nan = D["x"].at[0, 0].set(jnp.nan)
  with pytest.raises(ValueError, match="x contains NaN"):
    jax.jit(lambda key: fk.kmeans(key, x_nan, 3, max_iter=2))(D["key"])
  bad_labels = D["labels"].at[0].set(7)
  with pytest.raises(ValueError, match="labels must lie in"):
    jax.jit(lambda x: fk.update(x, bad_labels, 4))(D["x"])
  # ...and clean closed-over data runs.
  res = jax.jit(lambda key: fk.kmeans(key, D["x"], 3, max_iter=2))(D["key"])
  assert np.isfinite(np.asarray(res.centroids)).all()


# --------------------------------------------------------------------------
# One bad argument, every entry point that takes it: the same exception and
# the same message. An entry point may call the argument by its own name
# (KMeans: ``n_clusters``, ``X``, ``sample_weight``; streaming: ``host_x``;
# update: ``centroids_or_k``; the CLI: the input file's path), which the
# comparison maps back; the front ends (KMeans, the CLI) may add advice after
# a ";", so for them the part before it must match. An entry point that
# cannot take the argument (the CLI has no weights, KMeans no ``empty``, the
# batched call expects other shapes) has no cell in that row.
# --------------------------------------------------------------------------

_XN = np.asarray(_X)  # host copy for the streaming and sharded calls
_NEG_W = jnp.ones(20).at[3].set(-1.0)
_NAN_W = jnp.ones(20).at[3].set(jnp.nan)
_NAN_C = _X[:3].at[0, 0].set(jnp.nan)
_RAW_KEY3 = jnp.zeros((3,), jnp.uint32)
_CLI_FILES = iter(range(10 ** 6))


def _merge(defaults, kw):
  return {**defaults, **kw}


def e_assign(x=_X, c=_X[:4], **kw):
  return fk.assign(x, c, **_merge(dict(impl=IMPL), kw))


def e_update(x=_X, k=4, **kw):
  return fk.update(x, jnp.zeros(x.shape[:1], jnp.int32) if x.ndim == 2 and x.shape[0] else
                   D["labels"], k, **_merge(dict(impl=IMPL), kw))


def e_cluster_sums(x=_X, k=4, **kw):
  return fk.cluster_sums(x, jnp.zeros(x.shape[:1], jnp.int32) if x.ndim == 2 and x.shape[0]
                         else D["labels"], k, **_merge(dict(impl=IMPL), kw))


def e_finalize(**kw):
  return fk.finalize_centroids(jnp.zeros((4, 3)), jnp.ones(4), None, **kw)


def e_init_random(key=D["key"], x=_X, k=3, **kw):
  return fk.init_random(key, x, k, **kw)


def e_init_pp(key=D["key"], x=_X, k=3, **kw):
  return fk.init_kmeans_plusplus(key, x, k, **kw)


def e_kmeans(key=D["key"], x=_X, k=3, **kw):
  return fk.kmeans(key, x, k, **_merge(dict(impl=IMPL, max_iter=2), kw))


def e_batched(key=D["key"], x=D["xb"], k=3, **kw):
  return fk.batched_kmeans(key, x, k, **_merge(dict(impl=IMPL, max_iter=2), kw))


def e_streaming(key=D["key"], x=_XN, k=3, **kw):
  if isinstance(kw.get("weights"), jax.Array):  # streamed weights live on the host
    kw["weights"] = np.asarray(kw["weights"])
  return fk.kmeans_streaming(key, np.asarray(x), k,
                             **_merge(dict(impl=IMPL, max_iter=2, chunk_size=8), kw))


def e_sharded_kmeans(key=D["key"], x=_XN, k=3, **kw):
  return fk.sharded_kmeans(key, x, k, **_merge(dict(impl=IMPL, max_iter=2), kw))


def e_sharded_update(x=_XN, k=4, **kw):
  labels = np.zeros(x.shape[:1], np.int32) if x.ndim == 2 else np.asarray(D["labels"])
  return fk.sharded_update(x, labels, k, **_merge(dict(impl=IMPL), kw))


def e_sharded_assign(x=_XN, c=_XN[:4], **kw):
  return fk.sharded_assign(x, c, **_merge(dict(impl=IMPL), kw))


def e_sharded_pp(key=D["key"], x=_XN, k=3, **kw):
  return fk.sharded_init_kmeans_plusplus(key, x, k, **kw)


def e_estimator(x=_X, k=3, sample_weight=None, **params):
  params = _merge(dict(impl=IMPL, max_iter=2, random_state=0), params)
  return fk.KMeans(n_clusters=k, **params).fit(x, sample_weight=sample_weight)


def e_estimator_streaming(x=_X, k=3, sample_weight=None, **params):
  return e_estimator(x, k, sample_weight, **_merge(dict(chunk_size=8), params))


def e_cli(tmp, x=_XN, k=3, init=None, extra=()):
  from flashkmeans_jax import cli
  path = tmp / f"x{next(_CLI_FILES)}.npy"
  np.save(path, np.asarray(x))
  args = [str(path), "-k", str(k), "--impl", IMPL, "--max-iter", "2", "--quiet", "--debug",
          *extra]
  if init is not None:
    np.save(tmp / "init.npy", np.asarray(init))
    args += ["--init", str(tmp / "init.npy")]
  return cli.main(args)


# Names the entry points give the arguments, mapped to kmeans' names.
ALIASES = {"X": "x", "host_x": "x", "n_clusters": "k", "n_samples": "N",
           "sample_weight": "weights", "centroids_or_k": "k"}
FRONT_ENDS = ("KMeans", "KMeans(chunk_size)", "cli")


def _estimator_cells(**params):
  return {"KMeans": lambda t: e_estimator(**params),
          "KMeans(chunk_size)": lambda t: e_estimator_streaming(**params)}


def _cells(entries, **kw):
  """The same override for several entry points (by function)."""
  return {name: (lambda t, f=f: f(**kw)) for name, f in entries.items()}


def e_topk(x=_X, c=_X[:4], k=2, **kw):
  return fk.assign_topk(x, c, k, **_merge(dict(impl=IMPL), kw))


def e_balanced(key=D["key"], x=_X, k=3, **kw):
  return fk.balanced_kmeans(key, x, k, **_merge(dict(impl=IMPL, max_iter=2), kw))


def e_hierarchical(key=D["key"], x=_X, k=3, **kw):
  return fk.hierarchical_kmeans(key, x, k, **_merge(dict(impl=IMPL, max_iter=2), kw))


# The entry points of issue 21 (top-k, balanced, two-level) in the same rows.
NEW_LLOYD = dict(balanced_kmeans=e_balanced, hierarchical_kmeans=e_hierarchical)
X_TAKERS = dict(assign=e_assign, update=e_update, cluster_sums=e_cluster_sums,
                init_random=e_init_random, init_kmeans_plusplus=e_init_pp, kmeans=e_kmeans,
                kmeans_streaming=e_streaming, sharded_kmeans=e_sharded_kmeans,
                sharded_update=e_sharded_update, sharded_assign=e_sharded_assign,
                sharded_init_kmeans_plusplus=e_sharded_pp, assign_topk=e_topk, **NEW_LLOYD)
K_TAKERS = dict(update=e_update, cluster_sums=e_cluster_sums, init_random=e_init_random,
                init_kmeans_plusplus=e_init_pp, kmeans=e_kmeans, batched_kmeans=e_batched,
                kmeans_streaming=e_streaming, sharded_kmeans=e_sharded_kmeans,
                sharded_update=e_sharded_update, sharded_init_kmeans_plusplus=e_sharded_pp,
                assign_topk=e_topk, **NEW_LLOYD)
# k > N is fine for the sums; assign_topk's k is bounded by the centroids.
N_K_TAKERS = {n: f for n, f in K_TAKERS.items()
              if n not in ("update", "cluster_sums", "sharded_update", "assign_topk")}
LLOYD = dict(kmeans=e_kmeans, batched_kmeans=e_batched, kmeans_streaming=e_streaming,
             sharded_kmeans=e_sharded_kmeans)
WEIGHT_TAKERS = dict(update=e_update, cluster_sums=e_cluster_sums, init_random=e_init_random,
                     init_kmeans_plusplus=e_init_pp, kmeans=e_kmeans,
                     kmeans_streaming=e_streaming, sharded_kmeans=e_sharded_kmeans,
                     sharded_update=e_sharded_update, sharded_init_kmeans_plusplus=e_sharded_pp,
                     **NEW_LLOYD)
METRIC_TAKERS = dict(assign=e_assign, update=e_update, finalize_centroids=e_finalize,
                     init_kmeans_plusplus=e_init_pp, **LLOYD, sharded_update=e_sharded_update,
                     sharded_assign=e_sharded_assign, sharded_init_kmeans_plusplus=e_sharded_pp,
                     assign_topk=e_topk, **NEW_LLOYD)
IMPL_TAKERS = dict(assign=e_assign, update=e_update, cluster_sums=e_cluster_sums, **LLOYD,
                   sharded_update=e_sharded_update, sharded_assign=e_sharded_assign,
                   assign_topk=e_topk, **NEW_LLOYD)
KEY_TAKERS = dict(init_random=e_init_random, init_kmeans_plusplus=e_init_pp, **LLOYD,
                  sharded_init_kmeans_plusplus=e_sharded_pp, **NEW_LLOYD)


def _weights_row(w, batched=True):
  cells = {n: (lambda t, f=f: f(weights=w)) for n, f in WEIGHT_TAKERS.items()}
  if batched:
    cells["batched_kmeans"] = lambda t: e_batched(weights=jnp.stack([w, jnp.ones_like(w)]))
  cells.update(_estimator_cells(sample_weight=np.asarray(w)))
  return cells


def _init_row(init):
  # hierarchical_kmeans seeds by name only (its levels are seeded apart).
  cells = {n: (lambda t, f=f: f(init=init)) for n, f in {**LLOYD, **{
      "balanced_kmeans": e_balanced}}.items()}
  cells.update(_estimator_cells(init=np.asarray(init)))
  cells["KMeans(callable init)"] = lambda t: e_estimator(init=lambda x, k, rs: np.asarray(init))
  cells["cli"] = lambda t: e_cli(t, init=init)
  return cells


def _options_row(flag, value, **kw):
  cells = _cells({**LLOYD, **NEW_LLOYD}, **kw)
  cells.update(_estimator_cells(**kw))
  cells["cli"] = lambda t: e_cli(t, extra=[f"{flag}={value}"])
  return cells


@dataclasses.dataclass(frozen=True)
class SameError:
  id: str
  exc: type[Exception]
  message: str  # kmeans' message, in kmeans' names (the first ";" part for front ends)
  cells: dict[str, Callable[[Any], Any]]
  aliases: dict[str, str] = dataclasses.field(default_factory=dict)  # added to ALIASES


SAME_ERRORS: list[SameError] = [
    SameError("x-rank", ValueError, "x must have rank 2 ([N, D]), got shape (3,)", {
        **_cells(X_TAKERS, x=_XN[0]), **_estimator_cells(x=_X[0]),
        "cli": lambda t: e_cli(t, x=_XN[0])}),
    SameError("x-integer", TypeError,
              "x must be float16, bfloat16, float32 or float64, got integer dtype int32; "
              "convert explicitly (e.g. x.astype(jnp.float32), or use the real part / stack "
              "real and imaginary parts for complex data)", {
                  **_cells(X_TAKERS, x=_XN.astype(np.int32)),
                  "batched_kmeans": lambda t: e_batched(x=D["xb"].astype(jnp.int32))}),
    SameError("x-empty-axis", ValueError, "x must not have an empty axis, got shape (0, 3)", {
        **_cells(X_TAKERS, x=_XN[:0]), **_estimator_cells(x=_X[:0]),
        "cli": lambda t: e_cli(t, x=_XN[:0])}),
    SameError("x-nan", ValueError,
              "x contains NaN or Inf; clean the data or pass check_finite=False (non-finite "
              "points then get label 0 and distance NaN and are left out of the centroid "
              "update)", {
                  **_cells({n: f for n, f in X_TAKERS.items() if n in (
                      "assign", "update", "kmeans", "sharded_kmeans", "sharded_update",
                      "sharded_assign", "kmeans_streaming", "assign_topk", "balanced_kmeans",
                      "hierarchical_kmeans")}, x=np.where(np.arange(60).reshape(20, 3) == 7, np.nan,
                                                     _XN).astype(np.float32)),
                  "batched_kmeans": lambda t: e_batched(x=D["xb"].at[1, 2, 0].set(jnp.nan)),
                  **_estimator_cells(x=_X.at[2, 0].set(jnp.nan)),
                  "cli": lambda t: e_cli(t, x=np.where(np.arange(60).reshape(20, 3) == 7,
                                                       np.nan, _XN).astype(np.float32))}),
    SameError("k-zero", ValueError, "k must be >= 1, got 0", {
        **_cells(K_TAKERS, k=0), **_estimator_cells(k=0), "cli": lambda t: e_cli(t, k=0)}),
    SameError("k-above-N", ValueError, "k=21 exceeds the number of points N=20", {
        **_cells(N_K_TAKERS, k=21), **_estimator_cells(k=21), "cli": lambda t: e_cli(t, k=21)}),
    SameError("k-float", TypeError, "k must be a Python int, got float (3.0)", {
        **_cells(K_TAKERS, k=3.0), **_estimator_cells(k=3.0)}),
    SameError("metric", ValueError,
              "metric must be one of ('sqeuclidean', 'cosine', 'dot'), got 'l1'", {
                  **_cells(METRIC_TAKERS, metric="l1"), **_estimator_cells(metric="l1")}),
    SameError("impl", ValueError,
              "impl must be one of ('auto', 'xla', 'pallas', 'pallas_interpret'), got 'cuda'", {
                  **_cells(IMPL_TAKERS, impl="cuda"), **_estimator_cells(impl="cuda")}),
    SameError("empty", ValueError, "empty must be one of ('keep', 'farthest'), got 'drop'",
              _cells(dict(update=e_update, finalize_centroids=e_finalize, **LLOYD,
                          sharded_update=e_sharded_update), empty="drop")),
    SameError("weights-negative", ValueError, "weights must be >= 0, got minimum -1.0",
              _weights_row(_NEG_W)),
    SameError("weights-nan", ValueError, "weights must be finite, got 1 NaN or Inf value(s)",
              _weights_row(_NAN_W)),
    SameError("weights-all-zero", ValueError,
              "weights must have a positive sum; all weights are zero", {
                  **_cells({n: f for n, f in {**LLOYD, **NEW_LLOYD}.items()
                            if n != "batched_kmeans"}, weights=jnp.zeros(20)),
                  **_estimator_cells(sample_weight=np.zeros(20))}),
    SameError("weights-shape", ValueError,
              "weights must have shape (20,) (one per point), got (19,)", {
                  **{n: (lambda t, f=f: f(weights=jnp.ones(19)))
                     for n, f in WEIGHT_TAKERS.items()},
                  **_estimator_cells(sample_weight=np.ones(19))}),
    SameError("init-nan", ValueError,
              "init contains NaN or Inf; starting centroids must be finite", _init_row(_NAN_C)),
    # KMeans words a wrong number of features as scikit-learn does (its own
    # estimator checks assert that message; tests/test_estimator.py checks it).
    SameError("init-D", ValueError, "init must have D=3 columns like x, got shape (3, 2)",
              {n: f for n, f in _init_row(_X[:3, :2]).items() if not n.startswith("KMeans")}),
    SameError("init-k", ValueError, "init must have k=3 rows, got shape (4, 3)",
              _init_row(_X[:4])),
    SameError("centroids-nan", ValueError,
              "centroids contains NaN or Inf; centroids must be finite", {
                  "assign": lambda t: e_assign(c=_NAN_C),
                  "assign_topk": lambda t: e_topk(c=_NAN_C),
                  "sharded_assign": lambda t: e_sharded_assign(c=np.asarray(_NAN_C)),
                  "update": lambda t: e_update(k=_NAN_C, weights=None),
                  "sharded_update": lambda t: e_sharded_update(k=np.asarray(_NAN_C))},
              aliases={"centroids_or_k": "centroids"}),
    SameError("max_iter-zero", ValueError, "max_iter must be >= 1, got 0",
              _options_row("--max-iter", 0, max_iter=0)),
    SameError("tol-negative", ValueError, "tol must be a finite number >= 0, got -0.001",
              _options_row("--tol", -0.001, tol=-0.001)),
    SameError("key-int", TypeError,
              "key must be a jax.random key (e.g. jax.random.key(0)), got int (0)",
              _cells(KEY_TAKERS, key=0)),
    SameError("key-raw-shape", ValueError,
              "key must be a single key: a raw uint32 key has shape (2,), got shape (3,)",
              _cells(KEY_TAKERS, key=_RAW_KEY3)),
]


def e_checked(key=D["key"], x=_X, k=3, **kw):
  return checked.checked_kmeans(key, x, k, **_merge(dict(impl=IMPL, max_iter=2), kw))


def e_assign_streaming(x=_XN, c=_XN[:4], **kw):
  return fk.assign_streaming(np.asarray(x), np.asarray(c), **_merge(dict(impl=IMPL), kw))


def _row_sharded_x():
  from jax.sharding import NamedSharding, PartitionSpec
  from flashkmeans_jax.drivers.sharded.mesh import data_mesh
  mesh = data_mesh(jax.devices()[:4])
  return jax.device_put(_X, NamedSharding(mesh, PartitionSpec(mesh.axis_names[0])))


def _read_only(dtype):
  out = np.zeros(20, dtype)
  out.flags.writeable = False
  return out


# The seeding and inverse-map options (issue 21): kmeans, batched_kmeans and
# checked_kmeans check them with the same function.
SEEDING_TAKERS = dict(kmeans=e_kmeans, batched_kmeans=e_batched, checked_kmeans=e_checked)
_D0 = jax.devices()[0]
# kmeans_streaming and assign_streaming check devices= with
# validation.check_devices, as the direct call does.
DEVICE_TAKERS = dict(kmeans_streaming=e_streaming, assign_streaming=e_assign_streaming,
                     check_devices=lambda device=None, devices=None: validation.check_devices(
                         device, devices))
SAME_ERRORS += [
    SameError("return_order-int", TypeError, "return_order must be a bool, got int (1)",
              _cells(SEEDING_TAKERS, return_order=1)),
    SameError("oversampling_factor-zero", ValueError,
              "oversampling_factor must be a finite number > 0, got 0.0",
              _cells(SEEDING_TAKERS, init="k-means||", oversampling_factor=0.0)),
    SameError("init_rounds-zero", ValueError, "init_rounds must be >= 1, got 0",
              _cells(SEEDING_TAKERS, init="k-means||", init_rounds=0)),
    SameError("max_points_per_centroid-zero", ValueError,
              "max_points_per_centroid must be >= 1, got 0",
              _cells(SEEDING_TAKERS, max_points_per_centroid=0)),
    SameError("n_local_trials-float", TypeError, "n_local_trials must be an int, got float (2.0)",
              _cells({**SEEDING_TAKERS, "init_kmeans_plusplus": e_init_pp,
                      "sharded_init_kmeans_plusplus": e_sharded_pp}, n_local_trials=2.0)),
    # Row-sharded x: the options its driver lacks are refused, not ignored.
    SameError("sharded-unsupported-options", ValueError,
              "row-sharded x: return_order, init='k-means||', n_local_trials, "
              "oversampling_factor, init_rounds and max_points_per_centroid are not "
              "supported by the sharded driver yet; gather x or use cluster_order on the "
              "labels", {
                  "kmeans(return_order)": lambda t: e_kmeans(x=_row_sharded_x(),
                                                             return_order=True),
                  "kmeans(init='k-means||')": lambda t: e_kmeans(x=_row_sharded_x(),
                                                                 init="k-means||"),
                  "kmeans(init_rounds)": lambda t: e_kmeans(x=_row_sharded_x(), init_rounds=2),
                  "kmeans(max_points_per_centroid)": lambda t: e_kmeans(
                      x=_row_sharded_x(), max_points_per_centroid=4)}),
    # A read-only output fails before the run, not at the first write after it.
    SameError("out-read-only", ValueError,
              "labels_out is read-only; pass a writable array (an np.memmap opened with mode "
              "'r+' or 'w+')", {
                  "kmeans_streaming": lambda t: e_streaming(labels_out=_read_only(np.int32)),
                  "kmeans_streaming(dist_out)": lambda t: e_streaming(
                      dist_out=_read_only(np.float32)),
                  "assign_streaming": lambda t: e_assign_streaming(
                      labels_out=_read_only(np.int32)),
                  "assign_streaming(dist_out)": lambda t: e_assign_streaming(
                      dist_out=_read_only(np.float32))},
              aliases={"dist_out": "labels_out"}),
    SameError("devices-and-device", ValueError, "pass either device= or devices=, not both",
              _cells(DEVICE_TAKERS, device=_D0, devices=[_D0])),
    SameError("devices-repeated", ValueError, "devices must not repeat a device",
              _cells(DEVICE_TAKERS, devices=[_D0, _D0])),
    SameError("devices-empty", TypeError,
              "devices must be a non-empty sequence of jax.Device, got []",
              _cells(DEVICE_TAKERS, devices=[])),
    SameError("devices-not-devices", TypeError,
              "devices must be a non-empty sequence of jax.Device, got ['cpu:0']",
              _cells(DEVICE_TAKERS, devices=["cpu:0"])),
]
if not any(d.platform == "gpu" for d in jax.devices()):
  SAME_ERRORS.append(SameError(
      "impl-pallas-without-gpu", ValueError,
      'impl="pallas" needs a CUDA GPU (the Triton-lowered kernels); on this backend use '
      'impl="xla" (or None), or "pallas_interpret" to run the kernels in Pallas interpret '
      "mode (slow, for tests)", {
          **_cells(IMPL_TAKERS, impl="pallas"), **_estimator_cells(impl="pallas"),
          "cli": lambda t: e_cli(t, extra=["--impl", "pallas"])}))


def _canonical(msg: str, tmp, aliases) -> str:
  """The message in kmeans' names: the CLI's file paths become ``x``, the
  entry points' names for arguments become kmeans' (whole words only)."""
  msg = re.sub(re.escape(str(tmp)) + r"/x\d+\.npy", "x", msg)
  for word, canon in {**ALIASES, **aliases}.items():
    msg = re.sub(rf"(?<![\w.]){re.escape(word)}(?![\w])", canon, msg)
  return msg


@pytest.mark.parametrize("row", SAME_ERRORS, ids=[r.id for r in SAME_ERRORS])
def test_same_bad_argument_same_error_everywhere(row, tmp_path):
  from flashkmeans_jax import cli
  assert len(row.cells) >= 3, "a row compares several entry points"
  got = {}
  for entry, call in row.cells.items():
    with pytest.raises(Exception) as info:
      call(tmp_path)
    err = info.value
    if isinstance(err, cli.CLIError):
      # The CLI prefixes the flag and keeps the library's error as the cause.
      assert err.__cause__ is not None, (entry, err)
      assert str(err).endswith(str(err.__cause__)), (entry, err)
      err = err.__cause__
    assert type(err) is row.exc, f"{entry}: {type(err).__name__}: {err}"
    got[entry] = _canonical(str(err), tmp_path, row.aliases)
  for entry, msg in got.items():
    front = entry in FRONT_ENDS or entry.startswith("KMeans")
    want, have = (row.message.split(";")[0], msg.split(";")[0]) if front else (row.message, msg)
    assert have == want, f"{entry}: {msg!r}"


def test_same_error_ids_unique():
  ids = [r.id for r in SAME_ERRORS]
  assert len(ids) == len(set(ids))


NUMPY_INTEGERS = [
    ("update", e_update, dict(k=np.int64(4))),
    ("cluster_sums", e_cluster_sums, dict(k=np.int64(4))),
    ("init_random", e_init_random, dict(k=np.int64(3))),
    ("init_kmeans_plusplus", e_init_pp, dict(k=np.int32(3))),
    ("kmeans", e_kmeans, dict(k=np.int64(3), n_init=np.int64(2), max_iter=np.int64(3))),
    ("batched_kmeans", e_batched, dict(k=np.int64(3))),
    ("kmeans_streaming", e_streaming, dict(k=np.int64(3), chunk_size=np.int64(8))),
    ("sharded_kmeans", e_sharded_kmeans, dict(k=np.int64(3))),
    ("sharded_update", e_sharded_update, dict(k=np.int64(4))),
    ("sharded_init_kmeans_plusplus", e_sharded_pp, dict(k=np.int64(3))),
    ("KMeans", e_estimator, dict(k=np.int64(3), max_iter=np.int64(2))),
    ("KMeans(chunk_size)", e_estimator_streaming, dict(k=np.int64(3), chunk_size=np.int64(8))),
]


@pytest.mark.parametrize("entry,call,kw", NUMPY_INTEGERS, ids=[c[0] for c in NUMPY_INTEGERS])
def test_numpy_integers_accepted_everywhere(entry, call, kw):
  """NumPy integers are integers: every entry point that takes k (or another
  count) accepts them, the sharded ones included, with the result of the
  Python int."""
  def leaves(out):
    if hasattr(out, "cluster_centers_"):
      out = (out.cluster_centers_, out.labels_)
    return [np.asarray(a) for a in jax.tree.leaves(out)]

  got = leaves(call(**kw))
  want = leaves(call(**{n: int(v) if isinstance(v, np.integer) else v for n, v in kw.items()}))
  assert len(got) == len(want) > 0
  for a, b in zip(got, want):
    np.testing.assert_array_equal(a, b)


def test_raw_uint32_key_accepted():
  res = fk.kmeans(jax.random.PRNGKey(0), D["x"], 3, max_iter=3)
  assert res.centroids.shape == (3, 3)


# --------------------------------------------------------------------------
# Non-finite data.
# --------------------------------------------------------------------------

def _blobs(n=96, d=4, k=3, seed=1, dtype=np.float32, spread=10.0):
  x, centers, lab = helpers.make_blobs(np.random.default_rng(seed), n, d, k, spread=spread,
                                       dtype=dtype)
  return x, centers, lab


def _assert_clean_fixed_point(x, ok, res, k):
  """Centroids finite, labels in range, every clean point correctly labelled
  and every centroid the mean of its clean points (the Lloyd fixed point)."""
  c = np.asarray(res.centroids, np.float64)
  labels = np.asarray(res.labels)
  assert np.isfinite(c).all(), c
  assert ((labels >= 0) & (labels < k)).all()
  helpers.assert_labels_match(x[ok], c, labels[ok], "sqeuclidean")
  for j in range(k):
    members = x[ok & (labels == j)]
    if len(members):
      np.testing.assert_allclose(c[j], members.astype(np.float64).mean(0), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("init", ["k-means++", "random"])
@pytest.mark.parametrize("empty", ["keep", "farthest"])
def test_nonfinite_point_leaves_centroids_finite(init, empty):
  """check_finite=False runs the same compiled code as a call inside jit."""
  x, _, _ = _blobs()
  ok = np.ones(len(x), bool)
  ok[5] = False
  for bad in (np.nan, np.inf, -np.inf):
    x_bad = x.copy()
    x_bad[5, 2] = bad
    res = fk.kmeans(jax.random.key(3), jnp.asarray(x_bad), 3, init=init, empty=empty,
                    max_iter=50, impl=IMPL, check_finite=False)
    assert np.isnan(float(res.inertia))
    _assert_clean_fixed_point(x, ok, res, 3)
    assert bool(res.converged)  # the tolerance ignores the bad row


def test_nan_point_inside_jit_n_init_and_batched():
  x, _, _ = _blobs()
  x_bad = x.copy()
  x_bad[5] = np.nan
  ok = np.ones(len(x), bool)
  ok[5] = False
  run = jax.jit(functools.partial(fk.kmeans, k=3, init="random", max_iter=50, impl=IMPL,
                                  n_init=3))
  res = run(jax.random.key(1), jnp.asarray(x_bad))
  assert np.isnan(float(res.inertia))
  _assert_clean_fixed_point(x, ok, res, 3)
  bres = jax.jit(lambda key, xb: fk.batched_kmeans(key, xb, 3, max_iter=50, impl=IMPL))(
      jax.random.key(2), jnp.asarray(np.stack([x_bad, x])))
  assert np.isnan(float(bres.inertia[0])) and np.isfinite(float(bres.inertia[1]))
  for b, okb in ((0, ok), (1, np.ones(len(x), bool))):
    _assert_clean_fixed_point(x, okb, jax.tree.map(lambda a: a[b], bres), 3)


def test_nonfinite_assign_and_update_inside_jit():
  x, centers, _ = _blobs()
  x[7] = np.nan
  c = jnp.asarray(centers.astype(np.float32))
  labels, dist = jax.jit(fk.assign)(jnp.asarray(x), c)
  assert int(labels[7]) == 0 and np.isnan(float(dist[7]))
  assert np.isfinite(np.delete(np.asarray(dist), 7)).all()
  new_c, counts = jax.jit(fk.update, static_argnums=2)(jnp.asarray(x), labels, 3)
  assert np.isfinite(np.asarray(new_c)).all()
  assert float(counts.sum()) == len(x) - 1  # the NaN row is left out of counts


def test_nonfinite_seeding_never_picks_bad_rows():
  x, _, _ = _blobs(n=12)
  x[:6] = np.nan  # half the rows are bad, k=6 finite rows remain
  for seed in range(5):
    key = jax.random.key(seed)
    for c in (fk.init_random(key, jnp.asarray(x), 6),
              jax.jit(fk.init_random, static_argnums=2)(key, jnp.asarray(x), 6),
              fk.init_kmeans_plusplus(key, jnp.asarray(x), 6)):
      c = np.asarray(c)
      assert np.isfinite(c).all()
      # Seeds are distinct finite rows of x.
      assert all(any(np.array_equal(ci, xi) for xi in x[6:]) for ci in c)
  # More seeds than finite rows: the draw still succeeds and stays finite.
  c = np.asarray(fk.init_random(jax.random.key(0), jnp.asarray(x), 9))
  assert np.isfinite(c).all()


def test_check_finite_false_eager_behaves_like_jit():
  x, _, _ = _blobs()
  x[0, 0] = np.nan
  # max_iter=50: the program of test_nonfinite_point_leaves_centroids_finite.
  res = fk.kmeans(jax.random.key(0), jnp.asarray(x), 3, check_finite=False, max_iter=50)
  assert np.isfinite(np.asarray(res.centroids)).all() and np.isnan(float(res.inertia))


# ---- checkify

def test_checked_kmeans_eager_and_jit():
  x, _, _ = _blobs()
  key = jax.random.key(0)
  err, res = fk.checked_kmeans(key, jnp.asarray(x), 3, max_iter=20)
  assert err.get() is None
  ref = fk.kmeans(key, jnp.asarray(x), 3, max_iter=20)
  np.testing.assert_array_equal(np.asarray(res.centroids), np.asarray(ref.centroids))

  run = jax.jit(fk.checked_kmeans, static_argnames=("k", "max_iter"))
  err, _ = run(key, jnp.asarray(x), k=3, max_iter=20)
  err.throw()  # no error: does nothing
  x_bad = x.copy()
  x_bad[3, 1] = np.nan
  x_bad[4, 0] = np.inf
  err, res = run(key, jnp.asarray(x_bad), k=3, max_iter=20)
  assert "x contains 2 NaN or Inf" in err.get()
  with pytest.raises(checkify.JaxRuntimeError, match="x contains 2 NaN or Inf"):
    err.throw()
  assert np.isfinite(np.asarray(res.centroids)).all()  # the result is still safe

  w = jnp.ones(len(x)).at[0].set(-1.0)
  err, _ = run(key, jnp.asarray(x), k=3, max_iter=20, weights=w)
  assert "weights contain 1 negative" in err.get()
  err, _ = run(key, jnp.asarray(x), k=3, max_iter=20, weights=jnp.zeros(len(x)))
  assert "positive sum" in err.get()
  err, _ = run(key, jnp.asarray(x), k=3, max_iter=20,
               init=jnp.asarray(x[:3]).at[0, 0].set(jnp.nan))
  assert "init contains 1 NaN" in err.get()


def test_user_checkify_pattern_inside_jit():
  """The documented pattern: data_checks inside your own jitted function."""
  x, _, _ = _blobs()

  @jax.jit
  def pipeline(key, x):
    checked.data_checks(x)
    return fk.kmeans(key, x, 3, max_iter=20, check_finite=False).inertia

  f = checkify.checkify(pipeline)
  err, inertia = f(jax.random.key(0), jnp.asarray(x))
  assert err.get() is None and np.isfinite(float(inertia))
  err, _ = f(jax.random.key(0), jnp.asarray(x).at[0, 0].set(jnp.nan))
  assert "x contains 1 NaN" in err.get()

  # A plain checkify.check written by the user works the same way.
  def mine(key, x):
    checkify.check(jnp.all(jnp.isfinite(x)), "bad data")
    return fk.kmeans(key, x, 3, max_iter=5, check_finite=False)

  err, _ = jax.jit(checkify.checkify(mine))(jax.random.key(0), jnp.asarray(x).at[1].set(jnp.inf))
  assert "bad data" in err.get()


@pytest.mark.parametrize("metric,empty", [("sqeuclidean", "farthest"), ("cosine", "keep"),
                                          ("dot", "farthest")])
def test_float_checks_report_nothing_on_clean_data(metric, empty):
  """checkify's NaN and division checks find no false positive inside the
  library on finite data (degenerate data included: duplicate and zero rows
  leave clusters empty), under jit; NaN data is reported."""
  x, _, _ = _blobs(n=48)
  x[:10] = 0.0
  x[10:20] = x[20]

  def f(key, x):
    return fk.kmeans(key, x, 6, metric=metric, empty=empty, max_iter=10, impl=IMPL,
                     check_finite=False)

  g = jax.jit(checkify.checkify(f, errors=checkify.float_checks))
  err, res = g(jax.random.key(0), jnp.asarray(x))
  assert err.get() is None, err.get()
  err, _ = g(jax.random.key(0), jnp.asarray(x).at[30, 0].set(jnp.nan))
  assert err.get() is not None and "nan" in err.get().lower()


def test_float_checks_eager_assign_update():
  x, _, _ = _blobs(n=48)
  x[:10] = 0.0
  for metric in ("sqeuclidean", "cosine", "dot"):
    err, _ = checkify.checkify(lambda x, c: fk.assign(x, c, metric=metric, impl=IMPL),
                               errors=checkify.float_checks)(jnp.asarray(x), jnp.asarray(x[:5]))
    assert err.get() is None, err.get()
  err, _ = checkify.checkify(lambda x, l: fk.update(x, l, 8, metric="cosine", impl=IMPL),
                             errors=checkify.float_checks)(
                                 jnp.asarray(x), jnp.zeros(48, jnp.int32))
  assert err.get() is None, err.get()


def test_checkify_of_vmapped_loop_is_jax_limitation():
  """Documented: checkify cannot transform kmeans(n_init>1); checked_kmeans can."""
  x, _, _ = _blobs(n=48)
  with pytest.raises(ValueError, match="batched while-loops"):
    checkify.checkify(lambda k, x: fk.kmeans(k, x, 3, n_init=2, max_iter=3, impl=IMPL,
                                             check_finite=False))(jax.random.key(0),
                                                                  jnp.asarray(x))
  run = jax.jit(fk.checked_kmeans, static_argnames=("k", "max_iter", "n_init"))
  err, res = run(jax.random.key(0), jnp.asarray(x).at[0, 0].set(jnp.nan), k=3, n_init=2,
                 max_iter=3)
  assert "x contains 1 NaN" in err.get()
  brun = jax.jit(fk.checked_batched_kmeans, static_argnames=("k", "max_iter"))
  xb = jnp.stack([jnp.asarray(x)] * 2)
  err, res = brun(jax.random.key(0), xb, k=3, max_iter=3,
                  weights=jnp.ones((2, 48)).at[1].set(0.0))
  assert "positive sum" in err.get()
  err, res = brun(jax.random.key(0), xb, k=3, max_iter=3)
  assert err.get() is None and res.centroids.shape == (2, 3, 4)


# --------------------------------------------------------------------------
# Degenerate data: a valid result (finite centroids, labels in range, finite
# inertia) and the right one where it is known.
# --------------------------------------------------------------------------

EMPTIES = ["keep", "farthest"]
INITS = ["k-means++", "random"]
# Where the shape is not the point, the degenerate cases share one: N=24
# points in D=3, k=3 (float32, default max_iter and tol), so that each
# (metric, init, empty) compiles the Lloyd loop once for all of them.
DN, DD, DK = 24, 3, 3


def _valid(res, k, n, d, dtype=None, metric="sqeuclidean"):
  c = np.asarray(res.centroids.astype(jnp.float32))
  labels = np.asarray(res.labels)
  assert c.shape == (k, d) and labels.shape == (n,)
  if dtype is not None:
    assert res.centroids.dtype == dtype
  assert np.isfinite(c).all(), c
  assert ((labels >= 0) & (labels < k)).all()
  assert np.isfinite(float(res.inertia))
  if metric != "dot":  # "dot" distances are -x.c, negative by design
    assert float(res.inertia) >= 0.0
  return c, labels


@pytest.mark.parametrize("empty", EMPTIES)
@pytest.mark.parametrize("init", INITS)
def test_all_points_identical(empty, init):
  x = np.tile(np.array([[1.5, -2.0, 3.0]], np.float32), (DN, 1))
  res = fk.kmeans(jax.random.key(0), jnp.asarray(x), DK, init=init, empty=empty, impl=IMPL)
  c, _ = _valid(res, DK, DN, DD)
  np.testing.assert_array_equal(c, x[:DK])  # every seed and centroid is the point
  assert float(res.inertia) == 0.0 and bool(res.converged)


@pytest.mark.parametrize("empty", EMPTIES)
@pytest.mark.parametrize("init", INITS)
def test_fewer_distinct_points_than_k(empty, init):
  base = np.array([[0.0, 0.0, 0.0], [10.0, 0.0, 10.0]], np.float32)
  x = np.repeat(base, DN // 2, axis=0)  # N=24, 2 distinct points, k=3
  res = fk.kmeans(jax.random.key(1), jnp.asarray(x), DK, init=init, empty=empty, impl=IMPL)
  c, labels = _valid(res, DK, DN, DD)
  helpers.assert_labels_match(x, c, labels, "sqeuclidean")
  if init == "k-means++" or empty == "farthest":
    # k-means++ seeds every distinct point; "farthest" re-seeds empty
    # clusters onto uncovered points: either way all points are covered.
    assert float(res.inertia) == 0.0


@pytest.mark.parametrize("empty", EMPTIES)
def test_duplicated_points_equal_weight_two(empty):
  x, _, _ = _blobs(n=40, k=3)
  c0 = jnp.asarray(x[[0, 1, 2]])
  dup = fk.kmeans(jax.random.key(0), jnp.asarray(np.concatenate([x, x])), 3, init=c0,
                  empty=empty, impl=IMPL)
  w2 = fk.kmeans(jax.random.key(0), jnp.asarray(x), 3, init=c0, empty=empty, impl=IMPL,
                 weights=jnp.full((40,), 2.0))
  _valid(dup, 3, 80, 4)
  np.testing.assert_allclose(np.asarray(dup.centroids), np.asarray(w2.centroids), rtol=1e-5,
                             atol=1e-5)
  np.testing.assert_array_equal(np.asarray(dup.labels[:40]), np.asarray(w2.labels))
  np.testing.assert_allclose(float(dup.inertia), float(w2.inertia), rtol=1e-4)


@pytest.mark.parametrize("empty", EMPTIES)
@pytest.mark.parametrize("init", INITS)
def test_zero_vectors_cosine(empty, init):
  rng = np.random.default_rng(2)
  x = rng.normal(size=(DN, DD)).astype(np.float32)
  x[:8] = 0.0
  res = fk.kmeans(jax.random.key(0), jnp.asarray(x), DK, metric="cosine", init=init,
                  empty=empty, impl=IMPL)
  c, labels = _valid(res, DK, DN, DD)
  _, dist = fk.assign(jnp.asarray(x), res.centroids, metric="cosine", impl=IMPL)
  np.testing.assert_allclose(np.asarray(dist[:8]), 1.0)  # zero vector: distance 1
  norms = np.linalg.norm(c, axis=1)
  assert ((np.abs(norms - 1) < 1e-5) | (norms == 0)).all()
  helpers.assert_labels_match(x[8:], c, labels[8:], "cosine")
  # All points zero: every distance is 1, nothing is NaN.
  z = fk.kmeans(jax.random.key(0), jnp.zeros((DN, DD)), DK, metric="cosine", init=init,
                empty=empty, impl=IMPL)
  _valid(z, DK, DN, DD)
  assert float(z.inertia) == float(DN)


@pytest.mark.parametrize("dtype", [jnp.float16, jnp.bfloat16])
@pytest.mark.parametrize("empty", EMPTIES)
def test_huge_magnitudes_16bit(dtype, empty):
  """Values ~1e4: ||x||^2 ~ 1e8 overflows float16 (max 65504); no 16-bit
  type ever holds it, so distances and centroids stay finite and right."""
  rng = np.random.default_rng(3)
  centers = np.array([[1e4, 1e4, -1e4, 0.0], [-1e4, 2e4, 1e4, 1e4], [0.0, -2e4, 0.0, -1e4]])
  lab = rng.integers(0, 3, 60)
  x64 = centers[lab] + rng.normal(size=(60, 4)) * 50.0
  x = jnp.asarray(x64, dtype)
  xf = np.asarray(x.astype(jnp.float32), np.float64)
  res = fk.kmeans(jax.random.key(0), x, 3, empty=empty, impl=IMPL)
  c, labels = _valid(res, 3, 60, 4, dtype=dtype)
  # The true partition is found (clusters 3e4 apart, spread 50).
  for j in range(3):
    assert len(set(labels[lab == j])) == 1
  helpers.assert_labels_match(xf, c, labels, "sqeuclidean", rtol=1e-2)
  # assign: the distances match float64 to 16-bit centroid rounding.
  ref = ((xf - c[labels]) ** 2).sum(1)
  _, dist = fk.assign(x, res.centroids, impl=IMPL)
  assert np.isfinite(np.asarray(dist)).all()
  np.testing.assert_allclose(np.asarray(dist), ref, rtol=2e-2, atol=1e-3 * (xf ** 2).sum(1).max())
  for metric in (("cosine", "dot") if empty == "keep" else ()):
    r = fk.kmeans(jax.random.key(0), x, 3, metric=metric, empty=empty, impl=IMPL, max_iter=20)
    _valid(r, 3, 60, 4, dtype=dtype, metric=metric)


@pytest.mark.parametrize("empty", EMPTIES)
def test_tiny_magnitudes_float32(empty):
  """Values ~1e-20: squared distances (~1e-40) underflow float32. Documented:
  the result is valid (finite, labels in range) but clusters at this scale
  cannot be told apart -- rescale such data. Under cosine (scale-free) the
  right partition is found."""
  rng = np.random.default_rng(4)
  x, centers, lab = helpers.make_blobs(rng, DN, DD, DK, spread=10.0, std=0.1)
  tiny = (x.astype(np.float64) * 1e-20).astype(np.float32)
  for metric in ("sqeuclidean", "dot"):
    res = fk.kmeans(jax.random.key(0), jnp.asarray(tiny), DK, metric=metric, empty=empty,
                    impl=IMPL)
    _valid(res, DK, DN, DD, metric=metric)
  res = fk.kmeans(jax.random.key(0), jnp.asarray(tiny), DK, metric="cosine", empty=empty,
                  impl=IMPL)
  _, labels = _valid(res, DK, DN, DD)
  ref = fk.kmeans(jax.random.key(0), jnp.asarray(x), DK, metric="cosine", empty=empty,
                  impl=IMPL)
  np.testing.assert_array_equal(labels, np.asarray(ref.labels))


@pytest.mark.parametrize("empty", EMPTIES)
@pytest.mark.parametrize("init", INITS)
def test_tiny_shapes(empty, init):
  key = jax.random.key(0)
  kw = dict(init=init, empty=empty, impl=IMPL)
  # N=1, K=1: the centroid is the point.
  res = fk.kmeans(key, jnp.asarray([[2.0, -1.0]]), 1, **kw)
  c, _ = _valid(res, 1, 1, 2)
  np.testing.assert_array_equal(c, [[2.0, -1.0]])
  assert float(res.inertia) == 0.0
  # D=1, K=2: the two groups of a 1-d line.
  x1 = jnp.asarray([[0.0], [0.1], [0.2], [10.0], [10.1], [10.2]])
  res = fk.kmeans(key, x1, 2, **kw)
  c, labels = _valid(res, 2, 6, 1)
  np.testing.assert_allclose(np.sort(c[:, 0]), [0.1, 10.1], rtol=1e-5)
  assert len(set(labels[:3])) == 1 and len(set(labels[3:])) == 1 and labels[0] != labels[3]
  # K=1: the weighted mean, inertia = weighted sum of squared deviations.
  x, _, _ = _blobs(n=30)
  w = np.random.default_rng(0).uniform(0.5, 2.0, 30).astype(np.float32)
  res = fk.kmeans(key, jnp.asarray(x), 1, weights=jnp.asarray(w), **kw)
  c, labels = _valid(res, 1, 30, 4)
  mean = (w[:, None] * x).sum(0) / w.sum()
  np.testing.assert_allclose(c[0], mean, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(float(res.inertia), (w * ((x - mean) ** 2).sum(1)).sum(), rtol=1e-4)
  assert (labels == 0).all()
  # K=N with distinct points: every point its own cluster, inertia 0.
  res = fk.kmeans(key, jnp.asarray(x[:8]), 8, **kw)
  c, labels = _valid(res, 8, 8, 4)
  assert sorted(labels.tolist()) == list(range(8))
  np.testing.assert_array_equal(c[labels], x[:8])
  assert float(res.inertia) == 0.0


@pytest.mark.parametrize("empty", EMPTIES)
def test_zero_weights_and_single_positive_weight(empty):
  x, _, _ = _blobs(n=30)
  w = np.zeros(30, np.float32)
  w[7] = 1.0  # one point carries all the weight, k=3
  res = fk.kmeans(jax.random.key(0), jnp.asarray(x), 3, weights=jnp.asarray(w), empty=empty,
                  impl=IMPL)
  c, labels = _valid(res, 3, 30, 4)
  assert float(res.inertia) == 0.0  # the weighted point sits on a centroid
  np.testing.assert_array_equal(c[labels[7]], x[7])


@pytest.mark.parametrize("empty", EMPTIES)
def test_update_degenerate(empty):
  """update with every point in one cluster: the other clusters keep their
  centroids (or, under "farthest", take the farthest points); all finite."""
  x, _, _ = _blobs(n=20)
  c0 = jnp.asarray(x[:4])
  labels = jnp.zeros(20, jnp.int32)
  _, dist = fk.assign(jnp.asarray(x), c0[:1], impl=IMPL)
  c, counts = fk.update(jnp.asarray(x), labels, c0, empty=empty, dist=dist, impl=IMPL)
  c = np.asarray(c)
  assert np.isfinite(c).all() and float(counts.sum()) == 20
  if empty == "keep":
    np.testing.assert_array_equal(c[1:], np.asarray(c0[1:]))
    np.testing.assert_allclose(c[0], x.mean(0), rtol=1e-5, atol=1e-5)
  else:
    far = np.argsort(-np.asarray(dist), kind="stable")[:3]
    np.testing.assert_array_equal(c[1:], x[far])
  # update(k) with K > number of labels used: zeros for empty clusters.
  c, counts = fk.update(jnp.asarray(x), labels, 5, impl=IMPL)
  assert np.isfinite(np.asarray(c)).all() and (np.asarray(c)[1:] == 0).all()


# --------------------------------------------------------------------------
# Reproducibility: bit-identical on one device.
# --------------------------------------------------------------------------

def _tree_equal(a, b):
  for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(np.asarray(u), np.asarray(v))


@pytest.mark.parametrize("init,metric", [("k-means++", "sqeuclidean"), ("random", "cosine")])
def test_same_key_same_result_eager_and_jit(init, metric):
  x, _, _ = _blobs(n=64, k=4)
  key = jax.random.key(42)
  kw = dict(init=init, metric=metric, max_iter=30, n_init=2, impl=IMPL)
  a = fk.kmeans(key, jnp.asarray(x), 4, **kw)
  b = fk.kmeans(key, jnp.asarray(x), 4, **kw)
  _tree_equal(a, b)
  j = jax.jit(lambda key, x: fk.kmeans(key, x, 4, **kw))(key, jnp.asarray(x))
  _tree_equal(a, j)
  # NumPy input and a raw uint32 key of the same seed give the same result.
  _tree_equal(a, fk.kmeans(key, x, 4, **kw))
  # A different key is allowed to differ; the result is still valid.
  _valid(fk.kmeans(jax.random.key(43), jnp.asarray(x), 4, **kw), 4, 64, 4)


def test_reproducible_batched_and_seeding():
  x, _, _ = _blobs(n=32)
  xb = jnp.asarray(np.stack([x, x[::-1]]))
  key = jax.random.key(7)
  _tree_equal(fk.batched_kmeans(key, xb, 3, max_iter=10, impl=IMPL),
              fk.batched_kmeans(key, xb, 3, max_iter=10, impl=IMPL))
  for f in (fk.init_random, fk.init_kmeans_plusplus):
    _tree_equal(f(key, jnp.asarray(x), 3), f(key, jnp.asarray(x), 3))
    _tree_equal(f(key, jnp.asarray(x), 3), jax.jit(f, static_argnums=2)(key, jnp.asarray(x), 3))


def test_huge_finite_weights_are_weights_not_points():
  """Weights above 9.2e18 (whose square would pass the points' row-norm limit)
  are accepted by every front end and cluster like unit weights; only values
  beyond float32 are refused."""
  x = np.random.default_rng(0).normal(size=(50, 3)).astype(np.float32)
  w = np.full(50, 1e19)
  init = x[:3]
  ref = fk.kmeans(jax.random.key(0), jnp.asarray(x), 3, init=jnp.asarray(init), impl=IMPL)
  got = fk.kmeans(jax.random.key(0), jnp.asarray(x), 3, init=jnp.asarray(init), impl=IMPL,
                  weights=jnp.asarray(w, jnp.float32))
  np.testing.assert_array_equal(np.asarray(got.labels), np.asarray(ref.labels))
  km = fk.KMeans(3, init=init, n_init=1).fit(x, sample_weight=w)
  np.testing.assert_array_equal(km.labels_, np.asarray(ref.labels))
  np.testing.assert_allclose(km.inertia_, 1e19 * float(ref.inertia), rtol=1e-5)
  with pytest.raises(ValueError, match="beyond float32's largest finite magnitude"):
    fk.KMeans(3, init=init, n_init=1).fit(x, sample_weight=np.full(50, 1e39))
