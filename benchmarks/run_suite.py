"""The performance grid (GPU): ms per Lloyd iteration, side by side.

    python benchmarks/run_suite.py --group all --markdown suite.md
    python benchmarks/run_suite.py --smoke      # tiny rows on any backend (checks the script)

writes the JSON (default name ``grid-<group>_<card>_<date>.json``) after every
row and, at the end, the Markdown table (``benchmarks/report.py`` makes the
same table from any saved JSON).

For every row the same data and the same initial centroids (the first K points
of each member) go to every implementation; iterations are fixed (``tol=0``,
no early stop; each run's ``n_iter`` is checked) and the time per iteration is
the marginal iteration of :func:`benchmarks.harness.marginal_ms`, so set-up,
seeding and the final assignment cancel out. Each timing is the median of
several runs after a warm-up.

Implementations: this library's default (``impl=None``: the Pallas kernels on
GPU), its XLA path, the official flash-kmeans ``batch_kmeans_Euclid`` and, for
B=1, fast_pytorch_kmeans and fastkmeans, when importable (a failure is
recorded in the row, never fatal).
"""

from __future__ import annotations

import argparse
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

F16_OPS = "F16_F16_F32"  # float32 points on float16 operands (TF32's 10-bit mantissa)
# For the time cap only: a row's other timings against the default's
# iterations (XLA up to ~8x slower, RESULTS.md; the official ~2x; the
# assignment alone ~17 calls of about one iteration each).
XLA_FACTOR, OFFICIAL_FACTOR, ASSIGN_CALLS = 8, 2, 17


def ours(x, c, k, impl, precision=None):
  return harness.lloyd_runner(x, c, k, impl=impl, precision=precision, check_finite=False)


def memory_of(x, c, k, impl, iters):
  """Device bytes of one compiled call (arguments + outputs + temporaries)."""
  m = harness.compiled_bytes(lambda x, c: harness.lloyd_call(
      x, c, k, iters, impl=impl, check_finite=False), x, c)
  return m["argument_bytes"] + m["output_bytes"] + m["temp_bytes"]


def assign_ms(x, c, precision=None):
  """The assignment alone (the Pallas kernel on GPU), vmapped over the batch."""
  impl = harness.kernel_impl()
  f = jax.jit(jax.vmap(lambda x, c: fk.assign(x, c, impl=impl, precision=precision)))
  return harness.median_ms(f, x, c, reps=5, inner=3)


def official(x_t, c_t, k):
  import torch
  from flash_kmeans import batch_kmeans_Euclid

  def run(iters):
    _, _, n = batch_kmeans_Euclid(x_t, k, max_iters=iters, tol=0.0, init_centroids=c_t.clone())
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
    FastKMeans(niter=iters, **kwargs).train(x_np)
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


def fastkmeans_child(spec: str) -> None:
  n, k, d, dtype_name, t1, t2, reps = spec.split(",")
  n, k, d, t1, t2, reps = map(int, (n, k, d, t1, t2, reps))
  x = harness.host_normal(n, d, np.float32, seed=1).astype(dtype_name)
  try:
    out = {"fastkmeans_ms": harness.marginal_ms(fastkmeans_runner(x, k), t1, t2, reps)}
  except Exception as e:  # noqa: BLE001
    out = {"fastkmeans_error": repr(e)[:300]}
  print(json.dumps(out), flush=True)


def row_estimate_s(b, n, k, d, dtype_name, reps):
  """Rough seconds a row takes (all implementations), for ``--cap-s``."""
  t1, t2 = harness.grid_iters(b, n, k, d)
  iters = t2 + (reps + 1) * (t1 + t2)
  total = iters * (1 + XLA_FACTOR + OFFICIAL_FACTOR) + ASSIGN_CALLS
  if dtype_name == "float32":
    total += iters + ASSIGN_CALLS
  return harness.estimated_s(2.0 * b * n * k * d * total, dtype_name)


def others(rec, x, k, dtype_name, t1, t2, reps):
  """The official flash-kmeans and, for B=1, the other PyTorch libraries."""
  import torch
  b, n, d = x.shape
  tdt = {"float16": torch.float16, "bfloat16": torch.bfloat16,
         "float32": torch.float32}[dtype_name]
  xt = torch.from_dlpack(x).to(tdt)
  ct = xt[:, :k, :].contiguous()
  torch.cuda.reset_peak_memory_stats()
  base = torch.cuda.memory_allocated()
  rec["official_ms"] = harness.marginal_ms(official(xt, ct, k), t1, t2, reps)
  rec["official_mem_bytes"] = torch.cuda.max_memory_allocated() - base + xt.nbytes
  if b == 1 and k * n <= (1 << 31):
    try:
      rec["fast_pytorch_ms"] = harness.marginal_ms(fast_pytorch(xt, ct, k), t1, t2, reps)
    except Exception as e:  # noqa: BLE001
      rec["fast_pytorch_error"] = repr(e)[:200]
  if b == 1 and dtype_name in ("float16", "float32") and k * n <= (1 << 31):
    rec.update(fastkmeans_in_child(n, k, d, dtype_name, t1, t2, reps))  # no NumPy bf16
  del xt, ct
  torch.cuda.empty_cache()


def row(b, n, k, d, dtype_name, ceilings, skip_xla=False, reps=3):
  dtype = jnp.dtype(dtype_name)
  x, c = harness.grid_problem(b, n, k, d, dtype)
  t1, t2 = harness.grid_iters(b, n, k, d)
  rec = dict(B=b, N=n, K=k, D=d, dtype=dtype_name, iters=(t1, t2))
  flops = 2.0 * b * n * k * d
  # Floor: the matmul at the measured rate, or one read of x plus the labels
  # written, at the measured copy bandwidth (an iteration can do no less).
  floor_bytes = b * n * d * dtype.itemsize + 4 * b * n
  rec["floor_ms"] = max(flops / (ceilings["bf16_matmul_tflops"] * 1e9),
                        floor_bytes / (ceilings["copy_gbs"] * 1e6))
  t0 = time.perf_counter()
  ours(x, c, k, None)(t2)  # first call: compile + run
  rec["ours_first_call_s"] = time.perf_counter() - t0
  rec["ours_ms"] = harness.marginal_ms(ours(x, c, k, None), t1, t2, reps)
  rec["ours_mem_bytes"] = memory_of(x, c, k, None, t2)
  rec["ours_assign_ms"] = assign_ms(x, c)
  rec["ours_assign_tflops"] = flops / rec["ours_assign_ms"] / 1e9
  if dtype_name == "float32":
    rec["ours_f16ops_ms"] = harness.marginal_ms(ours(x, c, k, None, F16_OPS), t1, t2, reps)
    rec["ours_f16ops_assign_ms"] = assign_ms(x, c, F16_OPS)
  if not skip_xla:
    try:
      rec["xla_ms"] = harness.marginal_ms(ours(x, c, k, "xla"), t1, t2, reps)
      rec["xla_mem_bytes"] = memory_of(x, c, k, "xla", t2)
    except Exception as e:  # noqa: BLE001
      rec["xla_error"] = repr(e)[:200]
  try:
    others(rec, x, k, dtype_name, t1, t2, reps)
  except Exception as e:  # noqa: BLE001
    rec["official_error"] = repr(e)[:300]
  if "official_ms" in rec:
    rec["official_over_ours"] = rec["official_ms"] / rec["ours_ms"]
  if "official_ms" in rec and "ours_f16ops_ms" in rec:
    rec["official_over_ours_f16ops"] = rec["official_ms"] / rec["ours_f16ops_ms"]
  if "xla_ms" in rec:
    rec["xla_over_ours"] = rec["xla_ms"] / rec["ours_ms"]
  return rec


def main():
  ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  ap.add_argument("--group", choices=["single", "batched", "float32", "all"], default="all")
  ap.add_argument("--dtypes", default="float16,bfloat16",
                  help="dtypes of the single and batched groups (float32 runs float32)")
  ap.add_argument("--rows", default=None, help="comma list of row indices within the group")
  ap.add_argument("--out", default=None, help="default: grid-<group>_<card>_<date>.json")
  ap.add_argument("--reps", type=int, default=3)
  ap.add_argument("--cap-s", type=float, default=None,
                  help="skip a row whose estimated time (from its FLOPs) exceeds this")
  ap.add_argument("--smoke", action="store_true",
                  help="tiny rows and quick ceilings, to check the script on any backend")
  ap.add_argument("--markdown", default=None,
                  help="also write the Markdown table here; a file holding the markers "
                       "of benchmarks/report.py (such as benchmarks/RESULTS.md) gets the "
                       "table between them")
  ap.add_argument("--fastkmeans-child", default=None, help=argparse.SUPPRESS)
  args = ap.parse_args()
  if args.fastkmeans_child:
    fastkmeans_child(args.fastkmeans_child)
    return
  grid = harness.SMOKE_GRID if args.smoke else harness.GRID
  chosen = list(grid) if args.group == "all" else [args.group]
  what = "grid" + ("-smoke" if args.smoke else "") + (
      "" if args.group == "all" else f"-{args.group}") + (
      f"-rows-{args.rows.replace(',', '-')}" if args.rows else "")
  out = harness.Results(args.out or harness.result_name(what), group=args.group)
  out.meta["ceilings"] = ceilings = harness.measure_ceilings(small=args.smoke)
  print(json.dumps(out.meta), flush=True)
  for gname in chosen:
    shapes = grid[gname]
    if args.rows:
      shapes = [shapes[int(i)] for i in args.rows.split(",")]
    dtypes = ["float32"] if gname == "float32" else args.dtypes.split(",")
    for (b, n, k, d) in shapes:
      for dt in dtypes:
        t0 = time.time()
        note = harness.over_cap(row_estimate_s(b, n, k, d, dt, args.reps), args.cap_s)
        if note:
          rec = dict(B=b, N=n, K=k, D=d, dtype=dt, error=note)
        else:
          try:
            rec = row(b, n, k, d, dt, ceilings, skip_xla=(k >= 65536), reps=args.reps)
          except Exception as e:  # noqa: BLE001
            rec = dict(B=b, N=n, K=k, D=d, dtype=dt, error=repr(e)[:400])
        rec["group"] = gname
        rec["row_seconds"] = time.time() - t0
        out.add(rec)
  print(f"wrote {out.path}", flush=True)
  if args.markdown:
    from benchmarks import report
    report.write_markdown(args.markdown, [(out.path, harness.load(out.path))],
                          section=args.group)


if __name__ == "__main__":
  main()
