"""XLA path against the Pallas kernels where the default picks XLA (GPU).

    python benchmarks/bench_dispatch.py     # dispatch_<card>_<date>.json

For batched problems whose members are small (N*K < 2^22 per member), times
``batched_kmeans`` with ``impl="xla"`` and ``impl="pallas"`` over batch sizes,
with the grid's method (fixed iterations, the marginal iteration of
:mod:`benchmarks.harness`), to place the threshold of the default dispatch.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks import harness  # noqa: E402

# (Small N with large K reaches a fixed point within the timed iterations,
# which the fixed-iteration method refuses, so K stays small here.)
ROWS = ((1, 16384, 100), (8, 16384, 100), (32, 16384, 100), (128, 16384, 100),
        (1, 65536, 32))


def main():
  ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  ap.add_argument("--out", default=None, help="default: dispatch_<card>_<date>.json")
  args = ap.parse_args()
  out = harness.Results(args.out or harness.result_name("dispatch"))
  for dtype in ("float16", "bfloat16"):
    for b, n, k in ROWS:
      x, c = harness.grid_problem(b, n, k, 128, dtype)
      rec = dict(B=b, N=n, K=k, D=128, dtype=dtype)
      for impl in ("xla", "pallas"):
        run = harness.lloyd_runner(x, c, k, impl=impl, check_finite=False)
        rec[impl + "_ms"] = harness.marginal_ms(run, 2, 12, reps=5)
      rec["pallas_over_xla"] = rec["pallas_ms"] / rec["xla_ms"]
      out.add(rec)
  print(f"wrote {out.path}", flush=True)


if __name__ == "__main__":
  main()
