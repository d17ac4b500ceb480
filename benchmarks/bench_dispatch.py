"""XLA path against the Pallas kernels where the default picks XLA (GPU).

    python benchmarks/bench_dispatch.py --out dispatch.json

For batched problems whose members are small (N*K < 2^22 per member), times
``batched_kmeans`` with ``impl="xla"`` and ``impl="pallas"`` over batch sizes,
with the suite's method (fixed iterations, difference of a long and a short
run), to place the threshold of ``flashkmeans_jax._dispatch``.
"""

from __future__ import annotations

import argparse
import json
import sys

import jax
import jax.numpy as jnp

sys.path.insert(0, __file__.rsplit("/", 2)[0])
from benchmarks import run_suite  # noqa: E402


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--out", default="dispatch.json")
  args = ap.parse_args()
  rows = []
  for dtype in ("float16", "bfloat16"):
    # (Small N with large K reaches a fixed point within the timed iterations,
    # which the fixed-iteration method refuses, so K stays small here.)
    for b, n, k in ((1, 16384, 100), (8, 16384, 100), (32, 16384, 100), (128, 16384, 100),
                    (1, 65536, 32)):
      x = jax.random.normal(jax.random.key(1), (b, n, 128), jnp.dtype(dtype))
      c = x[:, :k, :]
      rec = dict(B=b, N=n, K=k, D=128, dtype=dtype)
      for impl in ("xla", "pallas"):
        rec[impl + "_ms"] = run_suite.per_iter_ms(run_suite.ours(x, c, k, impl), 2, 12, reps=5)
      rec["pallas_over_xla"] = rec["pallas_ms"] / rec["xla_ms"]
      print(json.dumps(rec), flush=True)
      rows.append(rec)
      with open(args.out, "w") as f:
        json.dump(rows, f, indent=1)


if __name__ == "__main__":
  main()
