"""The performance grid (GPU): ms per Lloyd iteration, side by side.

    python benchmarks/run_suite.py --group all --out suite.json --markdown suite.md

writes the JSON after every row and, at the end, the Markdown table
(``benchmarks/report.py`` makes the same table from any saved JSON).

For every row the same data and the same initial centroids (the first K points
of each member) go to every implementation; iterations are fixed (``tol=0``,
no early stop; each run's ``n_iter`` is checked) and the time per iteration is
the difference between a long and a short run divided by the difference in
iterations, so set-up, seeding and the final assignment cancel out. Each
timing is the median of several runs after a warm-up.

Implementations: this library's default (``impl=None``: the Pallas kernels on
GPU), its XLA path, the official flash-kmeans ``batch_kmeans_Euclid`` and, for
B=1, fast_pytorch_kmeans and fastkmeans, when importable (a failure is
recorded in the row, never fatal).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, __file__.rsplit("/", 2)[0])
from benchmarks import _timing  # noqa: E402
import flashkmeans_jax as fk  # noqa: E402
from flashkmeans_jax.kernels import flash_assign  # noqa: E402

SINGLE = [(1, 1 << 20, 1024, 128), (1, 1 << 23, 1024, 128), (1, 1 << 18, 8192, 128),
          (1, 1 << 22, 65536, 128), (1, 1 << 20, 1024, 64), (1, 1 << 20, 1024, 256),
          (1, 1 << 20, 4096, 512), (1, 1 << 20, 1000, 96)]
BATCHED = [(b, n, k, 128) for b in (8, 32) for n in (16384, 65536, 131072) for k in (100, 1000)]
FLOAT32 = [(1, 1 << 20, 1024, 128), (1, 1 << 18, 8192, 128), (8, 65536, 1000, 128)]


def _iters(b, n, k, d):
  work = b * n * k * d
  return (1, 4) if work >= (1 << 40) else (2, 12)


def _median_run(fn, reps):
  ts = []
  for _ in range(reps):
    t0 = time.perf_counter()
    fn()
    ts.append(time.perf_counter() - t0)
  return statistics.median(ts)


def per_iter_ms(run, t1, t2, reps=3):
  """``run(iters)`` executes and synchronises; returns ms per iteration."""
  run(t1)
  run(t2)  # warm-up: compiles both lengths
  a = _median_run(lambda: run(t1), reps)
  b = _median_run(lambda: run(t2), reps)
  return (b - a) * 1e3 / (t2 - t1)


def ours(x, c, k, impl, precision=None):
  b = x.shape[0]
  key = jax.random.key(0)

  def run(iters):
    if b == 1:
      r = fk.kmeans(key, x[0], k, init=c[0], max_iter=iters, tol=0.0, impl=impl,
                    precision=precision, check_finite=False)
    else:
      r = fk.batched_kmeans(key, x, k, init=c, max_iter=iters, tol=0.0, impl=impl,
                            precision=precision, check_finite=False)
    jax.block_until_ready(r)
    n_iter = np.asarray(r.n_iter)
    assert np.all(n_iter == iters), f"stopped early: {n_iter} != {iters}"
    return r
  return run


def memory_of(x, c, k, impl, iters):
  """Device bytes of one call from XLA's buffer assignment (args+outputs+temps)."""
  b = x.shape[0]
  key = jax.random.key(0)
  if b == 1:
    f = jax.jit(lambda x, c: fk.kmeans(key, x[0], k, init=c[0], max_iter=iters, tol=0.0,
                                       impl=impl, check_finite=False))
  else:
    f = jax.jit(lambda x, c: fk.batched_kmeans(key, x, k, init=c, max_iter=iters, tol=0.0,
                                               impl=impl, check_finite=False))
  m = f.lower(x, c).compile().memory_analysis()
  return int(m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes)


def official(x_np_dev, c_np_dev, k):
  import torch
  from flash_kmeans import batch_kmeans_Euclid

  def run(iters):
    _, _, n = batch_kmeans_Euclid(x_np_dev, k, max_iters=iters, tol=0.0,
                                  init_centroids=c_np_dev.clone())
    torch.cuda.synchronize()
    assert n == iters
  return run


def fast_pytorch(x_t, c_t, k):
  import torch
  from fast_pytorch_kmeans import KMeans

  def run(iters):
    km = KMeans(n_clusters=k, max_iter=iters, tol=-1.0, mode="euclidean", minibatch=None)
    km.fit_predict(x_t[0], centroids=c_t[0].clone())
    torch.cuda.synchronize()
  return run


def fastkmeans_runner(x_np, k):
  """fastkmeans' ``FastKMeans.train`` on host NumPy data (its design: it keeps
  the points on the host and moves them in chunks every iteration; it draws
  its own random initial centroids, so only the per-iteration time compares).
  Keywords are passed only if its signature has them."""
  import inspect

  import torch
  from fastkmeans import FastKMeans
  params = inspect.signature(FastKMeans).parameters
  wanted = dict(d=x_np.shape[1], k=k, tol=-1.0, gpu=True, seed=0,
                max_points_per_centroid=1 << 40, verbose=False)
  kwargs = {key: v for key, v in wanted.items() if key in params}

  def run(iters):
    km = FastKMeans(niter=iters, **kwargs)
    km.train(x_np)
    torch.cuda.synchronize()
  return run


def fastkmeans_in_child(n, k, d, dtype_name, t1, t2, reps) -> dict:
  """fastkmeans timed in a child process: a device-side assert in its kernels
  (seen at K=1000, D=96) leaves the CUDA context unusable, which would fail
  every later row of this process. The child draws its own standard-normal
  data of the same shape (fastkmeans seeds itself, so only the per-iteration
  time is compared anyway)."""
  import subprocess
  cmd = [sys.executable, __file__, "--fastkmeans-child",
         ",".join(map(str, (n, k, d, dtype_name, t1, t2, reps)))]
  try:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
  except subprocess.TimeoutExpired:
    return {"fastkmeans_error": "timed out after 600 s"}
  for line in reversed(proc.stdout.splitlines()):
    if line.startswith("{"):
      return json.loads(line)
  tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
  return {"fastkmeans_error": f"exit {proc.returncode}: " + " | ".join(tail)[-300:]}


def _fastkmeans_child(spec: str) -> None:
  n, k, d, dtype_name, t1, t2, reps = spec.split(",")
  n, k, d, t1, t2, reps = map(int, (n, k, d, t1, t2, reps))
  x = np.random.default_rng(1).standard_normal((n, d), np.float32).astype(dtype_name)
  try:
    out = {"fastkmeans_ms": per_iter_ms(fastkmeans_runner(x, k), t1, t2, reps)}
  except Exception as e:  # noqa: BLE001
    out = {"fastkmeans_error": repr(e)[:300]}
  print(json.dumps(out), flush=True)


def row(b, n, k, d, dtype_name, ceilings, skip_xla=False, reps=3):
  dtype = jnp.dtype(dtype_name)
  x = jax.random.normal(jax.random.key(1), (b, n, d), dtype)
  c = x[:, :k, :]
  t1, t2 = _iters(b, n, k, d)
  rec = dict(B=b, N=n, K=k, D=d, dtype=dtype_name, iters=(t1, t2))
  flops = 2.0 * b * n * k * d
  # Floor: the matmul at the measured rate, or one read of x plus the labels
  # written, at the measured copy bandwidth (an iteration can do no less).
  floor_bytes = b * n * d * dtype.itemsize + 4 * b * n
  rec["floor_ms"] = max(flops / (ceilings["bf16_matmul_tflops"] * 1e9),
                        floor_bytes / (ceilings["copy_gbs"] * 1e6))
  # First call (compile + run) of the default, then steady state.
  t0 = time.perf_counter()
  ours(x, c, k, None)(t2)
  rec["ours_first_call_s"] = time.perf_counter() - t0
  rec["ours_ms"] = per_iter_ms(ours(x, c, k, None), t1, t2, reps)
  rec["ours_mem_bytes"] = memory_of(x, c, k, None, t2)
  # Assignment alone (TFLOP/s of the kernel).
  fa = jax.jit(jax.vmap(lambda x, c: flash_assign.flash_assign(x, c)))
  rec["ours_assign_ms"] = _timing.time_jax(fa, x, c, reps=5, inner=3)
  rec["ours_assign_tflops"] = flops / rec["ours_assign_ms"] / 1e9
  if dtype_name == "float32":
    # float32 on float16 operands (same 10-bit mantissa as the default TF32).
    f16 = "F16_F16_F32"
    rec["ours_f16ops_ms"] = per_iter_ms(ours(x, c, k, None, f16), t1, t2, reps)
    fh = jax.jit(jax.vmap(lambda x, c: flash_assign.flash_assign(x, c, precision=f16)))
    rec["ours_f16ops_assign_ms"] = _timing.time_jax(fh, x, c, reps=5, inner=3)
  if not skip_xla:
    try:
      rec["xla_ms"] = per_iter_ms(ours(x, c, k, "xla"), t1, t2, reps)
      rec["xla_mem_bytes"] = memory_of(x, c, k, "xla", t2)
    except Exception as e:  # noqa: BLE001
      rec["xla_error"] = repr(e)[:200]
  try:
    import torch
    tdt = {"float16": torch.float16, "bfloat16": torch.bfloat16,
           "float32": torch.float32}[dtype_name]
    xt = torch.from_dlpack(x).to(tdt)
    ct = xt[:, :k, :].contiguous()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    rec["official_ms"] = per_iter_ms(official(xt, ct, k), t1, t2, reps)
    rec["official_mem_bytes"] = torch.cuda.max_memory_allocated() - base + xt.nbytes
    if b == 1 and k * n <= (1 << 31):
      try:
        rec["fast_pytorch_ms"] = per_iter_ms(fast_pytorch(xt, ct, k), t1, t2, reps)
      except Exception as e:  # noqa: BLE001
        rec["fast_pytorch_error"] = repr(e)[:200]
    if b == 1 and dtype_name in ("float16", "float32") and k * n <= (1 << 31):
      rec.update(fastkmeans_in_child(n, k, d, dtype_name, t1, t2, reps))  # no NumPy bf16
    del xt, ct
    torch.cuda.empty_cache()
  except Exception as e:  # noqa: BLE001
    rec["official_error"] = repr(e)[:300]
  if "official_ms" in rec:
    rec["official_over_ours"] = rec["official_ms"] / rec["ours_ms"]
  if "official_ms" in rec and "ours_f16ops_ms" in rec:
    rec["official_over_ours_f16ops"] = rec["official_ms"] / rec["ours_f16ops_ms"]
  if "xla_ms" in rec:
    rec["xla_over_ours"] = rec["xla_ms"] / rec["ours_ms"]
  del x, c
  return rec


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--group", choices=["single", "batched", "float32", "all"], default="all")
  ap.add_argument("--dtypes", default="float16,bfloat16")
  ap.add_argument("--rows", default=None, help="comma list of row indices within the group")
  ap.add_argument("--out", default="suite.json")
  ap.add_argument("--reps", type=int, default=3)
  ap.add_argument("--markdown", default=None,
                  help="also write the Markdown table here; a file holding the markers "
                       "of benchmarks/report.py (such as benchmarks/RESULTS.md) gets the "
                       "table between them")
  ap.add_argument("--fastkmeans-child", default=None, help=argparse.SUPPRESS)
  args = ap.parse_args()
  if args.fastkmeans_child:
    _fastkmeans_child(args.fastkmeans_child)
    return
  meta = _timing.versions()
  meta["ceilings"] = ceilings = _timing.measure_ceilings()
  meta["date"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
  print(json.dumps(meta), flush=True)
  groups = {"single": SINGLE, "batched": BATCHED, "float32": FLOAT32}
  chosen = groups if args.group == "all" else {args.group: groups[args.group]}
  out = {"meta": meta, "rows": []}
  for gname, shapes in chosen.items():
    if args.rows:
      shapes = [shapes[int(i)] for i in args.rows.split(",")]
    dtypes = ["float32"] if gname == "float32" else args.dtypes.split(",")
    for (b, n, k, d) in shapes:
      for dt in dtypes:
        t0 = time.time()
        try:
          rec = row(b, n, k, d, dt, ceilings, skip_xla=(k >= 65536), reps=args.reps)
        except Exception as e:  # noqa: BLE001
          rec = dict(B=b, N=n, K=k, D=d, dtype=dt, error=repr(e)[:400])
        rec["group"] = gname
        rec["row_seconds"] = time.time() - t0
        out["rows"].append(rec)
        print(json.dumps(rec), flush=True)
        with open(args.out, "w") as fh:
          json.dump(out, fh, indent=1)
  if args.markdown:
    from benchmarks import report
    report.write_markdown(args.markdown, [(args.out, out)], section=args.group)


if __name__ == "__main__":
  main()
