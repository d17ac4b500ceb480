"""Data-parallel Lloyd scaling: ms per iteration on 1 device vs all devices.

Default problem (the issue's): N = 2^26 points, D = 128, K = 8192, float16
and bfloat16, explicit random init, tol = 0 (no early stop; random data does
not reach a fixed point in a few iterations, and the script checks that every
run did all its iterations).

Per-iteration time is a difference of two compiled runs,
``(t(max_iter = 1 + iters) - t(max_iter = 1)) / iters``, so compilation,
the final assignment and the result transfer cancel out; each run is timed
``--repeats`` times and the fastest kept.

Data are generated on the devices with ``jax.random`` straight into the
row-sharded layout (``jit(..., out_shardings=...)``): N=2^26 x 128 float16 is
16 GiB and never exists on the host. The 1-device case calls ``kmeans`` on an
array on one device (the plain single-device path); the n-device cases call
``kmeans`` on the row-sharded array (its data-parallel path).

Example (a host with 2 or 4 GPUs)::

  python benchmarks/bench_distributed.py --out bench_distributed.json
  python benchmarks/bench_distributed.py --n 4194304 --k 1024 --dtypes float16

On CPU, for a smoke test::

  XLA_FLAGS=--xla_force_host_platform_device_count=4 python \\
    benchmarks/bench_distributed.py --n 65536 --d 32 --k 64 --iters 2 --repeats 1
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

import flashkmeans_jax as fk


def _make_data(key, n, d, dtype, devices):
  mesh = Mesh(np.asarray(devices), ("data",))
  spec = P("data", None) if len(devices) > 1 else P()
  gen = jax.jit(lambda key: jax.random.normal(key, (n, d), dtype),
                out_shardings=NamedSharding(mesh, spec))
  return gen(key).block_until_ready()


def _run_seconds(x, init, k, max_iter, impl, repeats):
  def once():
    r = fk.kmeans(jax.random.key(0), x, k, init=init, max_iter=max_iter, tol=0.0,
                  impl=impl, check_finite=False)
    jax.block_until_ready(r)
    return r

  res = once()  # compile + warm-up
  if int(res.n_iter) != max_iter:
    raise RuntimeError(f"run stopped after {int(res.n_iter)} of {max_iter} iterations")
  best = np.inf
  for _ in range(repeats):
    t = time.perf_counter()
    once()
    best = min(best, time.perf_counter() - t)
  return best


def bench_one(n, d, k, dtype, devices, iters, repeats, impl):
  x = _make_data(jax.random.key(1), n, d, dtype, devices)
  # Replicated [K, D] start, on the same devices as x.
  init = jax.device_put(jax.random.normal(jax.random.key(2), (k, d), jnp.float32),
                        NamedSharding(Mesh(np.asarray(devices), ("data",)), P()))
  t1 = _run_seconds(x, init, k, 1, impl, repeats)
  tn = _run_seconds(x, init, k, 1 + iters, impl, repeats)
  del x, init
  gc.collect()
  ms = max(tn - t1, 0.0) / iters * 1e3
  return dict(dtype=jnp.dtype(dtype).name, n_devices=len(devices), n=n, d=d, k=k,
              iters=iters, ms_per_iter=ms, run_1iter_s=t1, run_s=tn,
              gpoints_per_s=n / (ms * 1e-3) / 1e9 if ms > 0 else float("nan"))


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--n", type=int, default=2 ** 26)
  ap.add_argument("--d", type=int, default=128)
  ap.add_argument("--k", type=int, default=8192)
  ap.add_argument("--dtypes", default="float16,bfloat16")
  ap.add_argument("--devices", default=None,
                  help="comma-separated device counts (default: 1 and all)")
  ap.add_argument("--iters", type=int, default=5, help="timed iterations")
  ap.add_argument("--repeats", type=int, default=3)
  ap.add_argument("--impl", default=None, help="None/auto, xla, pallas")
  ap.add_argument("--out", default=None, help="write the results as JSON here")
  args = ap.parse_args(argv)

  all_dev = jax.devices()
  counts = (sorted({1, len(all_dev)}) if args.devices is None
            else [int(c) for c in args.devices.split(",")])
  if max(counts) > len(all_dev):
    sys.exit(f"asked for {max(counts)} devices, have {len(all_dev)}")
  rows = []
  for dt in args.dtypes.split(","):
    for c in counts:
      n = args.n - args.n % c  # sharded arrays need c | N
      r = bench_one(n, args.d, args.k, jnp.dtype(dt), all_dev[:c], args.iters, args.repeats,
                    args.impl)
      rows.append(r)
      print(f"# {dt} {c} device(s): {r['ms_per_iter']:.2f} ms/iter", flush=True)
  for r in rows:
    base = next(b for b in rows if b["dtype"] == r["dtype"] and b["n_devices"] == min(counts))
    r["speedup"] = base["ms_per_iter"] / r["ms_per_iter"] if r["ms_per_iter"] > 0 else float("nan")
    r["efficiency"] = r["speedup"] * base["n_devices"] / r["n_devices"]

  meta = dict(jax=jax.__version__, flashkmeans_jax=fk.__version__,
              device_kind=all_dev[0].device_kind, platform=all_dev[0].platform,
              host=platform.node(), impl=args.impl or "auto", argv=sys.argv[1:])
  print()
  print(f"Data-parallel Lloyd, N={args.n}, D={args.d}, K={args.k}, {meta['device_kind']}, "
        f"jax {meta['jax']}")
  print()
  print("| dtype | devices | ms/iter | Gpoints/s | speedup | efficiency |")
  print("|---|---:|---:|---:|---:|---:|")
  for r in rows:
    print(f"| {r['dtype']} | {r['n_devices']} | {r['ms_per_iter']:.2f} | "
          f"{r['gpoints_per_s']:.2f} | {r['speedup']:.2f}x | {100 * r['efficiency']:.0f}% |")
  if args.out:
    with open(args.out, "w") as f:
      json.dump(dict(meta=meta, results=rows), f, indent=2)
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
  main()
