"""Data-parallel Lloyd scaling: ms per iteration on 1 device against all devices.

Default problem: N = 2^26 points, D = 128, K = 8192, float16 and bfloat16,
explicit random init, tol = 0 (no early stop; every run is checked to have
done all its iterations).

Per-iteration time is the marginal iteration of :mod:`benchmarks.harness`,
``(t(max_iter = 1 + iters) - t(max_iter = 1)) / iters`` of the medians of
``--repeats`` synchronised calls after a warm-up of each, so compilation, the
final assignment and the result transfer cancel out.

Data are generated on the devices with ``jax.random`` straight into the
row-sharded layout: N=2^26 x 128 float16 is 16 GiB and never exists on the
host. The 1-device case calls ``fk.kmeans`` on an array on one device; the
n-device cases call ``fk.kmeans`` on the row-sharded array (its data-parallel
path).

  python benchmarks/bench_distributed.py      # distributed_<dtypes>_<n>x<card>_<date>.json
  python benchmarks/bench_distributed.py --n 4194304 --k 1024 --dtypes float16

On CPU, for a smoke test::

  XLA_FLAGS=--xla_force_host_platform_device_count=4 python \\
    benchmarks/bench_distributed.py --n 65536 --d 32 --k 64 --iters 2 --repeats 1
"""

from __future__ import annotations

import argparse
import gc
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks import harness  # noqa: E402


def bench_one(n, d, k, dtype, devices, iters, repeats, impl):
  mesh = Mesh(np.asarray(devices), ("data",))
  x = harness.normal(1, (n, d), dtype, NamedSharding(
      mesh, P("data", None) if len(devices) > 1 else P()))
  # Replicated [K, D] start, on the same devices as x.
  init = harness.normal(2, (k, d), jnp.float32, NamedSharding(mesh, P()))
  run = harness.lloyd_runner(x, init, k, impl=impl, check_finite=False)
  short, long = harness.run_samples(run, 1, 1 + iters, repeats)
  del x, init
  gc.collect()
  t1, tn = float(np.median(short)), float(np.median(long))
  ms = max(tn - t1, 0.0) / iters * 1e3
  return dict(dtype=jnp.dtype(dtype).name, n_devices=len(devices), n=n, d=d, k=k,
              iters=iters, ms_per_iter=ms, run_1iter_s=short, run_s=long,
              gpoints_per_s=n / (ms * 1e-3) / 1e9 if ms > 0 else float("nan"))


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--n", type=int, default=2 ** 26)
  ap.add_argument("--d", type=int, default=128)
  ap.add_argument("--k", type=int, default=8192)
  ap.add_argument("--dtypes", default="float16,bfloat16")
  ap.add_argument("--devices", default=None,
                  help="comma-separated device counts (default: 1 and all)")
  ap.add_argument("--iters", type=int, default=5, help="iterations of the marginal")
  ap.add_argument("--repeats", type=int, default=3)
  ap.add_argument("--impl", default=None, help="None/auto, xla, pallas")
  ap.add_argument("--out", default=None,
                  help="default: distributed_<dtypes>_<n>x<card>_<date>.json")
  args = ap.parse_args(argv)

  all_dev = jax.devices()
  counts = (sorted({1, len(all_dev)}) if args.devices is None
            else [int(c) for c in args.devices.split(",")])
  if max(counts) > len(all_dev):
    sys.exit(f"asked for {max(counts)} devices, have {len(all_dev)}")
  used = all_dev[:max(counts)]
  out = harness.Results(
      args.out or harness.result_name("distributed", args.dtypes.replace(",", "-"),
                                      harness.card(used)),
      devices=used, n=args.n, d=args.d, k=args.k, impl=args.impl or "auto")
  for dt in args.dtypes.split(","):
    for c in counts:
      n = args.n - args.n % c  # sharded arrays need c | N
      out.add(bench_one(n, args.d, args.k, jnp.dtype(dt), all_dev[:c], args.iters,
                        args.repeats, args.impl))
  for r in out.rows:
    base = next(b for b in out.rows if b["dtype"] == r["dtype"] and b["n_devices"] == min(counts))
    r["speedup"] = base["ms_per_iter"] / r["ms_per_iter"] if r["ms_per_iter"] > 0 else float("nan")
    r["efficiency"] = r["speedup"] * base["n_devices"] / r["n_devices"]
  out.save()
  print(f"\nData-parallel Lloyd, N={args.n}, D={args.d}, K={args.k}, {out.meta['device']}, "
        f"jax {out.meta['jax']}\n")
  print("| dtype | devices | ms/iter | Gpoints/s | speedup | efficiency |")
  print("|---|---:|---:|---:|---:|---:|")
  for r in out.rows:
    print(f"| {r['dtype']} | {r['n_devices']} | {r['ms_per_iter']:.2f} | "
          f"{r['gpoints_per_s']:.2f} | {r['speedup']:.2f}x | {100 * r['efficiency']:.0f}% |")
  print(f"\nwrote {out.path}")


if __name__ == "__main__":
  main()
