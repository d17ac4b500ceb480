"""The CPU path against scikit-learn (issue 18): whole ``fk.kmeans`` calls
with their defaults on the CPU backend, 10 Lloyd iterations from the same
initial centroids, against ``sklearn.cluster.KMeans(algorithm="lloyd")`` in
the same process.

    python benchmarks/bench_cpu.py [--rows all|quick] [--reps 3] [--cap-s 60] [--out f.json]

Per row ``(N, D, K)``: standard-normal float32 points, the first K as the
initial centroids, ``max_iter=10, tol=0`` for both (each run's iteration
count is recorded: a run that reaches a fixed point early is marked). Each
figure is the median of ``--reps`` calls after one warm-up call (ours is
compiled by then). Also ``fk.assign`` and ``fk.cluster_sums`` alone (jitted),
to show where an iteration goes. ``--cap-s``: a row whose warm-up call took
longer than this is skipped (recorded as ``"capped"``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks import harness  # noqa: E402
import flashkmeans_jax as fk  # noqa: E402

# N from 10^4 to 10^6, D from 2 to 256, K from 8 to 4096.
ROWS = [(10_000, 2, 8), (100_000, 2, 8), (1_000_000, 2, 8), (1_000_000, 8, 16),
        (200_000, 32, 64), (100_000, 64, 256), (100_000, 16, 1024), (50_000, 128, 1024),
        (10_000, 256, 4096), (20_000, 256, 4096)]
QUICK = [(100_000, 64, 256), (200_000, 32, 64), (50_000, 128, 1024)]
ITERS = 10


def row(n, d, k, reps, cap_s):
  from sklearn.cluster import KMeans
  rng = np.random.default_rng(0)
  x = rng.normal(size=(n, d)).astype(np.float32)
  init = x[:k].copy()
  xj, ij = jnp.asarray(x), jnp.asarray(init)
  rec = dict(N=n, D=d, K=k, iters=ITERS)

  def ours():
    r = fk.kmeans(jax.random.key(0), xj, k, init=ij, max_iter=ITERS, tol=0.0)
    jax.block_until_ready(r.centroids)
    return r

  t = time.perf_counter()
  r = ours()
  rec["ours_first_call_s"] = time.perf_counter() - t
  if cap_s is not None and rec["ours_first_call_s"] > cap_s:
    rec["ours_s"] = "capped"
    return rec
  rec["ours_n_iter"] = int(r.n_iter)
  rec["ours_s"] = harness.median_s(ours, reps)

  km = KMeans(k, init=init, n_init=1, max_iter=ITERS, tol=0.0, algorithm="lloyd")
  km.fit(x)
  rec["sklearn_n_iter"] = int(km.n_iter_)
  rec["sklearn_s"] = harness.median_s(lambda: km.fit(x), reps)
  rec["sklearn_over_ours"] = rec["sklearn_s"] / rec["ours_s"]

  assign = jax.jit(lambda x, c: fk.assign(x, c, check_finite=False))
  labels = assign(xj, ij)[0]
  sums = jax.jit(lambda x, l: fk.cluster_sums(x, l, k))
  rec["assign_ms"] = 1e3 * harness.median_s(lambda: jax.block_until_ready(assign(xj, ij)), reps)
  rec["cluster_sums_ms"] = 1e3 * harness.median_s(
      lambda: jax.block_until_ready(sums(xj, labels)), reps)
  rec["assign_gflops"] = 2e-9 * n * k * d / (rec["assign_ms"] / 1e3)
  return rec


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--rows", default="all", choices=["all", "quick"])
  ap.add_argument("--reps", type=int, default=3)
  ap.add_argument("--cap-s", type=float, default=60.0)
  ap.add_argument("--out", default=None)
  args = ap.parse_args(argv)
  import sklearn
  out = args.out or harness.result_name("cpu-vs-sklearn", "float32", "cpu")
  result = dict(meta=dict(versions=harness.versions(official=False), sklearn=sklearn.__version__,
                          cpus=os.cpu_count(), backend=jax.default_backend(),
                          date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())), rows=[])
  for n, d, k in (ROWS if args.rows == "all" else QUICK):
    rec = row(n, d, k, args.reps, args.cap_s)
    print(json.dumps(rec), flush=True)
    result["rows"].append(rec)
    with open(out, "w") as f:
      json.dump(result, f, indent=1)
  print("| N, D, K | ours s | scikit-learn s | scikit-learn / ours | assign ms | cluster sums ms |")
  print("|---|---|---|---|---|---|")
  for r in result["rows"]:
    if r["ours_s"] == "capped":
      print(f"| {r['N']}, {r['D']}, {r['K']} | capped | | | | |")
      continue
    print(f"| {r['N']}, {r['D']}, {r['K']} | {r['ours_s']:.3f} | {r['sklearn_s']:.3f} | "
          f"{r['sklearn_over_ours']:.2f} | {r['assign_ms']:.1f} | {r['cluster_sums_ms']:.1f} |")
  print("wrote", out)


if __name__ == "__main__":
  main()
