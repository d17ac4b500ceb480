"""A second call with the same shapes and dtypes must not recompile, for
every public function; the estimator's persistent compilation cache."""

import contextlib
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import flashkmeans_jax as fk

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("FLASHKMEANS_JAX_NO_COMPILE_CACHE", "1")  # see test_estimator.py

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


# ------------------------------------------------------------------------
# Issue 16: no compilation per eager call of a public function, for the
# same shapes and dtypes. Each entry is called once (it may compile), then
# twice more: those two calls must compile nothing.

@pytest.fixture(scope="module")
def small():
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(64, 4)), jnp.float32)
  c = x[:3]
  labels, dist = fk.assign(x, c)
  sums, counts = fk.cluster_sums(x, labels, 3)
  mesh = jax.make_mesh((2,), ("rows",))
  xs = jax.device_put(x, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("rows")))
  ema, ema_dead, mb = (fk.ema_codebook(), fk.ema_codebook(dead_threshold=0.5),
                       fk.minibatch_codebook())
  return dict(x=x, c=c, labels=labels, dist=dist, sums=sums, counts=counts, xs=xs,
              xh=np.asarray(x), ema=ema, ema_dead=ema_dead, mb=mb, key=jax.random.key(0),
              est=fk.KMeans(3, random_state=0, max_iter=5).fit(np.asarray(x)))


def _xfail(reason):
  return pytest.mark.xfail(strict=True, reason=reason)


EAGER_CALLS = [
    pytest.param("assign", lambda s: fk.assign(s["x"], s["c"])),
    pytest.param("assign_cosine", lambda s: fk.assign(s["x"], s["c"], metric="cosine")),
    pytest.param("cluster_sums", lambda s: fk.cluster_sums(s["x"], s["labels"], 3)),
    pytest.param("update", lambda s: fk.update(s["x"], s["labels"], s["c"])),
    pytest.param("update_farthest", lambda s: fk.update(s["x"], s["labels"], s["c"],
                                                        empty="farthest", dist=s["dist"])),
    pytest.param("finalize_centroids", lambda s: fk.finalize_centroids(
        s["sums"], s["counts"], s["c"])),
    pytest.param("finalize_centroids_farthest", lambda s: fk.finalize_centroids(
        s["sums"], s["counts"], s["c"], empty="farthest", x=s["x"], labels=s["labels"],
        dist=s["dist"])),
    pytest.param("init_random", lambda s: fk.init_random(s["key"], s["x"], 3)),
    pytest.param("init_kmeans_plusplus", lambda s: fk.init_kmeans_plusplus(s["key"], s["x"], 3)),
    pytest.param("kmeans", lambda s: fk.kmeans(s["key"], s["x"], 3, max_iter=5,
                                               empty="farthest")),
    # batched_kmeans, checked_kmeans and the sharded Lloyd calls are single
    # module-level jits like kmeans (left out for the suite's time).
    pytest.param("assign_streaming", lambda s: fk.assign_streaming(s["xh"], s["c"],
                                                                   chunk_size=16)),
    # kmeans_streaming (k-means++) recompiles on every call: its host seeding
    # runs seeding.init_kmeans_plusplus outside jit (a new fori_loop closure
    # per call). Left out until that is fixed (8 s of the suite as an xfail).
    pytest.param("sharded_assign", lambda s: fk.sharded_assign(s["xs"], s["c"])),
    pytest.param("vector_quantize", lambda s: fk.vector_quantize(s["x"], s["c"])),
    pytest.param("ema_codebook.update", lambda s: s["ema"].update(s["ema"].init(s["c"]),
                                                                  s["x"])),
    pytest.param("ema_codebook(dead_threshold).update", lambda s: s["ema_dead"].update(
        s["ema_dead"].init(s["c"]), s["x"], key=s["key"]),
        marks=_xfail("lloyd/codebook.py _reseed: lax.cond over closures made per call, "
                     "outside jit")),
    pytest.param("minibatch_codebook.update", lambda s: s["mb"].update(s["mb"].init(s["c"]),
                                                                       s["x"])),
    pytest.param("KMeans.fit", lambda s: fk.KMeans(3, random_state=0, max_iter=5).fit(s["xh"])),
    pytest.param("KMeans.predict", lambda s: s["est"].predict(s["xh"])),
    pytest.param("KMeans.transform", lambda s: s["est"].transform(s["xh"])),
    pytest.param("KMeans.score", lambda s: s["est"].score(s["xh"])),
    pytest.param("KMeans.partial_fit", lambda s: fk.KMeans(3, init=s["xh"][:3]).partial_fit(
        s["xh"])),
]


@pytest.mark.parametrize("name, call", EAGER_CALLS)
def test_eager_call_compiles_once(small, name, call):
  jax.block_until_ready(call(small))
  with count_compiles() as compiles:
    for _ in range(2):
      jax.block_until_ready(call(small))
  assert compiles == [], f"{name} compiled {len(compiles)} program(s) on repeated calls"


# ------------------------------------------------------------------------
# The persistent compilation cache the estimator switches on, checked in
# fresh processes (the setting is process-wide and taken once).

_CACHE_SCRIPT = r"""
import sys, jax, numpy as np
hits = []
jax.monitoring.register_event_listener(
    lambda event, **kw: hits.append(event) if event == "/jax/compilation_cache/cache_hits"
    else None)
import flashkmeans_jax as fk
x = np.random.default_rng(0).normal(size=(50, 3)).astype(np.float32)
est = fk.KMeans(3, random_state=0, max_iter=5).fit(x)
est.predict(x[:20])
print("DIR", jax.config.jax_compilation_cache_dir)
print("HITS", len(hits))
"""

_CONFIG_SCRIPT = r"""
import importlib, os, jax
from flashkmeans_jax.estimator import compile_cache as cc
print("USER", cc.enable_compilation_cache(), jax.config.jax_compilation_cache_dir)
cc = importlib.reload(cc)
jax.config.update("jax_compilation_cache_dir", None)
os.environ[cc.OPT_OUT_ENV] = "1"
print("OPTOUT", cc.enable_compilation_cache(), jax.config.jax_compilation_cache_dir)
"""


def _run(script, env):
  env = {k: v for k, v in os.environ.items()
         if k not in ("FLASHKMEANS_JAX_NO_COMPILE_CACHE", "JAX_COMPILATION_CACHE_DIR")} | env
  env["PYTHONPATH"] = str(ROOT)
  out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                       cwd=ROOT, env=env, timeout=300)
  assert out.returncode == 0, out.stderr
  return dict(line.split(" ", 1) for line in out.stdout.splitlines() if " " in line)


def test_estimator_uses_a_persistent_cache_under_the_user_cache_dir(tmp_path):
  env = {"XDG_CACHE_HOME": str(tmp_path), "HOME": str(tmp_path)}
  first = _run(_CACHE_SCRIPT, env)
  cache = tmp_path / "flashkmeans_jax" / "jax_cache"
  assert first["DIR"] == str(cache)
  assert cache.is_dir() and any(cache.iterdir())
  assert cache.stat().st_mode & 0o077 == 0  # trusted content: private to the user
  second = _run(_CACHE_SCRIPT, env)  # a new process loads what the first compiled
  assert int(second["HITS"]) > 0


def test_user_cache_dir_kept_and_opt_out(tmp_path):
  mine = tmp_path / "mine"
  out = _run(_CONFIG_SCRIPT, {"XDG_CACHE_HOME": str(tmp_path / "xdg"),
                              "JAX_COMPILATION_CACHE_DIR": str(mine)})
  assert out["USER"] == f"{mine} {mine}"
  assert out["OPTOUT"] == "None None"
  assert not (tmp_path / "xdg").exists()
