"""Fused top-k assignment (``fk.assign_topk``) against ``fk.assign`` (GPU).

    python benchmarks/bench_topk.py [--out topk.json] [--n 1048576] [--cap-s 120] [--sweep]
    python benchmarks/bench_topk.py --tiny      # CPU check of the script (interpret mode)

Issue 21's target: at K=65536, D=128, k=8 the top-k costs at most 1.5x the
assignment. Per dtype (float16, bfloat16, float32 at the default precision)
the same points ``x [N, 128]`` and centroids ``[65536, 128]`` (the first K
points plus 0.01); ``fk.assign`` once, then ``fk.assign_topk`` for k in
{1, 4, 8, 16, 32}: median ms (``harness.median_ms``: synchronised, warm) and
the ratio to ``assign``; ``labels_equal`` is the fraction of points whose
first top-k column is ``assign``'s label. ``--sweep`` adds, for k=8, a few
tilings of the kernel (through ``flashkmeans_jax.ops.assign_topk.config``,
the one name outside the public API here) so the table can be tuned.

A row whose estimated time (its FLOPs at the assignment's rate, times 3 for
the top-k) is over ``--cap-s`` is skipped with a note; one whose first call
already took longer than the cap is recorded with that time only. One JSON
file: ``topk_<card>_<date>.json``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks import harness  # noqa: E402
import flashkmeans_jax as fk  # noqa: E402
from flashkmeans_jax.ops.assign_topk import config as topk_config  # noqa: E402

KS = (1, 4, 8, 16, 32)
SWEEP = [dict(block_n=bn, block_k=bk, num_warps=w, num_stages=s)
         for bn, bk, w, s in [(128, 128, 4, 2), (64, 128, 4, 2), (128, 64, 4, 2),
                              (128, 128, 8, 3), (64, 64, 4, 3), (256, 64, 8, 3)]]


def timed(fn, x, c, cap_s, tiny):
  """(median ms, note): the first call's time stands in when it exceeds the cap."""
  t0 = time.perf_counter()
  jax.block_until_ready(fn(x, c))
  first = time.perf_counter() - t0
  if cap_s is not None and first > cap_s:
    return first * 1e3, f"capped: first call {first:.1f} s > {cap_s:.0f} s"
  return harness.median_ms(fn, x, c, reps=2 if tiny else 7, inner=1 if tiny else 3), None


def main():
  ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  ap.add_argument("--out", default=None, help="default: topk_<card>_<date>.json")
  ap.add_argument("--n", type=int, default=1 << 20, help="points (default 2^20)")
  ap.add_argument("--k-centroids", type=int, default=65536)
  ap.add_argument("--d", type=int, default=128)
  ap.add_argument("--dtypes", default="float16,bfloat16,float32")
  ap.add_argument("--cap-s", type=float, default=120.0, help="per-row time cap")
  ap.add_argument("--sweep", action="store_true", help="also a tile sweep at k=8")
  ap.add_argument("--tiny", action="store_true", help="tiny shapes, interpret mode (CPU)")
  args = ap.parse_args()
  n, kk, d = (4096, 256, 32) if args.tiny else (args.n, args.k_centroids, args.d)
  impl = "pallas_interpret" if args.tiny else "pallas"
  out = harness.Results(args.out or harness.result_name("topk" + ("-tiny" if args.tiny else "")),
                        official=False, N=n, K=kk, D=d, impl=impl)
  for dtype in args.dtypes.split(","):
    x = harness.normal(1, (n, d), dtype)
    c = (x[:kk].astype(jnp.float32) + 0.01).astype(dtype)  # no zero distances
    flops = 2.0 * n * kk * d
    base = dict(dtype=dtype, N=n, K=kk, D=d)
    note = harness.over_cap(harness.estimated_s(flops, dtype) * 3, args.cap_s)
    if note and not args.tiny:
      out.add(base | {"note": note})
      continue
    assign = jax.jit(lambda x, c: fk.assign(x, c, impl=impl, check_finite=False))
    assign_ms, assign_note = timed(assign, x, c, args.cap_s, args.tiny)
    labels = np.asarray(assign(x, c)[0])
    out.add(base | {"what": "assign", "ms": assign_ms, "note": assign_note,
                    "tflops": flops / assign_ms / 1e9})
    for k in KS:
      cfgs = [None] + ([topk_config.TopKConfig(**s) for s in SWEEP]
                       if args.sweep and k == 8 and not args.tiny else [])
      for cfg in cfgs:
        fn = jax.jit(lambda x, c, k=k, cfg=cfg: fk.assign_topk(
            x, c, k, impl=impl, config=cfg, check_finite=False))
        try:
          ms, row_note = timed(fn, x, c, args.cap_s, args.tiny)
        except Exception as e:  # a tiling that does not compile: recorded, not fatal
          out.add(base | {"what": "assign_topk", "k": k, "config": str(cfg),
                          "error": f"{type(e).__name__}: {str(e)[:300]}"})
          continue
        first = np.asarray(fn(x, c)[0][:, 0])
        out.add(base | {"what": "assign_topk", "k": k,
                        "config": "default" if cfg is None else str(cfg), "ms": ms,
                        "ratio_to_assign": ms / assign_ms, "note": row_note,
                        "labels_equal": float(np.mean(first == labels))})
  print("wrote", out.path)


if __name__ == "__main__":
  main()
