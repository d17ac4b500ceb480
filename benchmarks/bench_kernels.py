"""Kernel-level timings and tile sweeps (GPU): the assignment and the cluster
sums against XLA and the official flash-kmeans kernels on the same card.

    python benchmarks/bench_kernels.py [--sweep] [--update-sweep] [--big]

Everything goes through the public ops: ``fk.assign`` (``impl="pallas"``, a
tiling as ``config=fk.AssignConfig(...)``, ``precision=``) and
``fk.cluster_sums`` (``config=fk.UpdateConfig(...)``). The update's internal
pieces (label sort, work list, gather kernel) have no public entry and are
measured only inside the whole ``cluster_sums`` call. Prints one JSON line per
measurement and writes all of them (default name
``kernels_<dtype>_<card>_<date>.json``).
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
import time

import jax
import jax.numpy as jnp

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks import harness  # noqa: E402
import flashkmeans_jax as fk  # noqa: E402

SHAPES = [  # (N, K, D)
    (1 << 20, 1024, 128),
    (1 << 18, 8192, 128),
    (1 << 20, 1024, 64),
    (1 << 20, 1024, 256),
    (1 << 20, 4096, 512),
    (1 << 20, 1000, 96),
]


def padded_d(d: int) -> int:
  """Feature width the kernels work on: the next power of two, at least 16."""
  return max(16, 1 << (d - 1).bit_length())


def assign_fn(impl=None, config=None, precision=None):
  return jax.jit(lambda x, c: fk.assign(x, c, impl=impl, config=config, precision=precision))


def sums_fn(k, impl=None, config=None):
  return jax.jit(lambda x, l: fk.cluster_sums(x, l, k, impl=impl, config=config))


def official_kernels():
  try:
    import torch
    from flash_kmeans.assign_euclid_triton import euclid_assign_triton
    from flash_kmeans.centroid_update_triton import triton_centroid_update_sorted_euclid
    return torch, euclid_assign_triton, triton_centroid_update_sorted_euclid
  except Exception as e:  # noqa: BLE001
    print("official flash-kmeans unavailable:", repr(e)[:200])
    return None


def sweep_configs(d):
  dp = padded_d(d)
  for bn, bk, w, s in itertools.product((64, 128, 256), (32, 64, 128), (4, 8), (2, 3)):
    if bn == 256 and w == 4:
      continue
    for bd in sorted({dp, min(dp, 128)} if dp > 256 else {dp}):
      yield fk.AssignConfig(block_n=bn, block_k=bk, block_d=bd, num_warps=w, num_stages=s)


def update_sweep(n, k, d, dtype, out):
  """The whole sort-inverse update over kernel configurations, and XLA's."""
  x, _, labels = harness.points_centroids_labels(n, k, d, dtype, seed=1)
  out.add(dict(kind="update_pieces", n=n, k=k, d=d, dtype=jnp.dtype(dtype).name,
               pallas_default_ms=harness.median_ms(sums_fn(k, "pallas"), x, labels),
               xla_ms=harness.median_ms(sums_fn(k, "xla"), x, labels)))
  dp = padded_d(d)
  for rpi, br, bd, nw in itertools.product((256, 512, 1024), (32, 64),
                                           sorted({min(dp, 64), min(dp, 128)}), (4, 8)):
    cfg = fk.UpdateConfig(rows_per_item=rpi, block_rows=br, block_d=bd, num_warps=nw,
                          num_stages=2)
    try:
      ms = harness.median_ms(sums_fn(k, "pallas", cfg), x, labels, reps=3, inner=3, warmup=1)
    except Exception as e:  # noqa: BLE001
      ms = None
      print("update cfg failed", cfg, repr(e)[:200])
    out.add(dict(n=n, k=k, d=d, kind="update_sweep", cfg=str(cfg), total_ms=ms))


def big_assign(out):
  """N=2^22, K=65536, D=128 float16: runs, and peak memory stays O(data)."""
  n, k, d = 1 << 22, 65536, 128
  x, c, _ = harness.points_centroids_labels(n, k, d, jnp.float16)
  jax.block_until_ready((x, c))
  base = harness.peak_bytes()
  ms = harness.median_ms(assign_fn("pallas"), x, c, reps=3, inner=1, warmup=1)
  rec = dict(kind="big_assign", n=n, k=k, d=d, ms=ms, tflops=2.0 * n * k * d / ms / 1e9,
             data_bytes=x.nbytes + c.nbytes, peak_bytes=harness.peak_bytes(),
             peak_before=base, nk_matrix_bytes=4 * n * k)
  try:  # the XLA path at this size (it tiles; the dense N x K formulation cannot run)
    rec["xla_ms"] = harness.median_ms(assign_fn("xla"), x, c, reps=1, inner=1, warmup=1)
  except Exception as e:  # noqa: BLE001
    rec["xla_error"] = repr(e)[:160]
  out.add(rec)


def compare_shape(n, k, d, dtype_name, off, out, sweep):
  dtype = jnp.dtype(dtype_name)
  x, c, labels = harness.points_centroids_labels(n, k, d, dtype)
  flops = 2.0 * n * k * d
  rec = dict(n=n, k=k, d=d, dtype=dtype_name)
  rec["pallas_assign_ms"] = harness.median_ms(assign_fn("pallas"), x, c)
  if dtype == jnp.float32:
    rec["pallas_assign_exact_ms"] = harness.median_ms(assign_fn("pallas", precision="highest"),
                                                      x, c)
  try:
    rec["xla_assign_ms"] = harness.median_ms(assign_fn("xla"), x, c)
  except Exception as e:  # noqa: BLE001
    rec["xla_assign_ms"] = None
    print("xla assign failed", repr(e)[:200])
  rec["pallas_update_ms"] = harness.median_ms(sums_fn(k, "pallas"), x, labels)
  rec["xla_update_ms"] = harness.median_ms(sums_fn(k, "xla"), x, labels)
  if off is not None:
    torch, oa, ou = off
    tdt = {"float16": torch.float16, "bfloat16": torch.bfloat16,
           "float32": torch.float32}[dtype_name]
    xt = torch.randn(1, n, d, device="cuda", dtype=tdt)
    ct = torch.randn(1, k, d, device="cuda", dtype=tdt)
    xsq = (xt.float() ** 2).sum(-1)
    try:
      rec["official_assign_ms"] = harness.median_ms_torch(lambda: oa(xt, ct, xsq))
      ids = torch.randint(0, k, (1, n), device="cuda", dtype=torch.int32)
      rec["official_update_ms"] = harness.median_ms_torch(lambda: ou(xt, ids, ct))
    except Exception as e:  # noqa: BLE001
      print("official failed", repr(e)[:300])
    del xt, ct, xsq
  rec["pallas_assign_tflops"] = flops / rec["pallas_assign_ms"] / 1e9
  out.add(rec)
  if not sweep:
    return
  best = None
  for cfg in sweep_configs(d):
    t0 = time.time()
    r = dict(n=n, k=k, d=d, dtype=dtype_name, sweep=str(cfg))
    try:
      r["ms"] = harness.median_ms(assign_fn("pallas", cfg), x, c, reps=3, inner=3, warmup=1)
    except Exception as e:  # noqa: BLE001
      r["ms"], r["error"] = None, repr(e)[:120]
    r["wall_s"] = round(time.time() - t0, 1)
    out.add(r)
    if r["ms"] is not None and (best is None or r["ms"] < best[0]):
      best = (r["ms"], str(cfg))
  out.add(dict(kind="assign_best", n=n, k=k, d=d, dtype=dtype_name, best=best))


def main():
  ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  ap.add_argument("--out", default=None, help="default: kernels_<dtype>_<card>_<date>.json")
  ap.add_argument("--sweep", action="store_true", help="sweep assign tile configs")
  ap.add_argument("--dtype", default="float16")
  ap.add_argument("--shapes", default="all", help="comma list of shape indices")
  ap.add_argument("--update-sweep", action="store_true")
  ap.add_argument("--big", action="store_true", help="N=2^22, K=65536 assign + peak memory")
  ap.add_argument("--no-main", action="store_true", help="skip the per-shape comparison")
  args = ap.parse_args()
  out = harness.Results(args.out or harness.result_name("kernels", args.dtype),
                        dtype=args.dtype)
  if args.update_sweep:
    update_sweep(1 << 20, 1024, 128, jnp.dtype(args.dtype), out)
  if args.big:
    big_assign(out)
  shapes = SHAPES if args.shapes == "all" else [SHAPES[int(i)] for i in args.shapes.split(",")]
  if not args.no_main:
    off = official_kernels()
    for (n, k, d) in shapes:
      compare_shape(n, k, d, args.dtype, off, out, args.sweep)
  print(f"wrote {out.path}", flush=True)


if __name__ == "__main__":
  main()
