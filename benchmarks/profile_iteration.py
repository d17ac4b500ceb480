"""Per-kernel GPU times of Lloyd iterations, for Nsight Compute (GPU).

    ncu --clock-control none --profile-from-start off \\
        --metrics gpu__time_duration.sum --csv \\
        python benchmarks/profile_iteration.py [--n 1048576 --k 1024 --d 128 --dtype bfloat16]

Compiles and warms ``kmeans`` up outside the profiled range, then runs
``--iters`` iterations between ``cudaProfilerStart`` and ``cudaProfilerStop``
so that only those kernels are measured. ``benchmarks/ncu_summary.py`` sums the
CSV per kernel name.
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import sys

import jax
import jax.numpy as jnp

sys.path.insert(0, __file__.rsplit("/", 2)[0])
import flashkmeans_jax as fk  # noqa: E402


def _cudart():
  for name in ("libcudart.so", "libcudart.so.13", "libcudart.so.12",
               ctypes.util.find_library("cudart")):
    if not name:
      continue
    try:
      return ctypes.CDLL(name)
    except OSError:
      continue
  # The CUDA runtime that JAX's plugin loads lives in the nvidia wheels.
  import glob
  import os
  import nvidia
  for root in nvidia.__path__:
    for path in glob.glob(os.path.join(root, "**", "libcudart.so*"), recursive=True):
      return ctypes.CDLL(path)
  raise OSError("libcudart not found")


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--n", type=int, default=1 << 20)
  ap.add_argument("--k", type=int, default=1024)
  ap.add_argument("--d", type=int, default=128)
  ap.add_argument("--dtype", default="bfloat16")
  ap.add_argument("--iters", type=int, default=2)
  args = ap.parse_args()
  x = jax.random.normal(jax.random.key(0), (args.n, args.d), jnp.dtype(args.dtype))
  init = x[:args.k].astype(jnp.float32)
  run = lambda: jax.block_until_ready(  # noqa: E731
      fk.kmeans(jax.random.key(0), x, args.k, init=init, max_iter=args.iters, tol=0.0))
  run(), run()
  rt = _cudart()
  rt.cudaProfilerStart()
  run()
  rt.cudaProfilerStop()


if __name__ == "__main__":
  main()
