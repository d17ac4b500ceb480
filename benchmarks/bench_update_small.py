"""The cluster sums of few clusters of few features (GPU): the dense one-hot
kernel against the sort-inverse one, update alone, to place the rule of
``flashkmeans_jax.ops.cluster_sums.config.update_config``.

    python benchmarks/bench_update_small.py --out update-small.json [--cap-s 90] [--tiny]

Per shape ``(B, N, K, D)`` (float32 points, sample weights, labels uniform
over the K clusters, ``fk.cluster_sums`` vmapped over the batch): the
sort-inverse kernel (``UpdateConfig()``), the dense kernel with its default
tiles and a small sweep of them, and the library's default (whichever the
rule picks). Each figure is a median of ``harness.median_ms``; the sums of
every variant are checked against the sort-inverse ones (float32 rounding
apart: same labels, a different order of addition).
"""

from __future__ import annotations

import argparse
import itertools
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

# The quantisation rows of the suite, then a K x D grid at B * N = 2^24.
QUANT = [(2048, 8192, 16, 1), (1, 1 << 21, 256, 4), (512, 4096, 256, 2), (4096, 2048, 8, 1),
         (256, 4096, 256, 8), (16, 65536, 4096, 1)]
GRID = [(256, 65536, k, d) for k in (16, 64, 256, 1024) for d in (1, 4, 8)]
TINY = [(4, 512, 16, 1), (2, 1000, 40, 3)]


def sweep(tiny: bool):
  if tiny:
    yield fk.UpdateConfig(dense=True, dense_rows=256, dense_sub_rows=64, dense_block_k=16,
                          num_warps=4)
    return
  for rows, sub, bk, nw in itertools.product((1024, 4096), (32, 64, 128), (16, 32, 64), (4, 8)):
    if sub * bk > 4096 or sub * bk < 1024 or sub > rows:
      continue
    yield fk.UpdateConfig(dense=True, dense_rows=rows, dense_sub_rows=sub, dense_block_k=bk,
                          num_warps=nw)


def shape_row(b, n, k, d, cap_s, tiny, with_sweep):
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(b, n, d)), jnp.float32)
  labels = jnp.asarray(rng.integers(0, k, (b, n)), jnp.int32)
  w = jnp.asarray(rng.random((b, n)), jnp.float32)
  impl = "pallas_interpret" if tiny else "pallas"
  reps, inner = (2, 1) if tiny else (5, 5)

  def fn(cfg):
    return jax.jit(jax.vmap(lambda xb, lb, wb: fk.cluster_sums(
        xb, lb, k, weights=wb, impl=impl, config=cfg)))

  rec = dict(B=b, N=n, K=k, D=d, dtype="float32", weighted=True)
  start = time.perf_counter()
  sorted_fn = fn(fk.UpdateConfig())
  want = sorted_fn(x, labels, w)
  rec["sorted_ms"] = harness.median_ms(sorted_fn, x, labels, w, reps=reps, inner=inner)
  default_fn = fn(None)
  rec["default_ms"] = harness.median_ms(default_fn, x, labels, w, reps=reps, inner=inner)
  dense_default = fk.UpdateConfig(dense=True, num_warps=4)
  cfgs = [dense_default] + (list(sweep(tiny)) if with_sweep else [])
  out, best = [], None
  for cfg in cfgs:
    if cap_s is not None and time.perf_counter() - start > cap_s:
      out.append("capped")
      break
    try:
      f = fn(cfg)
      got = f(x, labels, w)
      err = float(jnp.max(jnp.abs(got[0] - want[0]) / (1.0 + jnp.abs(want[0]))))
      ms = harness.median_ms(f, x, labels, w, reps=reps, inner=inner)
    except Exception as e:  # noqa: BLE001 -- a tiling that fails is a result
      out.append(dict(config=str(cfg), error=repr(e)[:300]))
      continue
    out.append(dict(config=str(cfg), ms=ms, max_rel_diff_vs_sorted=err))
    if best is None or ms < best[1]:
      best = (str(cfg), ms)
  rec["dense_default_ms"] = out[0]["ms"] if isinstance(out[0], dict) and "ms" in out[0] else None
  rec["dense"] = out
  if best:
    rec["best_dense"], rec["best_dense_ms"] = best
  rec["seconds"] = time.perf_counter() - start
  return rec


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--out", default=None)
  ap.add_argument("--cap-s", type=float, default=60.0, help="per-shape cap on the sweep")
  ap.add_argument("--budget-s", type=float, default=None, help="stop starting shapes after this")
  ap.add_argument("--no-sweep-grid", action="store_true", help="sweep the quant rows only")
  ap.add_argument("--tiny", action="store_true", help="tiny shapes, interpret mode (CPU check)")
  args = ap.parse_args(argv)
  shapes = [(s, True) for s in (TINY if args.tiny else QUANT)]
  if not args.tiny:
    shapes += [(s, not args.no_sweep_grid) for s in GRID]
  out = args.out or harness.result_name("update-small", "float32")
  result = dict(versions=harness.versions(official=False), card=harness.card(), rows=[])
  t0 = time.perf_counter()
  for shape, with_sweep in shapes:
    if args.budget_s is not None and time.perf_counter() - t0 > args.budget_s:
      result["rows"].append(dict(shape=shape, skipped="budget"))
      continue
    rec = shape_row(*shape, args.cap_s, args.tiny, with_sweep)
    print(json.dumps({k: v for k, v in rec.items() if k != "dense"}), flush=True)
    result["rows"].append(rec)
    with open(out, "w") as f:
      json.dump(result, f, indent=1)
  print("wrote", out)


if __name__ == "__main__":
  main()
