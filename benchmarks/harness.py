"""What every benchmark script shares: timing, data and result files.

Timing. Every measurement synchronises with the device
(``jax.block_until_ready``), runs a warm-up first (compilation, autotuning of
other libraries) and reports a median. Kernel timings (:func:`median_ms`) run
the function ``inner`` times back to back per sample so that sub-millisecond
kernels are not dominated by the host clock. Lloyd iterations are timed as a
*marginal* iteration (:func:`marginal_ms`): the difference between a long
and a short run with a fixed number of iterations (``tol=0``), divided by the
difference in iterations, so set-up, seeding and the final assignment cancel
out. A row whose estimated time (:func:`estimated_s`, from its FLOPs) is over
a cap is skipped with a note (:func:`over_cap`).

Data. Standard-normal points, drawn with ``jax.random`` on the device or with
NumPy on the host, and the grid's convention that the first K points of each
member are the initial centroids, so every implementation starts from the
same place (:func:`grid_problem`).

Results. :class:`Results` writes ``{"meta": ..., "rows": [...]}`` after every
row (a run cut short keeps what it measured), with the card, versions, date,
command line and the shape and dtype of what was measured; files are named by
what they measure, ``<what>_<dtype>_<card>_<date>.json`` (:func:`result_name`).

The library is imported from whatever ``sys.path`` holds and only through its
public names (``import flashkmeans_jax as fk``), so the same timing code can
measure an older checkout (``benchmarks/compare_grid.py``).
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import os
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

GIB = 2 ** 30

# The performance grid, (B, N, K, D) per row: run_suite.py times every
# implementation on it and compare_grid.py two trees of this library.
# float16/bfloat16 rows for "single" and "batched", float32 for "float32".
GRID = {
    "single": [(1, 1 << 20, 1024, 128), (1, 1 << 23, 1024, 128), (1, 1 << 18, 8192, 128),
               (1, 1 << 22, 65536, 128), (1, 1 << 20, 1024, 64), (1, 1 << 20, 1024, 256),
               (1, 1 << 20, 4096, 512), (1, 1 << 20, 1000, 96)],
    "batched": [(b, n, k, 128) for b in (8, 32) for n in (16384, 65536, 131072)
                for k in (100, 1000)],
    "float32": [(1, 1 << 20, 1024, 128), (1, 1 << 18, 8192, 128), (8, 65536, 1000, 128)],
}
GRID_DTYPES = {"single": ("float16", "bfloat16"), "batched": ("float16", "bfloat16"),
               "float32": ("float32",)}
# Tiny rows of the same three kinds (one problem, a batch, float32) for a CPU
# run of the scripts themselves (--smoke): seconds, not a measurement.
SMOKE_GRID = {"single": [(1, 4096, 16, 32)], "batched": [(4, 1024, 8, 32)],
              "float32": [(1, 2048, 16, 32)]}

# Rough sustained rates of the assignment kernel, TFLOP/s, used only to
# estimate how long a row takes before running it (NOTES.md: 400-560 for
# 16-bit points and ~150-200 for TF32 on an H200). The CPU figure is about what
# XLA's dot reaches on the 2-core development machine.
RATES_TFLOPS = {"gpu": {2: 400.0, 4: 150.0}, "cpu": {2: 0.02, 4: 0.02}}


# ----------------------------------------------------------------- timing


def median_ms(fn, *args, reps: int = 7, inner: int = 5, warmup: int = 2) -> float:
  """Median milliseconds per call of ``fn(*args)`` (a jitted JAX function)."""
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


def median_ms_torch(fn, *args, reps: int = 7, inner: int = 5, warmup: int = 2) -> float:
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


def samples_s(run, reps: int) -> list[float]:
  """Wall seconds of ``reps`` calls of ``run()``, which must synchronise itself."""
  out = []
  for _ in range(reps):
    t0 = time.perf_counter()
    run()
    out.append(time.perf_counter() - t0)
  return out


def median_s(run, reps: int) -> float:
  """Median wall seconds of ``run()``, which must synchronise itself."""
  return statistics.median(samples_s(run, reps))


def run_samples(run, t1: int, t2: int, reps: int = 3) -> tuple[list[float], list[float]]:
  """Seconds of ``reps`` calls of ``run(t1)`` and of ``run(t2)`` after one
  warm-up of each (which compiles both lengths); ``run(iters)`` executes and
  synchronises."""
  run(t1)
  run(t2)
  return samples_s(lambda: run(t1), reps), samples_s(lambda: run(t2), reps)


def marginal_ms(run, t1: int, t2: int, reps: int = 3) -> float:
  """Milliseconds of one more iteration: ``(t(t2) - t(t1)) / (t2 - t1)`` of
  the medians of :func:`run_samples`."""
  a, b = run_samples(run, t1, t2, reps)
  return (statistics.median(b) - statistics.median(a)) * 1e3 / (t2 - t1)


def grid_iters(b: int, n: int, k: int, d: int) -> tuple[int, int]:
  """The short and long iteration counts of a grid row (fewer when big)."""
  return (1, 4) if b * n * k * d >= (1 << 40) else (2, 12)


def lloyd_call(x, init, k: int, iters: int, key=None, **kwargs):
  """``fk.kmeans`` (``x [N, D]`` or ``[1, N, D]``) or ``fk.batched_kmeans``
  (``x [B, N, D]``) of at most ``iters`` iterations from ``init`` (``[K, D]``
  or ``[B, K, D]``) with ``tol=0``; ``kwargs`` go to the call as given (leave
  one out to get the library's default). ``key`` defaults to
  ``jax.random.key(0)``: pass one made once when timing (creating a key
  eagerly is a host-side dispatch of its own, ~0.9 ms on the H200 host,
  which users pay once, not per call). Traceable, so it also serves
  :func:`compiled_bytes`."""
  import flashkmeans_jax as fk
  key = jax.random.key(0) if key is None else key
  if x.ndim == 3 and x.shape[0] == 1:
    x, init = x[0], init[0]
  if x.ndim == 2:
    return fk.kmeans(key, x, k, init=init, max_iter=iters, tol=0.0, **kwargs)
  return fk.batched_kmeans(key, x, k, init=init, max_iter=iters, tol=0.0, **kwargs)


def lloyd_runner(x, init, k: int, **kwargs):
  """``run(iters)``: one synchronised :func:`lloyd_call` that must do exactly
  ``iters`` iterations (one that stops early reached a fixed point, so its time
  is not that of ``iters`` iterations: it raises)."""
  if x.ndim == 3 and x.shape[0] == 1:
    x, init = x[0], init[0]  # once, not in every timed call
  key = jax.random.key(0)

  def run(iters):
    r = jax.block_until_ready(lloyd_call(x, init, k, iters, key=key, **kwargs))
    n_iter = np.asarray(r.n_iter)
    if not np.all(n_iter == iters):
      raise RuntimeError(f"stopped early: n_iter {n_iter.tolist()} != {iters}")
    return r
  return run


def compiled_bytes(fn, *args) -> dict:
  """Device bytes of ``jax.jit(fn)(*args)`` from XLA's buffer assignment."""
  m = jax.jit(fn).lower(*args).compile().memory_analysis()
  return {"argument_bytes": int(m.argument_size_in_bytes),
          "output_bytes": int(m.output_size_in_bytes),
          "temp_bytes": int(m.temp_size_in_bytes)}


def estimated_s(flops: float, dtype, platform: str | None = None) -> float:
  """Seconds ``flops`` of assignment work take at :data:`RATES_TFLOPS`."""
  platform = platform or jax.default_backend()
  rates = RATES_TFLOPS["gpu" if platform == "gpu" else "cpu"]
  return flops / (rates[min(4, jnp.dtype(dtype).itemsize)] * 1e12)


def over_cap(estimate_s: float, cap_s: float | None) -> str | None:
  """The note for a row skipped because its estimate exceeds the cap, or None."""
  if cap_s is None or estimate_s <= cap_s:
    return None
  return f"skipped: estimated {estimate_s:.0f} s > cap {cap_s:.0f} s"


def kernel_impl() -> str | None:
  """``"pallas"`` where the Pallas kernels run (CUDA), else ``None`` (XLA)."""
  return "pallas" if jax.default_backend() == "gpu" else None


# ------------------------------------------------------ device facts


def matmul_tflops(dtype=jnp.bfloat16, n: int = 8192) -> float:
  """Dense ``n^3`` matmul rate at the default precision (TF32 for float32)."""
  a = jax.random.normal(jax.random.key(0), (n, n), dtype)
  b = jax.random.normal(jax.random.key(1), (n, n), dtype)
  mm = jax.jit(lambda a, b: jnp.matmul(a, b, precision=jax.lax.Precision.DEFAULT))
  return 2 * n ** 3 / (median_ms(mm, a, b, reps=5, inner=5) * 1e-3) / 1e12


def copy_gbs(nbytes: int = 4 * GIB) -> float:
  """Device copy bandwidth (read + write of ``nbytes``), GB/s."""
  big = jax.random.normal(jax.random.key(2), (nbytes // 4,), jnp.float32)
  ms = median_ms(jax.jit(lambda v: v * 1.0000001), big, reps=5, inner=3)
  return 2 * big.nbytes / (ms * 1e-3) / 1e9


def measure_ceilings(small: bool = False) -> dict:
  """bf16 matmul TFLOP/s and copy GB/s of the card (``small``: a quick CPU check)."""
  return {"bf16_matmul_tflops": matmul_tflops(n=512 if small else 8192),
          "copy_gbs": copy_gbs(64 * 2 ** 20 if small else 4 * GIB)}


def peak_bytes() -> int | None:
  """The device's peak bytes in use so far (None where unknown)."""
  return (jax.devices()[0].memory_stats() or {}).get("peak_bytes_in_use")


def card(devices=None) -> str:
  """Short card name for file names: ``h200``, ``cpu``, ``2xh200`` for several
  ``devices`` (default: the first device, which single-device runs use)."""
  devices = devices or jax.devices()[:1]
  kind = devices[0].device_kind.lower().replace("nvidia", "").split()
  name = "".join(ch for ch in (kind[0] if kind else "unknown") if ch.isalnum())
  return name if len(devices) == 1 else f"{len(devices)}x{name}"


def library() -> dict:
  """Which flashkmeans_jax was measured: version, folder and a hash of its
  sources (two checkouts of one version differ there)."""
  import flashkmeans_jax as fk
  root = os.path.dirname(os.path.abspath(fk.__file__))
  h = hashlib.sha256()
  for dirpath, dirnames, files in sorted(os.walk(root)):
    dirnames.sort()
    for f in sorted(files):
      if f.endswith(".py"):
        path = os.path.join(dirpath, f)
        h.update(os.path.relpath(path, root).encode())
        with open(path, "rb") as fh:
          h.update(fh.read())
  return {"version": fk.__version__, "path": root, "source_sha256": h.hexdigest()[:16]}


def versions(official: bool = True) -> dict:
  """Versions of everything that shapes a timing (``official``: also torch and
  the official flash-kmeans, where they import)."""
  import jaxlib
  out = {"jax": jax.__version__, "jaxlib": jaxlib.__version__, "numpy": np.__version__,
         "python": sys.version.split()[0], "device": jax.devices()[0].device_kind,
         "flashkmeans_jax": library()}
  if official:
    try:
      import torch
      out["torch"] = torch.__version__
    except ImportError:
      pass
    try:
      import flash_kmeans
      out["flash_kmeans"] = getattr(flash_kmeans, "__version__", "?")
    except Exception as e:  # noqa: BLE001 -- any import problem is a result
      out["flash_kmeans"] = f"unavailable: {e!r}"[:200]
  if jax.default_backend() == "gpu":
    import subprocess
    try:
      out["driver"] = subprocess.run(
          ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
          capture_output=True, text=True, timeout=20).stdout.strip().splitlines()[0]
    except Exception:  # noqa: BLE001
      pass
  return out


# -------------------------------------------------------------- data


def normal(seed: int, shape, dtype, sharding=None) -> jax.Array:
  """Standard-normal ``shape`` array on the device (``sharding``: generated
  straight into that layout, so it never exists whole on one device)."""
  gen = jax.jit(lambda key: jax.random.normal(key, shape, jnp.dtype(dtype)),
                out_shardings=sharding)
  return jax.block_until_ready(gen(jax.random.key(seed)))


def blobs(seed: int, n: int, centers: int, d: int, dtype, std: float = 0.5) -> jax.Array:
  """``[n, d]`` points around ``centers`` standard-normal centres (each point
  a uniformly chosen centre plus ``std`` times standard-normal noise), on the
  device. At D=128, std=0.5 the blobs' radius (~5.7) is a third of the
  distance between centres (~16): seeding decides which blobs are found."""
  def gen(key):
    kc, kl, kn = jax.random.split(key, 3)
    c = jax.random.normal(kc, (centers, d), jnp.float32)
    lab = jax.random.randint(kl, (n,), 0, centers)
    return (c[lab] + std * jax.random.normal(kn, (n, d), jnp.float32)).astype(dtype)
  return jax.block_until_ready(jax.jit(gen)(jax.random.key(seed)))


def grid_problem(b: int, n: int, k: int, d: int, dtype):
  """``x [B, N, D]`` standard normal and its first K points ``[B, K, D]``."""
  x = normal(1, (b, n, d), dtype)
  return x, x[:, :k, :]


def points_centroids_labels(n: int, k: int, d: int, dtype, seed: int = 0):
  """Independent ``x [n, d]``, ``c [k, d]`` and ``labels int32[n]``."""
  kx, kc, kl = jax.random.split(jax.random.key(seed), 3)
  return (jax.random.normal(kx, (n, d), dtype), jax.random.normal(kc, (k, d), dtype),
          jax.random.randint(kl, (n,), 0, k, jnp.int32))


def host_normal(n: int, d: int, dtype, seed: int = 0) -> np.ndarray:
  """``[n, d]`` host array filled fast: one float32 block of up to 2^20
  standard-normal rows written into every block, shifted by a per-block offset,
  in parallel threads (NumPy releases the GIL). Cluster structure does not
  matter for timing a fixed number of iterations."""
  block = min(n, 2 ** 20)
  base = np.random.default_rng(seed).standard_normal((block, d), dtype=np.float32)
  x = np.empty((n, d), dtype)

  def fill(i):
    start, stop = i * block, min(n, (i + 1) * block)
    np.add(base[: stop - start], np.float32(0.05 * (i % 41)), out=x[start:stop],
           casting="unsafe")

  with concurrent.futures.ThreadPoolExecutor(min(16, os.cpu_count() or 1)) as pool:
    list(pool.map(fill, range(-(-n // block))))
  return x


def host_seeds(x: np.ndarray, k: int, seed: int = 1) -> np.ndarray:
  """``k`` distinct rows of ``x`` (sorted positions), as float32."""
  rows = np.sort(np.random.default_rng(seed).choice(x.shape[0], k, replace=False))
  return x[rows].astype(np.float32)


# ----------------------------------------------------------- results


def today() -> str:
  return time.strftime("%Y-%m-%d", time.gmtime())


def result_name(what: str, dtype: str | None = None, card_name: str | None = None,
                date: str | None = None) -> str:
  """``<what>_<dtype>_<card>_<date>.json``; ``what`` names the measurement
  (``grid-single``, ``streaming-interleaved-schedule``), ``dtype`` is left out
  when the file holds several."""
  parts = [what] + ([dtype] if dtype else []) + [card_name or card(), date or today()]
  return "_".join(p.replace("_", "-") for p in parts) + ".json"


class Results:
  """One result file: ``meta`` (card, versions, date, command line and the
  given fields, e.g. shape and dtype) and ``rows``, rewritten whole after every
  :meth:`add` (through a temporary file, so a reader never sees half a file)."""

  def __init__(self, path: str, official: bool = True, devices=None, **fields):
    self.path = path
    self.meta = {"card": card(devices), **versions(official),
                 "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                 "argv": sys.argv[1:], **fields}
    self.rows: list[dict] = []

  def add(self, row: dict) -> dict:
    """Appends ``row``, prints it as one JSON line and saves the file."""
    self.rows.append(row)
    print(json.dumps(row, default=str), flush=True)
    self.save()
    return row

  def save(self) -> None:
    tmp = self.path + ".tmp"
    with open(tmp, "w") as fh:
      json.dump({"meta": self.meta, "rows": self.rows}, fh, indent=1, default=str)
    os.replace(tmp, self.path)


def load(path: str) -> dict:
  """A result file as written by :class:`Results`."""
  with open(path) as fh:
    return json.load(fh)
