"""Data-parallel k-means on the 8 forced host CPU devices (see conftest.py),
plus one 2-process run joined by ``jax.distributed.initialize``."""

import json
import os
import socket
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

import flashkmeans_jax as fk
from flashkmeans_jax.api import sharded
from tests.helpers import make_blobs

pytestmark = pytest.mark.skipif(jax.device_count() < 8, reason="needs 8 devices")


def _mesh(n=8, name="data"):
  return Mesh(np.asarray(jax.devices()[:n]), (name,))


def _shard(a, mesh, spec=("data",)):
  a = np.asarray(a)
  return jax.device_put(a, NamedSharding(mesh, P(*spec, *([None] * (a.ndim - 1)))))


def _assert_same(res, ref, rtol=1e-5, atol=1e-4, n_iter=True):
  np.testing.assert_array_equal(np.asarray(res.labels), np.asarray(ref.labels))
  np.testing.assert_allclose(np.asarray(res.centroids, np.float32),
                             np.asarray(ref.centroids, np.float32), rtol=rtol, atol=atol)
  np.testing.assert_allclose(float(res.inertia), float(ref.inertia), rtol=1e-4)
  if n_iter:
    assert int(res.n_iter) == int(ref.n_iter)
    assert bool(res.converged) == bool(ref.converged)


@pytest.fixture(scope="module")
def blobs():
  x, centers, lab = make_blobs(np.random.default_rng(1), 1024, 16, 10, spread=8.0)
  return x, centers, lab


def test_kmeans_dispatches_on_row_sharded_input(blobs):
  x, _, _ = blobs
  init = jnp.asarray(x[:10])
  mesh = _mesh()
  xs = _shard(x, mesh)
  assert sharded.is_row_sharded(xs)
  assert not sharded.is_row_sharded(jnp.asarray(x))
  assert not sharded.is_row_sharded(x)
  res = fk.kmeans(jax.random.key(0), xs, 10, init=init, max_iter=100)
  ref = fk.kmeans(jax.random.key(0), x, 10, init=init, max_iter=100)
  _assert_same(res, ref)
  # Labels stay split like x; centroids are replicated on the mesh.
  assert res.labels.sharding.is_equivalent_to(NamedSharding(mesh, P("data")), 1)
  assert res.centroids.sharding.is_fully_replicated
  assert bool(ref.converged) and int(ref.n_iter) > 1


def test_assign_and_update_dispatch(blobs):
  x, _, _ = blobs
  c = jnp.asarray(x[:10]) + 0.5
  xs = _shard(x, _mesh())
  lab, dist = fk.assign(xs, c)
  lab0, dist0 = fk.assign(x, c)
  np.testing.assert_array_equal(np.asarray(lab), np.asarray(lab0))
  # expanded ||x||^2 - 2x.c + ||c||^2: rounding scales with the norms (~1e3 here)
  np.testing.assert_allclose(np.asarray(dist), np.asarray(dist0), rtol=1e-5, atol=2e-3)
  c1, n1 = fk.update(xs, lab, c)
  c0, n0 = fk.update(x, lab0, c)
  np.testing.assert_allclose(np.asarray(c1), np.asarray(c0), rtol=1e-5, atol=1e-5)
  np.testing.assert_array_equal(np.asarray(n1), np.asarray(n0))


@pytest.mark.parametrize("n", [1003, 57])
def test_uneven_shards(n):
  x, _, _ = make_blobs(np.random.default_rng(n), n, 8, 5, spread=8.0)
  init = jnp.asarray(x[:5])
  res = fk.sharded_kmeans(jax.random.key(0), x, 5, init=init, mesh=_mesh())
  ref = fk.kmeans(jax.random.key(0), x, 5, init=init)
  assert res.labels.shape == (n,)
  _assert_same(res, ref)
  lab, dist = fk.sharded_assign(x, ref.centroids, mesh=_mesh())
  assert lab.shape == dist.shape == (n,)
  np.testing.assert_array_equal(np.asarray(lab), np.asarray(ref.labels))
  c, counts = fk.sharded_update(x, ref.labels, ref.centroids, mesh=_mesh())
  assert float(jnp.sum(counts)) == n  # padded rows counted nowhere
  c0, _ = fk.update(x, ref.labels, ref.centroids)
  np.testing.assert_allclose(np.asarray(c), np.asarray(c0), rtol=1e-5, atol=1e-5)
  # k-means++ on padded data never seeds on a padded (zero) row.
  seeds = fk.sharded_init_kmeans_plusplus(jax.random.key(3), x + 100.0, 5, mesh=_mesh())
  assert np.all(np.abs(np.asarray(seeds)) > 50)


def test_k_larger_than_a_shard():
  x, _, _ = make_blobs(np.random.default_rng(2), 200, 4, 40, spread=10.0, std=0.3)
  init = jnp.asarray(x[::5][:40])  # 200 / 8 = 25 points per shard < K = 40
  res = fk.sharded_kmeans(jax.random.key(0), x, 40, init=init, mesh=_mesh())
  ref = fk.kmeans(jax.random.key(0), x, 40, init=init)
  _assert_same(res, ref)
  for init_name in ("k-means++", "random"):
    r = fk.sharded_kmeans(jax.random.key(1), x, 40, init=init_name, mesh=_mesh(), max_iter=5)
    c = np.asarray(r.centroids)
    assert np.isfinite(c).all() and len(np.unique(c, axis=0)) == 40


def test_weights_and_farthest_empty_policy():
  rng = np.random.default_rng(3)
  x, _, _ = make_blobs(rng, 512, 8, 6, spread=8.0)
  w = rng.uniform(0.0, 2.0, size=512).astype(np.float32)
  w[::7] = 0.0
  # Two starting centroids far from all data: both clusters come out empty.
  init = np.concatenate([x[:4], np.full((2, 8), 1e3, np.float32)])
  mesh = _mesh()
  for empty in ("keep", "farthest"):
    res = fk.kmeans(jax.random.key(0), _shard(x, mesh), 6, init=jnp.asarray(init),
                    weights=_shard(w, mesh), empty=empty)
    ref = fk.kmeans(jax.random.key(0), x, 6, init=jnp.asarray(init), weights=jnp.asarray(w),
                    empty=empty)
    _assert_same(res, ref)
  assert np.abs(np.asarray(res.centroids)).max() < 100  # relocated under "farthest"


def test_cosine_metric_and_bfloat16():
  x, _, _ = make_blobs(np.random.default_rng(4), 800, 16, 8, spread=5.0)
  init = jnp.asarray(x[:8])
  mesh = _mesh()
  res = fk.kmeans(jax.random.key(0), _shard(x, mesh), 8, init=init, metric="cosine")
  ref = fk.kmeans(jax.random.key(0), x, 8, init=init, metric="cosine")
  _assert_same(res, ref)
  xb = jnp.asarray(x, jnp.bfloat16)
  res = fk.kmeans(jax.random.key(0), jax.device_put(xb, NamedSharding(mesh, P("data"))), 8,
                  init=init, max_iter=20)
  ref = fk.kmeans(jax.random.key(0), xb, 8, init=init, max_iter=20)
  assert res.centroids.dtype == jnp.bfloat16
  _assert_same(res, ref, rtol=1e-2, atol=1e-2)


def test_two_dimensional_mesh_with_replicas(blobs):
  """Points split over ('a', 'b') of a 2x4 mesh, and over 'a' only (each
  shard then replicated over 'b')."""
  x, _, _ = blobs
  init = jnp.asarray(x[:10])
  ref = fk.kmeans(jax.random.key(0), x, 10, init=init)
  mesh = Mesh(np.asarray(jax.devices()).reshape(2, 4), ("a", "b"))
  for spec in ((("a", "b"),), ("a",)):
    res = fk.kmeans(jax.random.key(0), _shard(x, mesh, spec), 10, init=init)
    _assert_same(res, ref)


def test_n_init_and_verbose(blobs, capsys):
  x, _, _ = blobs
  xs = _shard(x, _mesh())
  res = fk.kmeans(jax.random.key(5), xs, 10, n_init=3, max_iter=4, verbose=True)
  jax.effects_barrier()
  out = capsys.readouterr().out
  assert res.labels.shape == (1024,) and np.isfinite(float(res.inertia))
  # One line per iteration (device 0 prints), not one per device.
  assert out.count("(sharded)") == int(res.n_iter) * 3


def test_draws_follow_the_global_distribution():
  """The sharded proportional draw picks point i with probability w_i / sum w:
  the first k-means++ seed (k=1) of sharded_init_kmeans_plusplus, over many
  keys (one vmapped call), where point i is the row [i]."""
  mesh = _mesh()
  rng = np.random.default_rng(6)
  w = rng.uniform(0, 1, size=64).astype(np.float32) ** 3
  w[8:16] = 0.0  # one whole shard without mass
  w[40] = 0.0
  x = np.arange(64, dtype=np.float32)[:, None]
  draws = 40000
  keys = jax.random.split(jax.random.key(7), draws)
  seeds = jax.vmap(lambda key: fk.sharded_init_kmeans_plusplus(key, x, 1, weights=w,
                                                               mesh=mesh))(keys)
  picks = np.asarray(seeds[:, 0, 0]).astype(np.int64)
  np.testing.assert_array_equal(picks, np.asarray(seeds[:, 0, 0]))  # rows, not blends
  freq = np.bincount(picks, minlength=64) / draws
  p = w / w.sum()
  assert freq[w == 0].sum() == 0
  np.testing.assert_allclose(freq, p, atol=5 * np.sqrt(p.max() / draws))


def test_sharded_kmeans_plusplus_quality():
  x, centers, _ = make_blobs(np.random.default_rng(8), 2000, 8, 12, spread=20.0, std=0.5)
  mesh = _mesh()
  xs = _shard(x, mesh)
  seeds = np.asarray(fk.sharded_init_kmeans_plusplus(jax.random.key(0), xs, 12))
  nearest = ((seeds[:, None, :] - centers[None]) ** 2).sum(-1).argmin(1)
  assert sorted(nearest) == list(range(12))  # every true cluster got a seed
  res = fk.kmeans(jax.random.key(0), xs, 12)
  ref = fk.kmeans(jax.random.key(0), x, 12)
  assert float(res.inertia) <= 1.05 * float(ref.inertia)


def test_psum_sums_and_single_process_allreduce():
  mesh = _mesh()
  s = np.arange(8 * 3 * 2, dtype=np.float32).reshape(8, 3, 2)
  c = np.arange(8 * 3, dtype=np.float32).reshape(8, 3)
  f = jax.jit(jax.shard_map(lambda s, c: fk.psum_sums(s[0], c[0], "data"), mesh=mesh,
                            in_specs=(P("data"), P("data")), out_specs=(P(), P()),
                            check_vma=False))
  ts, tc = f(_shard(s, mesh), _shard(c, mesh))
  np.testing.assert_allclose(np.asarray(ts), s.sum(0))
  np.testing.assert_allclose(np.asarray(tc), c.sum(0))
  rs, rc = fk.allreduce_sums(s[0], c[0])  # one process: the identity
  np.testing.assert_array_equal(np.asarray(rs), s[0])
  np.testing.assert_array_equal(np.asarray(rc), c[0])


def test_tol_zero_stops_at_a_fixed_point(blobs):
  x, _, _ = blobs
  res = fk.kmeans(jax.random.key(0), _shard(x, _mesh()), 10, init=jnp.asarray(x[:10]),
                  tol=0.0, max_iter=200)
  assert bool(res.converged) and int(res.n_iter) < 200


def _free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def test_two_processes_jax_distributed():
  """2 processes x 2 CPU devices, joined over loopback (gloo collectives);
  each holds half of the rows. Both must report the centroids of a
  single-process run."""
  from tests import multiprocess_worker
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  env = dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""),
             JAX_PLATFORMS="cpu")
  env.pop("XLA_FLAGS", None)
  port = _free_port()
  procs = [subprocess.Popen([sys.executable, "-m", "tests.multiprocess_worker", str(port), "2",
                             str(i)], cwd=root, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True) for i in range(2)]
  outs = []
  try:
    for p in procs:
      out, err = p.communicate(timeout=120)
      assert p.returncode == 0, err[-3000:]
      outs.append(json.loads([l for l in out.splitlines() if l.startswith("RESULT ")][0][7:]))
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
  a, b = outs
  assert a["n_devices"] == 4 and a["n_local"] == 2
  x, init, k = multiprocess_worker.problem()
  ref = fk.kmeans(jax.random.key(0), x, k, init=jnp.asarray(init), max_iter=100)
  for r in (a, b):
    np.testing.assert_array_equal(np.asarray(r["labels"]), np.asarray(ref.labels))
    np.testing.assert_allclose(np.asarray(r["centroids"]), np.asarray(ref.centroids),
                               rtol=1e-5, atol=1e-4)
    assert r["n_iter"] == int(ref.n_iter)
    np.testing.assert_allclose(r["pp_inertia"], a["pp_inertia"], rtol=0)
  assert a["centroids"] == b["centroids"]  # bit-identical on both processes
  ref_sums, ref_counts = fk.cluster_sums(x, ref.labels, k)
  for r in (a, b):
    np.testing.assert_allclose(np.asarray(r["sums"]), np.asarray(ref_sums), rtol=1e-5,
                               atol=1e-3)
    np.testing.assert_array_equal(np.asarray(r["counts"]), np.asarray(ref_counts))


def test_explicit_axis_mesh_from_make_mesh(blobs):
  """jax.make_mesh gives Explicit axes in jax 0.11; the path works with them too."""
  x, _, _ = blobs
  mesh = jax.make_mesh((8,), ("data",))
  init = jnp.asarray(x[:10])
  res = fk.kmeans(jax.random.key(0), jax.device_put(x, NamedSharding(mesh, P("data"))), 10,
                  init=init)
  _assert_same(res, fk.kmeans(jax.random.key(0), x, 10, init=init))
