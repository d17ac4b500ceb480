"""Kernel-level timings and tile sweeps (GPU): FlashAssign and the sort-inverse
update against XLA and the official flash-kmeans kernels on the same card.

    python benchmarks/bench_kernels.py --out results.json [--sweep]

Prints one line per measurement and writes all of them as JSON.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time

import jax
import jax.numpy as jnp

sys.path.insert(0, __file__.rsplit("/", 2)[0])
from benchmarks import _timing  # noqa: E402
from flashkmeans_jax import assignment, centroid_update  # noqa: E402
from flashkmeans_jax.kernels import config as cfgmod  # noqa: E402
from flashkmeans_jax.kernels import flash_assign, sorted_update  # noqa: E402

SHAPES = [  # (N, K, D)
    (1 << 20, 1024, 128),
    (1 << 18, 8192, 128),
    (1 << 20, 1024, 64),
    (1 << 20, 1024, 256),
    (1 << 20, 4096, 512),
    (1 << 20, 1000, 96),
]


def official_assign_update():
  try:
    import torch
    from flash_kmeans.assign_euclid_triton import euclid_assign_triton
    from flash_kmeans.centroid_update_triton import triton_centroid_update_sorted_euclid
    return torch, euclid_assign_triton, triton_centroid_update_sorted_euclid
  except Exception as e:  # noqa: BLE001
    print("official flash-kmeans unavailable:", repr(e)[:200])
    return None


def sweep_configs(d):
  dp = max(16, cfgmod.next_pow2(d))
  for bn, bk, w, s in itertools.product((64, 128, 256), (32, 64, 128), (4, 8), (2, 3)):
    if bn == 256 and w == 4:
      continue
    for bd in sorted({dp, min(dp, 128)} if dp > 256 else {dp}):
      yield cfgmod.AssignConfig(block_n=bn, block_k=bk, block_d=bd, num_warps=w, num_stages=s)


def update_sweep(n, k, d, dtype, rows):
  """Times the pieces of the sort-inverse update and a few kernel configs."""
  kx, kl = jax.random.split(jax.random.key(1))
  x = jax.random.normal(kx, (n, d), dtype)
  labels = jax.random.randint(kl, (n,), 0, k, jnp.int32)
  pieces = {
      "argsort_stable": jax.jit(lambda l: jnp.argsort(l)),
      "argsort_unstable": jax.jit(lambda l: jnp.argsort(l, stable=False)),
      "packed_sort": jax.jit(lambda l: sorted_update.sort_by_label(l, k)),
      "work_items": jax.jit(lambda l: sorted_update.work_items(l, k, 256)),
      "work_items_512": jax.jit(lambda l: sorted_update.work_items(l, k, 512)),
      "xla_scatter_sums": jax.jit(lambda l: centroid_update.cluster_sums_xla(x, l, k)),
  }
  rec = dict(n=n, k=k, d=d, dtype=str(dtype), kind="update_pieces")
  for name, f in pieces.items():
    rec[name] = _timing.time_jax(f, labels)
  print(json.dumps(rec), flush=True)
  rows.append(rec)
  w = jnp.ones((n,), jnp.float32)
  dp = max(16, cfgmod.next_pow2(d))
  for rpi, br, bd, nw in itertools.product((256, 512, 1024), (32, 64), sorted({min(dp, 64), min(dp, 128)}), (4, 8)):
    cfg = cfgmod.UpdateConfig(rows_per_item=rpi, block_rows=br, block_d=bd, num_warps=nw,
                              num_stages=2)
    perm, start, end = jax.jit(lambda l: sorted_update.work_items(l, k, rpi))(labels)[:3]
    try:
      f = jax.jit(lambda x, p, w, s, e, cfg=cfg: sorted_update.partial_sums(x, p, w, s, e, config=cfg))
      ms_kernel = _timing.time_jax(f, x, perm, w, start, end, reps=3, inner=3, warmup=1)
      g = jax.jit(lambda x, l, cfg=cfg: sorted_update.sorted_cluster_sums(x, l, k, config=cfg))
      ms_total = _timing.time_jax(g, x, labels, reps=3, inner=3, warmup=1)
    except Exception as e:  # noqa: BLE001
      ms_kernel = ms_total = None
      print("update cfg failed", cfg, repr(e)[:200])
    r = dict(n=n, k=k, d=d, kind="update_sweep", cfg=str(cfg), kernel_ms=ms_kernel,
             total_ms=ms_total)
    rows.append(r)
    print(json.dumps(r), flush=True)


def big_assign(rows):
  """N=2^22, K=65536, D=128 float16: runs, and peak memory stays O(data)."""
  n, k, d = 1 << 22, 65536, 128
  x = jax.random.normal(jax.random.key(0), (n, d), jnp.float16)
  c = jax.random.normal(jax.random.key(1), (k, d), jnp.float16)
  jax.block_until_ready((x, c))
  base = _timing.peak_bytes()
  f = jax.jit(lambda x, c: flash_assign.flash_assign(x, c))
  ms = _timing.time_jax(f, x, c, reps=3, inner=1, warmup=1)
  peak = _timing.peak_bytes()
  rec = dict(kind="big_assign", n=n, k=k, d=d, ms=ms, tflops=2.0 * n * k * d / ms / 1e9,
             data_bytes=x.nbytes + c.nbytes, peak_bytes=peak, peak_before=base,
             nk_matrix_bytes=4 * n * k)
  try:
    g = jax.jit(lambda x, c: assignment.assign_reference(x, c))
    jax.block_until_ready(g(x, c))
    rec["xla_dense"] = "ran"
  except Exception as e:  # noqa: BLE001
    rec["xla_dense"] = f"failed: {repr(e)[:160]}"
  print(json.dumps(rec), flush=True)
  rows.append(rec)


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--out", default="bench_kernels.json")
  ap.add_argument("--sweep", action="store_true", help="sweep assign tile configs")
  ap.add_argument("--dtype", default="float16")
  ap.add_argument("--shapes", default="all", help="comma list of shape indices")
  ap.add_argument("--update-sweep", action="store_true")
  ap.add_argument("--big", action="store_true", help="N=2^22, K=65536 assign + peak memory")
  ap.add_argument("--no-main", action="store_true", help="skip the per-shape comparison")
  args = ap.parse_args()
  dtype = jnp.dtype(args.dtype)
  rows = []
  if args.update_sweep:
    update_sweep(1 << 20, 1024, 128, dtype, rows)
  if args.big:
    big_assign(rows)
  if args.no_main:
    shapes_override = []
  off = official_assign_update()
  shapes = SHAPES if args.shapes == "all" else [SHAPES[int(i)] for i in args.shapes.split(",")]
  if args.no_main:
    shapes = shapes_override
  print(_timing.versions(), flush=True)
  for (n, k, d) in shapes:
    kx, kc, kl = jax.random.split(jax.random.key(0), 3)
    x = jax.random.normal(kx, (n, d), dtype)
    c = jax.random.normal(kc, (k, d), dtype)
    flops = 2.0 * n * k * d
    rec = dict(n=n, k=k, d=d, dtype=args.dtype)
    default_cfg = cfgmod.assign_config(n, k, d, dtype)
    f = jax.jit(lambda x, c: flash_assign.flash_assign(x, c))
    rec["pallas_assign_ms"] = _timing.time_jax(f, x, c)
    rec["pallas_assign_cfg"] = str(default_cfg)
    if dtype == jnp.float32:
      fe = jax.jit(lambda x, c: flash_assign.flash_assign(x, c, precision="highest"))
      rec["pallas_assign_exact_ms"] = _timing.time_jax(fe, x, c)
    try:
      g = jax.jit(lambda x, c: assignment.assign_xla(x, c))
      rec["xla_assign_ms"] = _timing.time_jax(g, x, c)
    except Exception as e:  # noqa: BLE001
      rec["xla_assign_ms"] = None
      print("xla assign failed", repr(e)[:200])
    labels = jax.random.randint(kl, (n,), 0, k, jnp.int32)
    u = jax.jit(lambda x, l: sorted_update.sorted_cluster_sums(x, l, k))
    rec["pallas_update_ms"] = _timing.time_jax(u, x, labels)
    ws = jax.jit(lambda l: sorted_update.work_items(l, k, 256))
    rec["pallas_update_worklist_ms"] = _timing.time_jax(ws, labels)
    v = jax.jit(lambda x, l: centroid_update.cluster_sums_xla(x, l, k))
    rec["xla_update_ms"] = _timing.time_jax(v, x, labels)
    if off is not None:
      torch, oa, ou = off
      tdt = {"float16": torch.float16, "bfloat16": torch.bfloat16,
             "float32": torch.float32}[args.dtype]
      xt = torch.randn(1, n, d, device="cuda", dtype=tdt)
      ct = torch.randn(1, k, d, device="cuda", dtype=tdt)
      xsq = (xt.float() ** 2).sum(-1)
      try:
        rec["official_assign_ms"] = _timing.time_torch(lambda: oa(xt, ct, xsq))
        ids = torch.randint(0, k, (1, n), device="cuda", dtype=torch.int32)
        rec["official_update_ms"] = _timing.time_torch(lambda: ou(xt, ids, ct))
      except Exception as e:  # noqa: BLE001
        print("official failed", repr(e)[:300])
      del xt, ct, xsq
    rec["pallas_assign_tflops"] = flops / rec["pallas_assign_ms"] / 1e9
    print(json.dumps(rec), flush=True)
    rows.append(rec)
    if args.sweep:
      best = None
      for cfg in sweep_configs(d):
        t0 = time.time()
        try:
          fc = jax.jit(lambda x, c, cfg=cfg: flash_assign.flash_assign(x, c, config=cfg))
          ms = _timing.time_jax(fc, x, c, reps=3, inner=3, warmup=1)
        except Exception as e:  # noqa: BLE001
          ms = None
          err = repr(e)[:120]
        r = dict(n=n, k=k, d=d, dtype=args.dtype, sweep=str(cfg), ms=ms)
        if ms is None:
          r["error"] = err
        rows.append(r)
        if ms is not None and (best is None or ms < best[0]):
          best = (ms, cfg)
        print(f"  sweep {cfg} -> {ms} ({time.time() - t0:.1f}s)", flush=True)
      print(f"BEST n={n} k={k} d={d}: {best}", flush=True)
    del x, c
  with open(args.out, "w") as fh:
    json.dump(rows, fh, indent=1)


if __name__ == "__main__":
  main()
