"""vmap of the public ``kmeans`` against ``batched_kmeans`` (GPU), per Lloyd
iteration (the marginal iteration of :mod:`benchmarks.harness`), on the
batched rows of the grid.

    python benchmarks/bench_batched.py      # batched-vmap_<dtype>_<card>_<date>.json
"""

from __future__ import annotations

import argparse
import os
import sys

import jax

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks import harness  # noqa: E402
import flashkmeans_jax as fk  # noqa: E402


def vmapped_runner(x, c, k):
  """``run(iters)``: ``jax.jit(jax.vmap(fk.kmeans))`` over the members."""
  keys = jax.random.split(jax.random.key(0), x.shape[0])
  compiled = {}

  def run(iters):
    if iters not in compiled:
      compiled[iters] = jax.jit(jax.vmap(lambda kk, xx, cc: fk.kmeans(
          kk, xx, k, init=cc, max_iter=iters, tol=0.0, check_finite=False)))
    jax.block_until_ready(compiled[iters](keys, x, c))
  return run


def main():
  ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  ap.add_argument("--dtype", default="float16")
  ap.add_argument("--out", default=None, help="default: batched-vmap_<dtype>_<card>_<date>.json")
  args = ap.parse_args()
  out = harness.Results(args.out or harness.result_name("batched-vmap", args.dtype),
                        dtype=args.dtype)
  for (b, n, k, d) in harness.GRID["batched"]:
    x, c = harness.grid_problem(b, n, k, d, args.dtype)
    rec = dict(B=b, N=n, K=k, D=d, dtype=args.dtype)
    for label, run in (("batched_ms", harness.lloyd_runner(x, c, k, check_finite=False)),
                       ("vmap_ms", vmapped_runner(x, c, k))):
      rec[label] = harness.marginal_ms(run, 2, 12, reps=5)
    rec["vmap_over_batched"] = rec["vmap_ms"] / rec["batched_ms"]
    out.add(rec)
  print(f"wrote {out.path}", flush=True)


if __name__ == "__main__":
  main()
