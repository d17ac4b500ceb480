"""Timing and device-ceiling helpers shared by the benchmark scripts.

Every timing synchronises with the device, excludes warm-up (compilation,
autotuning of other libraries) and reports the median of several samples;
each sample runs the function ``inner`` times back to back so that sub-ms
kernels are not dominated by the host clock.
"""

from __future__ import annotations

import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np


def time_jax(fn, *args, reps: int = 7, inner: int = 5, warmup: int = 2) -> float:
  """Median milliseconds per call of a jitted ``fn(*args)``."""
  for _ in range(warmup):
    jax.block_until_ready(fn(*args))
  samples = []
  for _ in range(reps):
    t0 = time.perf_counter()
    for _ in range(inner):
      out = fn(*args)
    jax.block_until_ready(out)
    samples.append((time.perf_counter() - t0) * 1e3 / inner)
  return statistics.median(samples)


def time_torch(fn, *args, reps: int = 7, inner: int = 5, warmup: int = 2) -> float:
  """Median milliseconds per call of a PyTorch CUDA function (CUDA events)."""
  import torch
  for _ in range(warmup):
    fn(*args)
  torch.cuda.synchronize()
  samples = []
  for _ in range(reps):
    start = torch.cuda.Event(enable_timing=True)
    end = torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(inner):
      fn(*args)
    end.record()
    torch.cuda.synchronize()
    samples.append(start.elapsed_time(end) / inner)
  return statistics.median(samples)


def measure_ceilings() -> dict:
  """Dense bf16 matmul TFLOP/s and device copy GB/s, measured on random data."""
  n = 8192
  a = jax.random.normal(jax.random.key(0), (n, n), jnp.bfloat16)
  b = jax.random.normal(jax.random.key(1), (n, n), jnp.bfloat16)
  mm = jax.jit(lambda a, b: a @ b)
  ms = time_jax(mm, a, b, reps=5, inner=5)
  tflops = 2 * n ** 3 / (ms * 1e-3) / 1e12
  big = jax.random.normal(jax.random.key(2), (1 << 30,), jnp.float32)  # 4 GiB
  cp = jax.jit(lambda v: v * 1.0000001)
  ms_cp = time_jax(cp, big, reps=5, inner=3)
  gbs = 2 * big.nbytes / (ms_cp * 1e-3) / 1e9
  del big
  return {"bf16_matmul_tflops": tflops, "copy_gbs": gbs}


def peak_bytes() -> int | None:
  stats = jax.devices()[0].memory_stats() or {}
  return stats.get("peak_bytes_in_use")


def versions() -> dict:
  import jaxlib
  out = {"jax": jax.__version__, "jaxlib": jaxlib.__version__,
         "device": jax.devices()[0].device_kind, "numpy": np.__version__}
  try:
    import torch
    out["torch"] = torch.__version__
  except ImportError:
    pass
  try:
    import flash_kmeans
    out["flash_kmeans"] = getattr(flash_kmeans, "__version__", "?")
  except Exception as e:  # noqa: BLE001
    out["flash_kmeans"] = f"unavailable: {e!r}"[:200]
  try:
    import subprocess
    out["driver"] = subprocess.run(
        ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
        capture_output=True, text=True, timeout=20).stdout.strip()
  except Exception:  # noqa: BLE001
    pass
  return out
