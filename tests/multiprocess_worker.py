"""One process of the 2-process CPU test in ``tests/test_distributed.py``.

Usage: ``python -m tests.multiprocess_worker PORT NUM_PROCESSES PROCESS_ID``.
Each process forces 2 host CPU devices, joins the others over loopback with
``jax.distributed.initialize`` (gloo CPU collectives), builds the global
array from its own contiguous block of rows with
``jax.make_array_from_process_local_data`` and runs ``kmeans`` (auto-dispatch
to the data-parallel path) and ``allreduce_sums``; it prints one JSON line
starting with ``RESULT``.
"""

import json
import os
import sys

os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import numpy as np  # noqa: E402


def problem():
  """The data every process (and the parent test) builds identically."""
  rng = np.random.default_rng(123)
  n, d, k = 1000, 8, 6
  centers = rng.normal(size=(k, d)) * 10.0
  x = (centers[rng.integers(0, k, size=n)] + rng.normal(size=(n, d))).astype(np.float32)
  return x, x[:k].copy(), k


def main():
  port, nproc, pid = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(coordinator_address=f"127.0.0.1:{port}", num_processes=nproc,
                             process_id=pid, initialization_timeout=60)
  from jax.sharding import NamedSharding, PartitionSpec as P
  import flashkmeans_jax as fk
  from flashkmeans_jax.api import sharded
  from jax.experimental import multihost_utils

  x, init, k = problem()
  n = x.shape[0]
  mesh = sharded.data_mesh()
  rows = n // nproc
  local = x[pid * rows:(pid + 1) * rows]
  gx = jax.make_array_from_process_local_data(NamedSharding(mesh, P("data", None)), local)
  assert gx.shape == x.shape and not gx.is_fully_addressable
  res = fk.kmeans(jax.random.key(0), gx, k, init=init, max_iter=100)
  labels = multihost_utils.process_allgather(res.labels, tiled=True)
  pp = fk.sharded_kmeans(jax.random.key(1), gx, k, init="k-means++")
  # Streaming-style combiner: each process sums its own rows per cluster.
  lab_local = np.asarray(labels)[pid * rows:(pid + 1) * rows]
  s_loc = np.zeros((k, x.shape[1]), np.float32)
  np.add.at(s_loc, lab_local, local)
  c_loc = np.bincount(lab_local, minlength=k).astype(np.float32)
  s_all, c_all = fk.allreduce_sums(s_loc, c_loc)
  out = dict(pid=pid, n_devices=jax.device_count(), n_local=jax.local_device_count(),
             centroids=np.asarray(res.centroids).tolist(), n_iter=int(res.n_iter),
             inertia=float(res.inertia), labels=np.asarray(labels).tolist(),
             pp_inertia=float(pp.inertia), sums=np.asarray(s_all).tolist(),
             counts=np.asarray(c_all).tolist())
  print("RESULT " + json.dumps(out), flush=True)
  jax.distributed.shutdown()


if __name__ == "__main__":
  main()
