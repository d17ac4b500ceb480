"""vmap of the public ``kmeans`` against ``batched_kmeans`` (GPU), per Lloyd
iteration, on the batched rows of the grid.

    python benchmarks/bench_batched.py --out bench_batched.json
"""

from __future__ import annotations

import argparse
import json
import sys

import jax
import jax.numpy as jnp

sys.path.insert(0, __file__.rsplit("/", 2)[0])
import flashkmeans_jax as fk  # noqa: E402
from benchmarks.run_suite import BATCHED, _median_run  # noqa: E402


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--dtype", default="float16")
  ap.add_argument("--out", default="bench_batched.json")
  args = ap.parse_args()
  rows = []
  key = jax.random.key(0)
  for (b, n, k, d) in BATCHED:
    x = jax.random.normal(jax.random.key(1), (b, n, d), jnp.dtype(args.dtype))
    c = x[:, :k, :]
    keys = jax.random.split(key, b)

    def batched(iters):
      jax.block_until_ready(fk.batched_kmeans(key, x, k, init=c, max_iter=iters, tol=0.0,
                                              check_finite=False))

    vm = {}

    def vmapped(iters):
      if iters not in vm:
        vm[iters] = jax.jit(jax.vmap(
            lambda kk, xx, cc: fk.kmeans(kk, xx, k, init=cc, max_iter=iters, tol=0.0,
                                         check_finite=False)))
      jax.block_until_ready(vm[iters](keys, x, c))

    rec = dict(B=b, N=n, K=k, D=d, dtype=args.dtype)
    for name, run in (("batched_ms", batched), ("vmap_ms", vmapped)):
      run(2)
      run(12)
      t1 = _median_run(lambda: run(2), 5)
      t2 = _median_run(lambda: run(12), 5)
      rec[name] = (t2 - t1) * 1e3 / 10
    rec["vmap_over_batched"] = rec["vmap_ms"] / rec["batched_ms"]
    rows.append(rec)
    print(json.dumps(rec), flush=True)
  with open(args.out, "w") as fh:
    json.dump(rows, fh, indent=1)


if __name__ == "__main__":
  main()
